package buffer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Crash test protocol: the parent re-executes this test binary running only
// TestCrashHelper, with the environment below. The child prints "ready"
// and each writer's first batch after Open, then "<writer> <batch>" after
// each Write that returned nil, and the parent SIGKILLs it at a random
// moment.
const (
	crashEnvDir     = "METERSHIP_CRASH_DIR"
	crashEnvUploads = "METERSHIP_CRASH_UPLOADS"
	crashEnvMode    = "METERSHIP_CRASH_MODE" // "plain" or "ack"
	crashWriters    = 2
	crashPerBatch   = 5
)

func crashRecord(w, n, i int) string { return fmt.Sprintf(`{"w":%d,"n":%d,"i":%d}`, w, n, i) }

// TestCrashHelper is the child process of TestCrashKill9; it does nothing
// in a normal test run.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("child process of TestCrashKill9")
	}
	if err := crashChild(dir, os.Getenv(crashEnvUploads), os.Getenv(crashEnvMode) == "ack"); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// crashChild appends numbered batches from crashWriters goroutines with
// SyncAlways, each resuming after its durable checkpoint. In ack mode it also
// seals often and "uploads" segments to uploads/<seq> (atomically, keyed by
// sequence like the real object keys) before acking them.
func crashChild(dir, uploads string, ack bool) error {
	b, err := Open(Options{Dir: dir, SegmentSize: 4 << 10, Sync: SyncAlways})
	if err != nil {
		return err
	}
	start := map[string]int{}
	for _, c := range b.Checkpoints() {
		start[c.Key] = int(c.Offset) + 1
	}
	// "ready" and the first batch of each writer: the parent checks that
	// the durable checkpoint neither went back nor skipped ahead.
	line := "ready"
	for w := range crashWriters {
		line += fmt.Sprintf(" %d", start[fmt.Sprintf("w%d", w)])
	}
	fmt.Println(line)
	errs := make(chan error, crashWriters+2)
	for w := range crashWriters {
		go func() {
			var batch Batch
			src := fmt.Sprintf("w%d", w)
			for n := start[src]; ; n++ {
				batch.Reset()
				batch.SetTag(src)
				for i := range crashPerBatch {
					batch.AddRecord(int64(n), []byte(crashRecord(w, n, i)))
				}
				batch.SetCheckpoint(src, int64(n), nil)
				if err := b.Write(&batch); err != nil {
					errs <- fmt.Errorf("write %s %d: %w", src, n, err)
					return
				}
				// os.Stdout is unbuffered: one write(2) per acknowledgement.
				fmt.Printf("%d %d\n", w, n)
			}
		}()
	}
	if ack {
		go func() {
			for {
				time.Sleep(3 * time.Millisecond)
				if err := b.Seal(); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			for {
				seg, err := b.Next(context.Background())
				if err != nil {
					errs <- err
					return
				}
				var body bytes.Buffer
				if err := seg.Frames(func(f Frame) error {
					body.Write(f.Data)
					body.WriteByte('\n')
					return nil
				}); err != nil {
					errs <- err
					return
				}
				if err := atomicWrite(uploads, strconv.FormatUint(seg.Seq, 10), body.Bytes()); err != nil {
					errs <- err
					return
				}
				if err := b.Ack(seg); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	select {
	case err := <-errs:
		return err
	case <-time.After(30 * time.Second): // the parent died without killing us
		return nil
	}
}

// TestCrashKill9 kills a writing process with SIGKILL at random moments,
// over several rounds that reopen the same directory, then checks that
// every acknowledged record is present exactly once and the checkpoints
// match what was acknowledged.
func TestCrashKill9(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "buffer")
	uploads := filepath.Join(root, "uploads")
	if err := os.Mkdir(uploads, 0o750); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	// known[w] is the highest batch of writer w known to be durable: printed
	// after Write returned, or below the start the child derived from the
	// buffer's checkpoints. A batch can be durable without having been
	// printed (killed between Write and Println), at most one per writer
	// and round.
	known := make([]int, crashWriters)
	for w := range known {
		known[w] = -1
	}
	totalAcked := 0
	const rounds = 10
	for round := range rounds {
		mode := "plain"
		if round%2 == 1 {
			mode = "ack"
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, crashEnvUploads+"="+uploads, crashEnvMode+"="+mode)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		acked := func(line string) {
			if rest, ok := strings.CutPrefix(line, "ready"); ok {
				starts := strings.Fields(rest)
				if len(starts) != crashWriters {
					t.Fatalf("round %d: bad line %q", round, line)
				}
				for w, s := range starts {
					n, err := strconv.Atoi(s)
					if err != nil {
						t.Fatalf("round %d: bad line %q", round, line)
					}
					if cp := n - 1; cp != known[w] && cp != known[w]+1 {
						t.Fatalf("round %d: writer %d resumes after checkpoint %d, but batch %d was the last known durable", round, w, cp, known[w])
					}
					known[w] = n - 1
				}
				return
			}
			var w, n int
			if _, err := fmt.Sscanf(line, "%d %d", &w, &n); err != nil || w < 0 || w >= crashWriters {
				t.Fatalf("round %d: bad line %q", round, line)
			}
			if n != known[w]+1 {
				t.Fatalf("round %d: writer %d acknowledged %d after %d", round, w, n, known[w])
			}
			known[w] = n
			totalAcked++
		}

		killAfter := time.Duration(5+rng.IntN(60)) * time.Millisecond
		if round%4 == 3 {
			killAfter = time.Duration(rng.IntN(3)) * time.Millisecond // maybe during recovery
		} else {
			select {
			case line, ok := <-lines:
				if !ok || !strings.HasPrefix(line, "ready") {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("round %d: child did not start: %q %s", round, line, stderr.String())
				}
				acked(line)
			case <-time.After(30 * time.Second):
				t.Fatalf("round %d: child never became ready", round)
			}
			if round == 0 {
				if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrLocked) {
					t.Fatalf("Open while another process holds the buffer = %v, want ErrLocked", err)
				}
			}
		}
		deadline := time.After(killAfter)
	run:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break run
				}
				acked(line)
			case <-deadline:
				break run
			}
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		for line := range lines { // printed before the kill
			acked(line)
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: child ended on its own (%v): %s", round, err, stderr.String())
		}
	}
	if totalAcked == 0 {
		t.Fatal("no batch was acknowledged in any round")
	}
	t.Logf("%d batches acknowledged over %d rounds; last known durable %v", totalAcked, rounds, known)

	b := openT(t, Options{Dir: dir})
	count := map[string]int{}
	uploaded := map[uint64]string{}
	entries, err := os.ReadDir(uploads)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			continue // an upload the kill interrupted
		}
		seq, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil {
			t.Fatalf("stray upload %s", e.Name())
		}
		body, err := os.ReadFile(filepath.Join(uploads, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		uploaded[seq] = string(body)
		for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
			count[line]++
		}
	}
	for _, seg := range takeAll(t, b) {
		var body strings.Builder
		if err := seg.Frames(func(f Frame) error {
			body.Write(f.Data)
			body.WriteByte('\n')
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if up, ok := uploaded[seg.Seq]; ok {
			// Uploaded, then killed before Ack: the same object again.
			if up != body.String() {
				t.Fatalf("segment %d differs from the object uploaded under its sequence", seg.Seq)
			}
			continue
		}
		for _, line := range strings.Split(strings.TrimSuffix(body.String(), "\n"), "\n") {
			count[line]++
		}
	}
	cps := map[string]int64{}
	for _, c := range b.Checkpoints() {
		cps[c.Key] = c.Offset
	}
	for w := range crashWriters {
		cp, ok := cps[fmt.Sprintf("w%d", w)]
		if !ok {
			cp = -1
		}
		if cp != int64(known[w]) && cp != int64(known[w])+1 {
			t.Errorf("writer %d: checkpoint %d, last known durable batch %d", w, cp, known[w])
		}
		for n := 0; n <= int(cp); n++ {
			for i := range crashPerBatch {
				if c := count[crashRecord(w, n, i)]; c != 1 {
					t.Errorf("record %s present %d times, want exactly once", crashRecord(w, n, i), c)
				}
				delete(count, crashRecord(w, n, i))
			}
		}
	}
	for line, c := range count {
		t.Errorf("record %s (x%d) beyond the checkpoints", line, c)
	}
}
