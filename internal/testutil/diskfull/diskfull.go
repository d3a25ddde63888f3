// Package diskfull gives tests a real full disk: a small tmpfs mounted
// for the test (the tests run as root) and a way to fill it, so ENOSPC
// comes from the kernel rather than from a fake file layer.
package diskfull

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of size (e.g. "1m", "256k") at a new directory and
// unmounts it at cleanup. Cleanups run last-registered first: call Mount
// before starting anything that writes there, so it is gone before the
// unmount. Without root the test is skipped, saying why.
func Mount(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a real ENOSPC); run the tests as root")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// Fill writes zeros to a new file at path until its filesystem is full,
// the last partial page included; removing the file frees the space.
func Fill(t testing.TB, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zeros := make([]byte, 64<<10)
	for {
		if _, err := f.Write(zeros); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			for {
				if _, err := f.Write(zeros[:512]); err != nil {
					return
				}
			}
		}
	}
}
