package main

import (
	"os"
	"path/filepath"
	"testing"

	fb "github.com/metership/metership/fluentbit/fbtest"
	"github.com/metership/metership/internal/testutil/diskfull"
)

// TestHarnessDiskFull: with buffer_dir on a full disk (a 1 MiB tmpfs) a
// flush is FLB_RETRY, never FLB_OK for records that are not durable nor
// FLB_ERROR; once space returns the chunk sent again is accepted and
// every record reaches the output exactly once.
func TestHarnessDiskFull(t *testing.T) {
	mnt := diskfull.Mount(t, "1m")
	h := startHarness(t)
	h.expect("register rc=0 type=2 proxy=11 flags=0 name=metership", "register")
	root := t.TempDir()
	h.expect("init a rc=1", "init a %s", h.props("a.props", fileProps(t, root, map[string]string{
		"buffer_dir":          filepath.Join(mnt, "buf"),
		"buffer_segment_size": "64KiB",
	})))
	h.expect("flush a rc=1", "flush a usage %s", h.file("first.chunk", fb.MeterChunk(0, 100)))
	filler := filepath.Join(mnt, "filler")
	diskfull.Fill(t, filler)
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
