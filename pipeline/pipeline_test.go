package pipeline

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/record"
	"github.com/metership/metership/ship"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T, out string) conf.Config {
	t.Helper()
	cfg, err := conf.Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Buffer.Dir = filepath.Join(t.TempDir(), "buf")
	cfg.Buffer.FlushInterval = conf.Duration(50 * time.Millisecond)
	cfg.Output.URL = "file://" + out
	if err := cfg.Check(false); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// readObjects returns every object's decompressed body under root, by path
// relative to root.
func readObjects(t *testing.T, root string) map[string]string {
	t.Helper()
	got := map[string]string{}
	_ = filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		if strings.HasSuffix(path, ".tmp") {
			return nil // an object being written (temp, then rename)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, path)
		got[rel] = string(body)
		return nil
	})
	return got
}

func TestIngestRunDrain(t *testing.T) {
	root := t.TempDir()
	cfg := testConfig(t, filepath.Join(root, "ingest", "amberdata"))
	ctx := context.Background()
	p, err := newTestPipeline(t, cfg, Options{}, testParts{})
	if err != nil {
		t.Fatal(err)
	}
	in, err := p.NewIngester("app")
	if err != nil {
		t.Fatal(err)
	}
	in.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":"a"}`), record.Origin{ID: "s"}, "src")
	in.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":2,"meterTimeInMillis":1654646400000,"uniqueId":"b"}`), record.Origin{ID: "s", Offset: 1}, "src")
	in.Add([]byte(`nope`), record.Origin{ID: "s", Offset: 2}, "src")
	in.SetCheckpoint("s", 3, []byte("meta"))
	if a, r := in.Counts(); a != 2 || r != 1 {
		t.Fatalf("counts %d %d", a, r)
	}
	if err := in.Commit(); err != nil {
		t.Fatal(err)
	}
	cps := p.Buffer().Checkpoints()
	if len(cps) != 1 || cps[0].Offset != 3 {
		t.Fatalf("checkpoint not durable with the batch: %+v", cps)
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	objs := readObjects(t, root)
	var days, dead []string
	for k, body := range objs {
		switch {
		case strings.HasPrefix(k, "ingest/amberdata/06-07-2022/"):
			days = append(days, body)
		case strings.HasPrefix(k, "ingest/amberdata/06-08-2022/"):
			days = append(days, body)
		case strings.HasPrefix(k, "failed-requests/"):
			dead = append(dead, body)
		default:
			t.Fatalf("unexpected object %s", k)
		}
	}
	if len(days) != 2 || len(dead) != 1 {
		t.Fatalf("objects: %v", objs)
	}
	if !strings.Contains(dead[0], `"line":"nope"`) || !strings.Contains(dead[0], `"reason":"not a JSON object"`) {
		t.Fatalf("dead letter %s", dead[0])
	}
	st := p.Stats()
	if st.RecordsAccepted.Load() != 2 || st.RecordsRejected.Load() != 1 || st.RecordsShipped.Load() != 2 || st.DeadLetters.Load() != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// failingUploader is a real file uploader rooted below a regular file, so
// every Put fails (ENOTDIR) the way a broken destination does.
func failingUploader(t *testing.T) ship.Uploader {
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return ship.NewFileUploader(filepath.Join(blocker, "out"))
}

func TestReadyTurnsFalseWhileUploadsFail(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	var offset atomic.Int64 // the test moves the pipeline's clock forward
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	up := failingUploader(t)
	p, err := newTestPipeline(t, cfg, Options{UnhealthyAfter: time.Minute, Now: clock}, testParts{Uploader: up})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := p.NewIngester("")
	in.Add([]byte(`{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000}`), record.Origin{ID: "s"}, "src")
	if err := in.Commit(); err != nil {
		t.Fatal(err)
	}
	if ok, _ := p.Ready(); !ok {
		t.Fatal("not ready before any upload")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	if err := p.Buffer().Seal(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.failingSince.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("upload failure never noticed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ok, _ := p.Ready(); !ok {
		t.Fatal("unready before unready_after passed")
	}
	offset.Store(int64(2 * time.Minute))
	if ok, why := p.Ready(); ok || !strings.Contains(why, "uploads failing for") {
		t.Fatalf("ready = %v (%s) after uploads failed for 2m", ok, why)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := p.Buffer().Stats(); st.SegmentsSealed != 1 {
		t.Fatalf("the unshipped segment must stay in the buffer: %+v", st)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// A batch whose fsync failed is cut off by the buffer's recovery in place
// (ErrNotDurable): CommitWait writes it again, so a one-shot stream still
// ends with every line durable, once.
func TestCommitWaitRewritesBatchCutByDiskError(t *testing.T) {
	root := t.TempDir()
	cfg := testConfig(t, filepath.Join(root, "out"))
	var mu sync.Mutex
	failSyncs := 1
	p, err := newTestPipeline(t, cfg, Options{}, testParts{Faults: func(op buffer.FileOp, _ string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == buffer.OpSync && failSyncs > 0 {
			failSyncs--
			return syscall.EIO
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	var lines strings.Builder
	for i := range 100 {
		fmt.Fprintf(&lines, `{"customerId":"c","meterApiName":"m","meterValue":1,"meterTimeInMillis":1654560000000,"uniqueId":"u%d"}`+"\n", i)
	}
	res, err := p.IngestStream(context.Background(), Stream{R: strings.NewReader(lines.String()), Source: "s", Name: "s", Checkpoint: true})
	if err != nil {
		t.Fatalf("IngestStream after one failed fsync: %v", err)
	}
	if res.Accepted != 100 {
		t.Fatalf("accepted %d records, want 100", res.Accepted)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, body := range readObjects(t, root) {
		for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
			var r struct{ UniqueID string }
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatal(err)
			}
			seen[r.UniqueID]++
		}
	}
	for i := range 100 {
		if n := seen[fmt.Sprintf("u%d", i)]; n != 1 {
			t.Fatalf("record u%d shipped %d times", i, n)
		}
	}
}
