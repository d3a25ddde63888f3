package buffer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Fuzz modes for FuzzRecover: what the arbitrary bytes are.
const (
	fuzzWholeSealed = iota // a whole .seg file
	fuzzTailOpen           // appended after valid committed frames of a .open
	fuzzTailSealed         // appended after valid committed frames of a .seg
	fuzzModes
)

// validPrefix is a segment header plus two committed batches, and the
// record frames it holds.
func validPrefix() ([]byte, []string) {
	out := appendSegHeader(nil, 1, testEpoch)
	var want []string
	for n := 1; n <= 2; n++ {
		batch := makeBatch(n, 2, "app")
		out = appendTagFrame(out, 0, "app")
		out = append(out, batch.buf...)
		out = appendCommitFrame(out, 0, batch.checkpoints)
		for i := range 2 {
			want = append(want, record(n, i))
		}
	}
	return out, want
}

func FuzzRecover(f *testing.F) {
	prefix, _ := validPrefix()
	f.Add(prefix, uint8(fuzzWholeSealed))
	f.Add([]byte{}, uint8(fuzzTailOpen))
	f.Add(makeBatch(3, 2, "app").buf, uint8(fuzzTailOpen))
	// A batch with an aggregate frame ahead of its records, and its commit.
	withAgg := appendFrame(nil, FrameAggregate, 0, []byte("\x01sums"))
	withAgg = append(withAgg, makeBatch(4, 2, "").buf...)
	f.Add(appendCommitFrame(withAgg, 0, nil), uint8(fuzzTailSealed))
	f.Add(appendCommitFrame(nil, 0, []Checkpoint{{Key: "src", Offset: 3}}), uint8(fuzzTailSealed))
	// Seed corpus: every segment file of the crash scenarios.
	files, _ := filepath.Glob(filepath.Join("testdata", "*", "0*"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint8(fuzzWholeSealed))
		if len(data) > segHeaderSize {
			f.Add(data[segHeaderSize:], uint8(fuzzTailOpen))
		}
	}

	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		mode %= fuzzModes
		dir := t.TempDir()
		var file []byte
		var wantPrefix []string
		name := segmentName(1, sealedExt)
		switch mode {
		case fuzzWholeSealed:
			file = data
		case fuzzTailOpen, fuzzTailSealed:
			file, wantPrefix = validPrefix()
			file = append(file, data...)
			if mode == fuzzTailOpen {
				name = segmentName(1, openExt)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), file, 0o640); err != nil {
			t.Fatal(err)
		}
		b, err := Open(Options{Dir: dir})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer b.Close()

		var got []string
		for _, seg := range takeAll(t, b) {
			if err := seg.Frames(func(fr Frame) error {
				// Only frames that verify are returned: each is, byte for
				// byte, an intact frame of the input.
				if !bytes.Contains(file, appendFrame(nil, fr.Type, fr.Time, fr.Data)) {
					t.Fatalf("returned a frame that is not in the input: %q", fr.Data)
				}
				got = append(got, string(fr.Data))
				return nil
			}); err != nil {
				t.Fatalf("Frames: %v", err)
			}
		}
		if len(got) < len(wantPrefix) || !slices.Equal(got[:len(wantPrefix)], wantPrefix) {
			t.Fatalf("committed prefix lost: got %q, want it to start with %q", got, wantPrefix)
		}
		// Corrupt sealed data is never deleted: whatever recovery cut or
		// moved is kept byte for byte as .bad.
		if mode != fuzzTailOpen {
			r := b.Stats().Recovered
			kept, keptErr := os.ReadFile(filepath.Join(dir, name))
			switch {
			case len(r.MovedAside) > 0:
				bad, err := os.ReadFile(filepath.Join(dir, name+badExt))
				if err != nil || !bytes.Equal(bad, file) {
					t.Fatalf("moved aside %v, but %s.bad does not hold the input (%v)", r.MovedAside, name, err)
				}
			case r.TruncatedBytes > 0:
				t.Fatalf("cut %d bytes of a sealed segment without keeping a copy", r.TruncatedBytes)
			case keptErr == nil && !bytes.Equal(kept, file):
				t.Fatalf("sealed segment changed without a report")
			case keptErr != nil && len(got) > 0:
				t.Fatalf("segment with records gone: %v", keptErr)
			}
		}
	})
}

func FuzzFrame(f *testing.F) {
	f.Add(appendFrame(nil, FrameRecord, 1717761600000, []byte(`{"customerId":"c"}`)))
	f.Add(appendFrame(nil, FrameDeadLetter, -1, nil))
	f.Add(appendTagFrame(nil, 0, "app"))
	f.Add(appendCommitFrame(nil, 5, []Checkpoint{{Key: "s", Offset: 9, Meta: []byte("m")}}))
	f.Add(appendFrame(nil, FrameRecord, 0, []byte("x"))[:10])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, ts, data, n, err := decodeFrame(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if n > len(b) || n != frameHeaderSize+len(data) {
			t.Fatalf("n = %d for %d data bytes in %d input bytes", n, len(data), len(b))
		}
		if re := appendFrame(nil, typ, ts, data); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", re, b[:n])
		}
		if typ == FrameCommit {
			_ = decodeCheckpoints(data, func([]byte, int64, []byte) {})
		}
	})
}
