package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	fb "github.com/metership/metership/fluentbit/fbtest"
)

// mountTmpfs mounts a tmpfs of size at a new directory (a real full disk)
// and unmounts it at cleanup. It needs root.
func mountTmpfs(t *testing.T, size string) string {
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

// fillDisk writes zeros to path until the filesystem is full.
func fillDisk(t *testing.T, path string) {
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

// TestHarnessDiskFull: with buffer_dir on a full disk (a 1 MiB tmpfs) a
// flush is FLB_RETRY, never FLB_OK for records that are not durable nor
// FLB_ERROR; once space returns the chunk sent again is accepted and
// every record reaches the output exactly once.
func TestHarnessDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	h := startHarness(t)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	root := t.TempDir()
	h.expect("init a rc=1", "init a %s", h.props("a.props", fileProps(t, root, map[string]string{
		"buffer_dir":          filepath.Join(mnt, "buf"),
		"buffer_segment_size": "64KiB",
	})))
	h.expect("flush a rc=1", "flush a usage %s", h.file("first.chunk", fb.MeterChunk(0, 100)))
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler)
	second := h.file("second.chunk", fb.MeterChunk(100, 2000))
	for range 3 {
		h.expect("flush a rc=2", "flush a usage %s", second)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	flushUntilOK(t, h, "a", "usage", second)
	h.expect("exit a rc=1", "exit a")
	fb.AssertCustomers(t, fb.ParseRecords(t, fb.ReadDir(t, root)), 0, 2100)
}
