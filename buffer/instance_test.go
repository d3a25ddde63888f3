package buffer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The instance id is unique to the directory: generated once, kept across
// reopens, not replaced by a configured agent id, and different in two
// directories that share one agent id.
func TestInstanceIDPerDirectory(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openT(t, Options{Dir: dirA, AgentID: "shared"})
	b := openT(t, Options{Dir: dirB, AgentID: "shared"})
	idA := a.InstanceID()
	if idA == "" || idA == b.InstanceID() {
		t.Fatalf("instance ids %q and %q: want distinct and non-empty", idA, b.InstanceID())
	}
	if a.AgentID() != "shared" {
		t.Fatalf("AgentID = %q", a.AgentID())
	}
	mustWrite(t, a, makeBatch(1, 3, "t"))
	if err := a.Seal(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a2 := openT(t, Options{Dir: dirA, AgentID: "another"})
	if a2.InstanceID() != idA {
		t.Fatalf("instance id changed on reopen: %q, was %q", a2.InstanceID(), idA)
	}
	if got := a2.ObjectKeyID(1); got != idA {
		t.Fatalf("ObjectKeyID(1) = %q, want the instance id %q", got, idA)
	}
}

// A directory written before instance ids existed gets one on open, and
// the segments already in it keep the keys they had (agent id), so an
// upgrade never re-keys a segment that may already be uploaded.
func TestInstanceIDUpgrade(t *testing.T) {
	dir := t.TempDir()
	b := openT(t, Options{Dir: dir, AgentID: "agent-1"})
	for n := 1; n <= 2; n++ {
		mustWrite(t, b, makeBatch(n, 2, "t"))
		if err := b.Seal(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite meta as the previous version did: no instance fields.
	metaPath := filepath.Join(dir, metaName)
	data, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var m meta
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(map[string]any{"version": 1, "agent_id": m.AgentID, "next_seq": m.NextSeq})
	if err := os.WriteFile(metaPath, old, 0o640); err != nil {
		t.Fatal(err)
	}

	b = openT(t, Options{Dir: dir, AgentID: "agent-1"})
	id := b.InstanceID()
	if id == "" {
		t.Fatal("no instance id after upgrade")
	}
	for seq := uint64(1); seq <= 2; seq++ {
		if got := b.ObjectKeyID(seq); got != "agent-1" {
			t.Errorf("ObjectKeyID(%d) = %q: a segment from before the upgrade must keep its agent-id key", seq, got)
		}
	}
	mustWrite(t, b, makeBatch(3, 2, "t"))
	if err := b.Seal(); err != nil {
		t.Fatal(err)
	}
	if got := b.ObjectKeyID(3); got != id {
		t.Errorf("ObjectKeyID(3) = %q, want the instance id %q", got, id)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openT(t, Options{Dir: dir})
	if b.InstanceID() != id || b.ObjectKeyID(2) != "agent-1" || b.ObjectKeyID(3) != id {
		t.Fatalf("after reopen: instance %q keys(2) %q keys(3) %q", b.InstanceID(), b.ObjectKeyID(2), b.ObjectKeyID(3))
	}
}
