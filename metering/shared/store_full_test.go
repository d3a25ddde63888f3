package shared

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFileStoreCreateOnFullDisk: a Create whose write fails (a real ENOSPC
// on a small tmpfs) reports the error and leaves no object under the key;
// a truncated file linked into place would be read as a partial or claim.
func TestFileStoreCreateOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a real ENOSPC); run the tests as root")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
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
