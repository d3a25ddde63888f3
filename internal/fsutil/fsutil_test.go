package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFileAtomic(dir, "f", []byte("one"), 0o640, nil); err != nil {
		t.Fatal(err)
	}
	var sawOld bool
	err := WriteFileAtomic(dir, "f", []byte("two"), 0o640, func() {
		// Before the rename the old content is still what readers see.
		b, _ := os.ReadFile(filepath.Join(dir, "f"))
		sawOld = string(b) == "one"
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil || string(b) != "two" || !sawOld {
		t.Fatalf("content %q, %v, old seen before rename: %v", b, err, sawOld)
	}
	if _, err := os.Stat(filepath.Join(dir, "f"+TmpSuffix)); !os.IsNotExist(err) {
		t.Fatalf("temp file left behind: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "f")); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", st.Mode())
	}
}

func TestWriteFileAtomicMissingDir(t *testing.T) {
	if err := WriteFileAtomic(filepath.Join(t.TempDir(), "nope"), "f", nil, 0o600, nil); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("sync of a missing directory succeeded")
	}
}
