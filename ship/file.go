package ship

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/metership/metership/internal/fsutil"
)

// FileUploader writes objects to a local directory in the same layout as in
// a bucket: records under Dir, dead letters under DeadLetterDir. It is the
// embedded default destination and the one-shot `ship` command's target.
// Directories are created on demand.
type FileUploader struct {
	Dir           string
	DeadLetterDir string
}

// NewFileUploader returns an uploader that writes record objects under dir
// and dead letters under dir without a trailing ingest/amberdata (see
// Destination.DeadLetterRoot).
func NewFileUploader(dir string) *FileUploader {
	dir = filepath.Clean(dir)
	return &FileUploader{Dir: dir, DeadLetterDir: fileDeadLetterRoot(dir)}
}

// Path returns the file obj is written to.
func (u *FileUploader) Path(obj *Object) string {
	root := u.Dir
	if obj.DeadLetter {
		root = u.DeadLetterDir
	}
	return filepath.Join(root, filepath.FromSlash(obj.Key))
}

// Put writes obj atomically: the body goes to a temporary file in the
// final directory, is fsynced, and is then hard-linked to its final name,
// which fails instead of replacing an existing file; the directory is
// fsynced after. An existing file with the same content counts as done;
// one with different content is a key collision (ErrKeyCollision). A crash leaves at most a
// stray ".*.tmp" file, never a partial object.
func (u *FileUploader) Put(ctx context.Context, obj *Object) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !filepath.IsLocal(filepath.FromSlash(obj.Key)) {
		return Permanent(fmt.Errorf("ship: key %q escapes the output directory", obj.Key))
	}
	final := u.Path(obj)
	dir := filepath.Dir(final)
	if err := mkdirAllSync(dir); err != nil {
		return fmt.Errorf("ship: create %s: %w", dir, err)
	}
	if _, err := os.Lstat(final); err == nil {
		return u.checkExisting(final, obj)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(final)+".*.tmp")
	if err != nil {
		return fmt.Errorf("ship: write %s: %w", final, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) //nolint:errcheck // best effort: gone after the rename
	_, err = tmp.Write(obj.Body)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ship: write %s: %w", final, err)
	}
	if err := publish(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return u.checkExisting(final, obj)
		}
		return fmt.Errorf("ship: write %s: %w", final, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("ship: write %s: %w", final, err)
	}
	return nil
}

// checkExisting is called when obj's file exists already: nil when it
// holds obj's content (an earlier attempt wrote it), a *CollisionError when
// it holds another object's.
func (u *FileUploader) checkExisting(path string, obj *Object) error {
	body, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("ship: read existing %s: %w", path, err)
	}
	if bytes.Equal(body, obj.Body) {
		return nil
	}
	reason, err := sameObject(obj, "", "", func() ([]byte, error) { return body, nil })
	if err != nil {
		return err
	}
	if reason != "" {
		return &CollisionError{Key: path, Reason: reason}
	}
	return nil
}

// publish gives tmp the name final without ever replacing an existing
// final: a hard link where the file system has them, else a rename after
// an existence check (which two concurrent writers of the same key could
// race; their contents are equal, so either result is right).
func publish(tmp, final string) error {
	err := os.Link(tmp, final)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	if _, serr := os.Lstat(final); serr == nil {
		return fs.ErrExist
	}
	return os.Rename(tmp, final)
}

// mkdirAllSync is os.MkdirAll that fsyncs the parent of every directory it
// creates, so the new directory entries survive a crash.
func mkdirAllSync(dir string) error {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error { return fsutil.SyncDir(dir) }
