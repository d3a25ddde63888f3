package s3server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	// modulePath identifies the repository root's go.mod.
	modulePath = "github.com/metership/metership"
	// versitygwModule is the pinned module in tools/go.mod.
	versitygwModule = "github.com/versity/versitygw"
	versitygwPkg    = versitygwModule + "/cmd/versitygw"
)

// Binary returns the path of the versitygw binary pinned by tools/go.mod,
// building it on first use into the user cache directory
// (<UserCacheDir>/metership/versitygw-<version>). A file lock keeps parallel
// test binaries from building it twice. A failed build fails the test with
// the build output; it is never skipped.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := binary()
	if err != nil {
		t.Fatalf("s3server: %v", err)
	}
	return path
}

func binary() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	toolsDir := filepath.Join(root, "tools")
	modfile := filepath.Join(toolsDir, "go.mod")
	version, err := pinnedVersion(modfile)
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("user cache dir: %w", err)
	}
	cacheDir := filepath.Join(cache, "metership")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create cache dir: %w", err)
	}
	bin := filepath.Join(cacheDir, "versitygw-"+version)
	if isExecutable(bin) {
		return bin, nil
	}
	unlock, err := lockFile(bin + ".lock")
	if err != nil {
		return "", fmt.Errorf("lock %s.lock: %w", bin, err)
	}
	defer unlock()
	if isExecutable(bin) {
		return bin, nil
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if !isExecutable(goTool) {
			return "", fmt.Errorf("find the go command to build versitygw: %w", err)
		}
	}
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	cmd := exec.Command(goTool, "build", "-modfile="+modfile, "-o", tmp, versitygwPkg)
	cmd.Dir = toolsDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build versitygw %s (%s in %s): %w\n%s", version, strings.Join(cmd.Args, " "), toolsDir, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("install versitygw: %w", err)
	}
	return bin, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// repoRoot walks up from the working directory (a package directory under
// go test) to the go.mod of the metership module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && moduleLine(data) == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func moduleLine(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// pinnedVersion returns the versitygw version required by tools/go.mod.
func pinnedVersion(modfile string) (string, error) {
	data, err := os.ReadFile(modfile)
	if err != nil {
		return "", fmt.Errorf("read tools module: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[0] == "require" {
			f = f[1:]
		}
		if len(f) >= 2 && f[0] == versitygwModule && strings.HasPrefix(f[1], "v") {
			return f[1], nil
		}
	}
	return "", errors.New(modfile + " does not require " + versitygwModule)
}
