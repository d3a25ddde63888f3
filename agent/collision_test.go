package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/internal/testutil/s3server"
)

// shipInto runs `ship` of input with its own buffer dir into srv and
// fails unless it reports success.
func shipInto(t *testing.T, srv *s3server.Server, bufDir, input string) (stdout, stderr string) {
	t.Helper()
	cfg := s3Config(t, srv, "", bufDir, "")
	stdout, stderr, code := runAgent(t, srv, nil, "ship", "-c", cfg, input)
	if code != 0 {
		t.Fatalf("ship %s exit %d\nstdout:\n%s\nstderr:\n%s", input, code, stdout, stderr)
	}
	mustContain(t, stdout, "status:             complete")
	return stdout, stderr
}

// Two buffers configured with one agent.id (a Deployment's fixed id with
// replicas > 1) ship different records into one bucket: every record
// arrives once. Keys derive from each buffer directory's own instance id,
// so the two never even collide.
func TestTwoBuffersOneAgentID(t *testing.T) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	start := time.Date(2022, 6, 6, 20, 0, 0, 0, time.UTC)
	inA, wantA := genRecords(t, mkdir(t, dir, "a"), 20, start, 2*time.Hour)
	inB, wantB := genRecords(t, mkdir(t, dir, "b"), 20, start.Add(time.Minute), 2*time.Hour)

	shipInto(t, srv, filepath.Join(dir, "buf-a"), inA)
	_, stderr := shipInto(t, srv, filepath.Join(dir, "buf-b"), inB)
	if strings.Contains(stderr, "fresh key") {
		t.Errorf("distinct buffers collided:\n%s", stderr)
	}
	for k, v := range wantB {
		wantA[k] += v
	}
	assertAllOnce(t, srv, wantA)
}

// A copied buffer directory shares its instance id with the original, so
// both write the same keys: the second writer's 412 must be found to hold
// another object (a collision), logged, and its object written under a
// fresh key instead of being counted as done. Shipping the copy again
// after that writes nothing new.
func TestKeyCollisionWrittenUnderFreshKey(t *testing.T) {
	srv := s3server.Start(t)
	dir := t.TempDir()
	start := time.Date(2022, 6, 6, 20, 0, 0, 0, time.UTC)
	inA, wantA := genRecords(t, mkdir(t, dir, "a"), 20, start, 2*time.Hour)
	inB, wantB := genRecords(t, mkdir(t, dir, "b"), 20, start.Add(time.Minute), 2*time.Hour)

	// Create the buffer (meta with its ids) with an empty ship, then copy
	// it, as a cloned volume or an image with a baked-in buffer would.
	empty := filepath.Join(dir, "empty.ndjson")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bufA, bufB := filepath.Join(dir, "buf-a"), filepath.Join(dir, "buf-b")
	shipInto(t, srv, bufA, empty)
	if out, err := exec.Command("cp", "-a", bufA, bufB).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(filepath.Join(bufB, "LOCK"))

	shipInto(t, srv, bufA, inA)
	before := len(srv.ListObjects(t))
	_, stderr := shipInto(t, srv, bufB, inB)
	mustContain(t, stderr, "object key already holds a different object")
	for k, v := range wantB {
		wantA[k] += v
	}
	assertAllOnce(t, srv, wantA)
	if after := len(srv.ListObjects(t)); after != 2*before {
		t.Fatalf("%d objects after the second ship, want %d (each of the copy's objects under its own fresh key)", after, 2*before)
	}
}

func mkdir(t *testing.T, parent, name string) string {
	t.Helper()
	p := filepath.Join(parent, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
