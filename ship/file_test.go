package ship

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFileUploaderLayout(t *testing.T) {
	root := t.TempDir()
	dest, err := ParseURL("file://" + filepath.ToSlash(root) + "/ingest/amberdata")
	if err != nil {
		t.Fatal(err)
	}
	up, err := dest.NewUploader(context.Background(), S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	seg := segment{rec(ts, meter(1, ts)), dead(ts, `{"reason":"bad"}`)}
	objs, err := mustEncoder(t, EncoderOptions{}).Encode("agent", 1, seg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range objs {
		if err := up.Put(context.Background(), &objs[i]); err != nil {
			t.Fatalf("Put %s: %v", objs[i].Key, err)
		}
	}
	for _, o := range objs {
		base := filepath.Join(root, "ingest", "amberdata")
		if o.DeadLetter {
			base = root
		}
		path := filepath.Join(base, filepath.FromSlash(o.Key))
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("object %s not at %s: %v", o.Key, path, err)
		}
		if !bytes.Equal(got, o.Body) {
			t.Fatalf("%s holds %d bytes, want the %d uploaded", path, len(got), len(o.Body))
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", path, fi.Mode().Perm())
		}
	}
	var files []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	if len(files) != 2 || !strings.HasPrefix(files[0], "failed-requests/06-07-2022/") || !strings.HasPrefix(files[1], "ingest/amberdata/06-07-2022/") {
		t.Fatalf("files = %q, want one dead-letter and one record object and nothing else", files)
	}
}

func TestFileUploaderExistingKeyIsNoop(t *testing.T) {
	dir := t.TempDir()
	up := NewFileUploader(dir)
	first := &Object{Key: "a/b/c.gz", Body: []byte("first")}
	if err := up.Put(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	again := &Object{Key: "a/b/c.gz", Body: []byte("first")}
	if err := up.Put(context.Background(), again); err != nil {
		t.Fatalf("Put of an existing object: %v", err)
	}
	second := &Object{Key: "a/b/c.gz", Body: []byte("second, longer body")}
	if err := up.Put(context.Background(), second); !errors.Is(err, ErrKeyCollision) {
		t.Fatalf("Put of another object under an existing key = %v, want a collision", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "a", "b", "c.gz")); string(got) != "first" {
		t.Fatalf("existing object replaced: now %q", got)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "a", "b"))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the object (no temp files)", len(entries))
	}
	moved := *second
	if err := (Collisions{Next: up}).Put(context.Background(), &moved); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(up.Path(&moved)); moved.Key == second.Key || string(got) != "second, longer body" {
		t.Fatalf("moved to %q holding %q", moved.Key, got)
	}
}

// TestFileUploaderLinkRace covers the window between the existence check
// and the link: the final name appears after the temp file is written.
func TestFileUploaderLinkRace(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	final := filepath.Join(dir, "final")
	os.WriteFile(tmp, []byte("new"), 0o644)
	os.WriteFile(final, []byte("old"), 0o644)
	if err := publish(tmp, final); !errors.Is(err, os.ErrExist) {
		t.Fatalf("publish over an existing file = %v, want ErrExist", err)
	}
	if got, _ := os.ReadFile(final); string(got) != "old" {
		t.Fatalf("publish replaced the existing file with %q", got)
	}
}

func TestFileUploaderRejectsEscapingKeys(t *testing.T) {
	up := NewFileUploader(t.TempDir())
	for _, key := range []string{"../x.gz", "a/../../x.gz", "/abs.gz", ""} {
		err := up.Put(context.Background(), &Object{Key: key, Body: []byte("x")})
		if err == nil || !IsPermanent(err) {
			t.Errorf("Put(%q) = %v, want a permanent error", key, err)
		}
	}
}

func TestFileUploaderErrors(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, []byte("x"), 0o644)
	up := NewFileUploader(blocker)
	err := up.Put(context.Background(), &Object{Key: "a.gz", Body: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Put under a regular file = %v, want a not-a-directory error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := NewFileUploader(dir).Put(ctx, &Object{Key: "a.gz"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context = %v", err)
	}
}

func TestFileDeadLetterUploader(t *testing.T) {
	root := t.TempDir()
	dest, err := ParseURL("file://" + filepath.ToSlash(root) + "/dlq/ingest/amberdata")
	if err != nil {
		t.Fatal(err)
	}
	up, err := dest.NewDeadLetterUploader(context.Background(), S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	obj := &Object{Key: "failed-requests/06-07-2022/u.gz", Body: []byte("dl"), DeadLetter: true}
	if err := up.Put(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "dlq", "ingest", "amberdata", "failed-requests", "06-07-2022", "u.gz")
	if got, err := os.ReadFile(path); err != nil || string(got) != "dl" {
		t.Fatalf("dead letter not at %s: %q %v", path, got, err)
	}
}
