// Package fsutil holds the durable-file primitives the buffer, the
// metering ledger and the file:// output share, so the one careful way of
// replacing a file exists once.
package fsutil

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
)

// TmpSuffix marks a file being written; WriteFileAtomic leaves one behind
// only if it crashes, and the next write replaces it.
const TmpSuffix = ".tmp"

// SyncDir fsyncs a directory so renames, creations and removals in it are
// durable. Filesystems that cannot sync a directory (EINVAL) are accepted.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, os.ErrInvalid) {
		return nil
	}
	return err
}

// WriteFileAtomic replaces dir/name with data: temp file, fsync, rename,
// fsync dir. A crash leaves either the old or the new content, never a
// mix. beforeRename, if set, runs between the fsync and the rename (tests
// use it to crash there).
func WriteFileAtomic(dir, name string, data []byte, perm os.FileMode, beforeRename func()) error {
	return WriteAtomicFrom(dir, name, bytes.NewReader(data), perm, beforeRename)
}

// WriteAtomicFrom is WriteFileAtomic with the content read from r (a
// copy of a large file need not be held in memory).
func WriteAtomicFrom(dir, name string, r io.Reader, perm os.FileMode, beforeRename func()) error {
	final := filepath.Join(dir, name)
	tmp := final + TmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && beforeRename != nil {
		beforeRename()
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err == nil {
		err = SyncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
