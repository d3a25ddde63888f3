//go:build !unix

package tail

import "io/fs"

// statKey is unavailable without Unix inode numbers; New refuses to build a
// Tailer on such systems.
func statKey(fs.FileInfo) (key fileKey, nlink uint64, ok bool) {
	return fileKey{}, 0, false
}

// inodesSupported says statKey works on this system.
const inodesSupported = false
