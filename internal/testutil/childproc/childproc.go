// Package childproc holds what tests need to run metership (or a test
// harness) as a separate process: the binary built once, and a buffer
// that collects its output while exec's copying goroutines write to it.
package childproc

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// Output collects a child's stdout or stderr; Write and String may be
// called from different goroutines.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Output) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Output) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BuildAgent builds the metership CLI (the package main in pkgDir, e.g.
// "." from agent's tests or "../../agent" from a nested module's) into a
// new temporary directory, for a TestMain: remove dir when done. Build
// errors go to stderr.
func BuildAgent(pkgDir string) (bin, dir string, err error) {
	dir, err = os.MkdirTemp("", "metership-test-bin")
	if err != nil {
		return "", "", err
	}
	bin = filepath.Join(dir, "metership")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = pkgDir
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		_ = os.RemoveAll(dir)
		return "", "", err
	}
	return bin, dir, nil
}
