package ship

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/klauspost/compress/gzip"

	"github.com/metership/metership/buffer"
)

// segment is a slice-backed FrameSource. Like a real segment it hands out
// Data and Tag that alias a scratch buffer, and scribbles over the buffer
// after each callback, so an encoder that keeps either breaks the tests.
type segment []buffer.Frame

func (s segment) Frames(fn func(buffer.Frame) error) error {
	var data, tag []byte
	for _, f := range s {
		data = append(data[:0], f.Data...)
		tag = append(tag[:0], f.Tag...)
		g := f
		g.Data = data
		if len(tag) > 0 {
			g.Tag = unsafe.String(&tag[0], len(tag))
		}
		if err := fn(g); err != nil {
			return err
		}
		for i := range data {
			data[i] = '#'
		}
		for i := range tag {
			tag[i] = '#'
		}
	}
	return nil
}

func rec(at int64, data string) buffer.Frame {
	return buffer.Frame{Type: buffer.FrameRecord, Time: at, Data: []byte(data)}
}

func dead(at int64, data string) buffer.Frame {
	return buffer.Frame{Type: buffer.FrameDeadLetter, Time: at, Data: []byte(data)}
}

func meter(i int, at int64) string {
	return fmt.Sprintf(`{"customerId":"c-%d","meterApiName":"api-calls","meterValue":%d,"meterTimeInMillis":%d,"uniqueId":"u-%d"}`, i%7, i, at, i)
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

func mustEncoder(t testing.TB, opts EncoderOptions) *Encoder {
	t.Helper()
	e, err := NewEncoder(opts)
	if err != nil {
		t.Fatalf("NewEncoder: %v", err)
	}
	return e
}

func mustKey(t testing.TB, prefix, format string) *KeyFormat {
	t.Helper()
	k, err := CompileKeyFormat(prefix, format, "host")
	if err != nil {
		t.Fatalf("CompileKeyFormat: %v", err)
	}
	return k
}

func TestEncodeBodies(t *testing.T) {
	var seg segment
	var ndjson, array bytes.Buffer
	array.WriteByte('[')
	for i := 0; i < 20000; i++ { // several staging flushes
		r := meter(i, ts+int64(i))
		seg = append(seg, rec(ts+int64(i), r))
		ndjson.WriteString(r + "\n")
		if i > 0 {
			array.WriteByte(',')
		}
		array.WriteString(r)
	}
	array.WriteByte(']')
	tests := []struct {
		compression, format string
		level               int
		want                []byte
		contentType         string
		contentEncoding     string
	}{
		{"", "", 0, ndjson.Bytes(), ContentTypeNDJSON, "gzip"},
		{CompressionGzip, FormatNDJSON, 9, ndjson.Bytes(), ContentTypeNDJSON, "gzip"},
		{CompressionGzip, FormatNDJSON, -1, ndjson.Bytes(), ContentTypeNDJSON, "gzip"},
		{CompressionNone, FormatNDJSON, 0, ndjson.Bytes(), ContentTypeNDJSON, ""},
		{CompressionGzip, FormatJSON, 0, array.Bytes(), ContentTypeJSON, "gzip"},
		{CompressionNone, FormatJSON, 0, array.Bytes(), ContentTypeJSON, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s-%s-%d", tt.compression, tt.format, tt.level), func(t *testing.T) {
			key := mustKey(t, "ingest/amberdata", DefaultKeyFormat)
			e := mustEncoder(t, EncoderOptions{Key: key, Compression: tt.compression, Format: tt.format, GzipLevel: tt.level})
			objs, err := e.Encode("agent", 12, seg)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if len(objs) != 1 {
				t.Fatalf("got %d objects, want 1", len(objs))
			}
			o := objs[0]
			wantKey := "ingest/amberdata/06-07-2022/" + ObjectUUID("agent", 12, key.Partition(ts, "")) + ".gz"
			if o.Key != wantKey {
				t.Errorf("key = %q, want %q", o.Key, wantKey)
			}
			body := o.Body
			if tt.contentEncoding == "gzip" {
				if len(body) >= len(tt.want)/4 {
					t.Errorf("gzip body is %d bytes for %d bytes of records", len(body), len(tt.want))
				}
				body = gunzip(t, body)
			}
			if !bytes.Equal(body, tt.want) {
				t.Fatalf("body differs from the records: got %d bytes, want %d", len(body), len(tt.want))
			}
			if tt.format == FormatJSON {
				var v []map[string]any
				if err := json.Unmarshal(body, &v); err != nil || len(v) != len(seg) {
					t.Fatalf("json array: %d elements, err %v", len(v), err)
				}
			}
			if o.Records != len(seg) || o.DeadLetter || o.ContentType != tt.contentType || o.ContentEncoding != tt.contentEncoding ||
				o.MinTime != ts || o.MaxTime != ts+int64(len(seg)-1) {
				t.Errorf("object = {Records %d DeadLetter %v ContentType %q ContentEncoding %q MinTime %d MaxTime %d}",
					o.Records, o.DeadLetter, o.ContentType, o.ContentEncoding, o.MinTime, o.MaxTime)
			}
		})
	}
}

// TestEncodePartitionsAcrossMidnight checks that each record goes to the
// object of its own UTC date, in segment order, whatever the local zone.
func TestEncodePartitionsAcrossMidnight(t *testing.T) {
	local := time.Local
	time.Local = time.FixedZone("UTC+14", 14*3600)
	defer func() { time.Local = local }()

	midnight := time.Date(2022, 6, 8, 0, 0, 0, 0, time.UTC).UnixMilli()
	times := []int64{midnight - 1, midnight, midnight - 2, midnight + 1, midnight - 1, midnight + 86400000}
	var seg segment
	want := map[string]string{}
	for i, at := range times {
		r := meter(i, at)
		seg = append(seg, rec(at, r))
		day := time.UnixMilli(at).UTC().Format("01-02-2006")
		want[day] += r + "\n"
	}
	e := mustEncoder(t, EncoderOptions{Key: mustKey(t, "", DefaultKeyFormat)})
	objs, err := e.Encode("agent", 1, seg)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 3 {
		t.Fatalf("got %d objects, want 3 (one per UTC day)", len(objs))
	}
	var total int
	for i, o := range objs {
		if i > 0 && objs[i-1].Key >= o.Key {
			t.Errorf("objects not sorted: %q before %q", objs[i-1].Key, o.Key)
		}
		day, _, _ := strings.Cut(o.Key, "/")
		if got := string(gunzip(t, o.Body)); got != want[day] {
			t.Errorf("object %s holds\n%s\nwant\n%s", o.Key, got, want[day])
		}
		d, _ := time.Parse("01-02-2006", day)
		if o.MinTime < d.UnixMilli() || o.MaxTime >= d.Add(24*time.Hour).UnixMilli() {
			t.Errorf("object %s times [%d, %d] outside its day", o.Key, o.MinTime, o.MaxTime)
		}
		total += o.Records
	}
	if total != len(times) {
		t.Errorf("objects hold %d records, want %d", total, len(times))
	}
}

func TestEncodeDeadLetters(t *testing.T) {
	dl1 := `{"source":"/var/log/a.log","offset":10,"line":"not json","reason":"invalid JSON"}`
	dl2 := `{"source":"/var/log/a.log","offset":30,"line":"{}","reason":"missing customerId"}`
	seg := segment{
		rec(ts, meter(1, ts)),
		dead(ts+5, dl1),
		rec(ts+1, meter(2, ts+1)),
		dead(ts+6, dl2),
	}
	recKey := mustKey(t, "", DefaultKeyFormat)
	e := mustEncoder(t, EncoderOptions{Key: recKey})
	objs, err := e.Encode("agent", 3, seg)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2", len(objs))
	}
	recObj, dlObj := objs[0], objs[1]
	if recObj.DeadLetter || !dlObj.DeadLetter {
		t.Fatalf("objects %q (dead letter %v), %q (dead letter %v): want records then dead letters", recObj.Key, recObj.DeadLetter, dlObj.Key, dlObj.DeadLetter)
	}
	dlKey := mustKey(t, "", DefaultDeadLetterKeyFormat)
	wantDL := "failed-requests/06-07-2022/" + ObjectUUID("agent", 3, "\x00D"+dlKey.Partition(ts, "")) + ".gz"
	if dlObj.Key != wantDL {
		t.Errorf("dead-letter key = %q, want %q", dlObj.Key, wantDL)
	}
	if got, want := string(gunzip(t, dlObj.Body)), dl1+"\n"+dl2+"\n"; got != want {
		t.Errorf("dead-letter body = %q, want %q", got, want)
	}
	if got, want := string(gunzip(t, recObj.Body)), meter(1, ts)+"\n"+meter(2, ts+1)+"\n"; got != want {
		t.Errorf("record body = %q, want %q", got, want)
	}
	if dlObj.Records != 2 || recObj.Records != 2 || dlObj.MinTime != ts+5 || dlObj.MaxTime != ts+6 {
		t.Errorf("counts/times: records %d/%d, dead-letter times [%d, %d]", recObj.Records, dlObj.Records, dlObj.MinTime, dlObj.MaxTime)
	}
	if strings.TrimSuffix(dlObj.Key[len("failed-requests/06-07-2022/"):], ".gz") == strings.TrimSuffix(recObj.Key[len("06-07-2022/"):], ".gz") {
		t.Errorf("dead-letter and record objects share a UUID")
	}
}

func TestEncodeGroupsByTag(t *testing.T) {
	key := mustKey(t, "", "$TAG[0]/%Y/$UUID.gz")
	var seg segment
	want := map[string]string{}
	for i := 0; i < 30; i++ {
		tag := []string{"alpha.x", "beta.y", "alpha.z"}[i%3]
		f := rec(ts+int64(i), meter(i, ts))
		f.Tag = tag
		seg = append(seg, f)
		first, _, _ := strings.Cut(tag, ".")
		want[first] += meter(i, ts) + "\n"
	}
	seg = append(seg, buffer.Frame{Type: buffer.FrameTag, Data: []byte("ignored")}, buffer.Frame{Type: buffer.FrameCommit, Data: []byte("ignored")})
	objs, err := mustEncoder(t, EncoderOptions{Key: key}).Encode("agent", 9, seg)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2", len(objs))
	}
	for _, o := range objs {
		first, _, _ := strings.Cut(o.Key, "/")
		if got := string(gunzip(t, o.Body)); got != want[first] {
			t.Errorf("object %s holds %q, want %q", o.Key, got, want[first])
		}
	}
}

func TestEncodeDeterministicAndReusable(t *testing.T) {
	seg := segment{rec(ts, meter(1, ts)), rec(ts+1, meter(2, ts)), dead(ts, `{"reason":"x"}`)}
	other := segment{rec(ts+86400000, meter(3, ts)), rec(ts+86400000, meter(4, ts))}
	e := mustEncoder(t, EncoderOptions{})
	first, err := e.Encode("agent", 5, seg)
	if err != nil {
		t.Fatal(err)
	}
	saved := keepObjects(first)
	e.Release(first)
	if first[0].Body != nil {
		t.Fatal("Release left Body set")
	}
	for round := 0; round < 3; round++ {
		o2, err := e.Encode("agent", 6, other)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := string(gunzip(t, o2[0].Body)), meter(3, ts)+"\n"+meter(4, ts)+"\n"; got != want {
			t.Fatalf("round %d: reused buffers gave %q, want %q", round, got, want)
		}
		again, err := e.Encode("agent", 5, seg)
		if err != nil {
			t.Fatal(err)
		}
		if len(again) != len(saved) {
			t.Fatalf("round %d: %d objects, want %d", round, len(again), len(saved))
		}
		for i := range again {
			if again[i].Key != saved[i].Key || !bytes.Equal(again[i].Body, saved[i].Body) {
				t.Fatalf("round %d: re-encoding segment 5 gave a different object %d: %q vs %q", round, i, again[i].Key, saved[i].Key)
			}
			if again[i].Key == o2[0].Key {
				t.Fatalf("segments 5 and 6 share key %q", again[i].Key)
			}
		}
		e.Release(again)
		e.Release(o2)
	}
}

func TestEncodeEmptyAndErrors(t *testing.T) {
	e := mustEncoder(t, EncoderOptions{})
	objs, err := e.Encode("agent", 1, segment{})
	if err != nil || len(objs) != 0 {
		t.Fatalf("empty segment: %d objects, err %v", len(objs), err)
	}

	boom := errors.New("boom")
	_, err = e.Encode("agent", 2, sourceFunc(func(fn func(buffer.Frame) error) error {
		if err := fn(rec(ts, meter(1, ts))); err != nil {
			return err
		}
		return boom
	}))
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "segment 2") {
		t.Fatalf("source error: got %v, want wrapped boom naming the segment", err)
	}

	_, err = e.Encode("agent", 3, segment{rec(ts, "{}"), {Type: 'X', Data: []byte("?")}})
	if !errors.Is(err, ErrFrameType) {
		t.Fatalf("unknown frame type: got %v, want ErrFrameType", err)
	}
}

type sourceFunc func(fn func(buffer.Frame) error) error

func (f sourceFunc) Frames(fn func(buffer.Frame) error) error { return f(fn) }

func TestNewEncoderErrors(t *testing.T) {
	tests := []struct {
		opts EncoderOptions
		want string
	}{
		{EncoderOptions{Compression: "zstd"}, `compression "zstd" not supported`},
		{EncoderOptions{Format: "csv"}, `format "csv" not supported`},
		{EncoderOptions{GzipLevel: 10}, "gzip level 10 out of range"},
		{EncoderOptions{GzipLevel: -3}, "gzip level -3 out of range"},
	}
	for _, tt := range tests {
		_, err := NewEncoder(tt.opts)
		if !errors.Is(err, ErrEncoderOptions) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewEncoder(%+v) = %v, want ErrEncoderOptions mentioning %q", tt.opts, err, tt.want)
		}
	}
}

// Aggregate frames (metering's per-batch sums) are not output: a segment
// encodes to the same objects with or without them.
func TestEncodeSkipsAggregateFrames(t *testing.T) {
	agg := buffer.Frame{Type: buffer.FrameAggregate, Data: []byte("\x01sums")}
	plain := segment{rec(ts, meter(1, ts)), dead(ts, `{"reason":"x"}`), rec(ts+1, meter(2, ts))}
	withAgg := segment{agg, plain[0], plain[1], agg, plain[2]}
	e := mustEncoder(t, EncoderOptions{})
	want, err := e.Encode("agent", 7, plain)
	if err != nil {
		t.Fatal(err)
	}
	saved := keepObjects(want)
	e.Release(want)
	got, err := e.Encode("agent", 7, withAgg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Release(got)
	if len(got) != len(saved) {
		t.Fatalf("%d objects with aggregate frames, %d without", len(got), len(saved))
	}
	for i := range got {
		if got[i].Key != saved[i].Key || got[i].Records != saved[i].Records || !bytes.Equal(got[i].Body, saved[i].Body) {
			t.Errorf("object %d differs with aggregate frames: %s (%d records) vs %s (%d)", i, got[i].Key, got[i].Records, saved[i].Key, saved[i].Records)
		}
	}
}

// keepObjects copies objects so they outlive Release.
func keepObjects(objs []Object) []Object {
	saved := make([]Object, len(objs))
	for i, o := range objs {
		saved[i] = o
		saved[i].Body = bytes.Clone(o.Body)
	}
	return saved
}
