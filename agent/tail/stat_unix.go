//go:build unix

package tail

import (
	"io/fs"
	"syscall"
)

// statKey returns a file's device and inode and its link count (0 once the
// file has been deleted while still open). The conversions are needed
// because Stat_t's field widths differ across Unix systems.
func statKey(fi fs.FileInfo) (key fileKey, nlink uint64, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileKey{}, 0, false
	}
	return fileKey{dev: uint64(st.Dev), ino: uint64(st.Ino)}, uint64(st.Nlink), true
}

// inodesSupported says statKey works on this system.
const inodesSupported = true
