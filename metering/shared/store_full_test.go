package shared

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/metership/metership/internal/testutil/diskfull"
)

// TestFileStoreCreateOnFullDisk: a Create whose write fails (a real ENOSPC
// on a small tmpfs) reports the error and leaves no object under the key;
// a truncated file linked into place would be read as a partial or claim.
func TestFileStoreCreateOnFullDisk(t *testing.T) {
	dir := diskfull.Mount(t, "256k")
	st := &fileStore{root: dir}
	body := bytes.Repeat([]byte("x"), 1<<20) // four times the disk
	created, err := st.Create(context.Background(), "partials/a.json", body)
	if err == nil {
		t.Fatalf("Create of %d bytes on a 256 KiB disk: created=%v, no error", len(body), created)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Create error %v, want ENOSPC", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "partials", "a.json")); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("after the failed Create the key exists (stat: %v)", serr)
	}
}
