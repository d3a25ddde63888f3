//go:build !unix

package buffer

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir on platforms without flock opens dir/LOCK without locking it;
// metership runs on Linux, this only keeps the package building elsewhere.
func lockDir(dir string) (*os.File, error) {
	p := filepath.Join(dir, lockName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("buffer: open %s: %w", p, err)
	}
	return f, nil
}
