//go:build faultinject

package main

import (
	"os"
	"strings"
	"syscall"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/engine"
)

// withTestFaults makes fsyncs of the active buffer segment fail with EIO
// as the file named by METERSHIP_TEST_FSYNC_FAULTS says: "once" fails the
// next one (and empties the file), "always" fails every one. Test builds
// only (-tags faultinject): a failed fsync cannot be had for real.
func withTestFaults(opts engine.Options) engine.Options {
	path := os.Getenv("METERSHIP_TEST_FSYNC_FAULTS")
	if path == "" {
		return opts
	}
	opts.BufferFaults = func(op buffer.FileOp, name string) error {
		if op != buffer.OpSync || !strings.HasSuffix(name, ".open") {
			return nil
		}
		data, _ := os.ReadFile(path)
		switch strings.TrimSpace(string(data)) {
		case "once":
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				return err
			}
			return syscall.EIO
		case "always":
			return syscall.EIO
		}
		return nil
	}
	return opts
}
