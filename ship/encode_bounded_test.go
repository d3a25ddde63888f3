package ship

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A segment holding far more key partitions than the encoder keeps open
// (many days, records in no particular order, so partitions finished
// early recur; with dead letters) is encoded with at most maxOpenGroups
// groups open at once, and
// every object holds exactly its partition's records in segment order,
// with the same key and bytes whenever it is encoded again.
func TestEncodeManyPartitionsBounded(t *testing.T) {
	const days, records = 600, 6000
	day0 := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rng := rand.New(rand.NewPCG(1, 2))
	var seg segment
	want := map[string][]string{}     // date -> records in segment order
	wantDead := map[string][]string{} // date -> dead letters
	for i := range records {
		at := day0 + int64(rng.IntN(days))*86_400_000 + int64(rng.IntN(86_400_000))
		date := time.UnixMilli(at).UTC().Format("01-02-2006")
		if i%50 == 0 {
			d := fmt.Sprintf(`{"source":"s","offset":%d,"line":"x","reason":"bad"}`, i)
			seg = append(seg, dead(at, d))
			wantDead[date] = append(wantDead[date], d)
			continue
		}
		m := meter(i, at)
		seg = append(seg, rec(at, m))
		want[date] = append(want[date], m)
	}
	for _, opts := range []EncoderOptions{{}, {Compression: CompressionNone}, {Format: FormatJSON}} {
		t.Run(opts.Compression+opts.Format, func(t *testing.T) {
			e := mustEncoder(t, opts)
			objs, err := e.Encode("inst", 9, seg)
			if err != nil {
				t.Fatal(err)
			}
			// The bound is fixed, whatever the partition count (600).
			if peak := e.peakOpen.Load(); peak > min(maxOpenGroups, 16) {
				t.Fatalf("%d groups open at once, want at most %d", peak, min(maxOpenGroups, 16))
			}
			if len(objs) != len(want)+len(wantDead) {
				t.Fatalf("%d objects, want %d", len(objs), len(want)+len(wantDead))
			}
			keys := map[string]bool{}
			for _, o := range objs {
				if keys[o.Key] {
					t.Fatalf("key %s twice", o.Key)
				}
				keys[o.Key] = true
				body := o.Body
				if opts.Compression == "" {
					body = gunzip(t, body)
				}
				date, expect := o.Key[:10], want
				if o.DeadLetter {
					date, expect = strings.TrimPrefix(o.Key, "failed-requests/")[:10], wantDead
				}
				var lines string
				if opts.Format == FormatJSON {
					lines = "[" + strings.Join(expect[date], ",") + "]"
				} else {
					lines = strings.Join(expect[date], "\n") + "\n"
				}
				if string(body) != lines {
					t.Fatalf("%s holds %.200q..., want its day's %d records in order", o.Key, body, len(expect[date]))
				}
				if o.Records != len(expect[date]) {
					t.Fatalf("%s: Records %d, want %d", o.Key, o.Records, len(expect[date]))
				}
			}
			saved := keepObjects(objs)
			e.Release(objs)
			again, err := e.Encode("inst", 9, seg)
			if err != nil {
				t.Fatal(err)
			}
			for i := range again {
				if again[i].Key != saved[i].Key || !bytes.Equal(again[i].Body, saved[i].Body) {
					t.Fatalf("re-encoding changed object %d: %s", i, again[i].Key)
				}
			}
		})
	}
}

// In time-ordered input (a backfill) partitions finished early, to make
// room for later ones, are never reopened: each body is the same bytes as
// when its partition is encoded alone.
func TestEncodeEvictedBodyEqualsStreamed(t *testing.T) {
	day0 := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	var many, alone segment
	for d := range maxOpenGroups + 3 {
		for i := range 2000 {
			at := day0 + int64(d)*86_400_000 + int64(i)
			many = append(many, rec(at, meter(i, at)))
			if d == maxOpenGroups+2 {
				alone = append(alone, rec(at, meter(i, at)))
			}
		}
	}
	e := mustEncoder(t, EncoderOptions{})
	a, err := e.Encode("inst", 1, many)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Encode("inst", 1, alone)
	if err != nil {
		t.Fatal(err)
	}
	last := a[len(a)-1]
	if last.Key != b[0].Key || !bytes.Equal(last.Body, b[0].Body) {
		t.Fatalf("partition %s differs from the same records encoded alone (%s)", last.Key, b[0].Key)
	}
}
