package fluentbit

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	fb "github.com/metership/metership/fluentbit/fbtest"
)

// decoded is one event as the tests compare it.
type decoded struct {
	kind    eventKind
	hasTime bool
	nanos   int64
	line    string
	reason  string // substring of the reason, for eventBad
}

func decodeAll(data []byte) ([]decoded, error) {
	var d decoder
	d.reset(data)
	var out []decoded
	for d.more() {
		ev, err := d.nextEvent()
		if err != nil {
			return out, err
		}
		out = append(out, decoded{kind: ev.kind, hasTime: ev.hasTime, nanos: ev.timeNanos, line: string(ev.line), reason: ev.reason})
	}
	return out, nil
}

const (
	sec  = 1654560000 // 2022-06-07T00:00:00Z
	nsec = 250_000_000
)

var et = fb.EventTime{Sec: sec, Nsec: nsec}

func rec(kv ...any) fb.Map {
	var m fb.Map
	for i := 0; i < len(kv); i += 2 {
		m = append(m, fb.KV{Key: kv[i], Value: kv[i+1]})
	}
	return m
}

func one(ts any, r any) []byte { return new(fb.Chunk).V1(ts, r).Bytes() }

func TestDecodeEvents(t *testing.T) {
	nanos := int64(sec)*1e9 + nsec
	tests := []struct {
		name string
		data []byte
		want []decoded
	}{
		{
			name: "v1 EventTime",
			data: one(et, rec("customerId", "c1", "meterValue", 5)),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"customerId":"c1","meterValue":5}`}},
		},
		{
			name: "v2 with metadata",
			data: new(fb.Chunk).V2(et, rec("otel", rec("a", 1)), rec("k", "v")).Bytes(),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"k":"v"}`}},
		},
		{
			name: "v2 header with only a timestamp",
			data: fb.Append(nil, []any{[]any{et}, rec("k", "v")}),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"k":"v"}`}},
		},
		{
			name: "integer seconds",
			data: one(uint32(sec), rec("k", 1)),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: int64(sec) * 1e9, line: `{"k":1}`}},
		},
		{
			name: "int64 seconds",
			data: one(fb.Raw{0xd3, 0, 0, 0, 0, 0x62, 0x9e, 0x94, 0x00}, rec("k", 1)),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: int64(0x629e9400) * 1e9, line: `{"k":1}`}},
		},
		{
			name: "float64 seconds",
			data: one(float64(sec)+0.5, rec("k", 1)),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: int64(sec)*1e9 + 5e8, line: `{"k":1}`}},
		},
		{
			name: "float32 seconds",
			data: one(float32(1024.25), rec("k", 1)),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: 1024*1e9 + 25e7, line: `{"k":1}`}},
		},
		{
			name: "msgpack timestamp64",
			data: one(fb.Ext{Type: -1, Data: binary.BigEndian.AppendUint64(nil, uint64(nsec)<<34|uint64(sec))}, rec("k", 1)),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"k":1}`}},
		},
		{
			name: "zero and negative time have no time",
			data: new(fb.Chunk).V1(0, rec("k", 1)).V1(-5, rec("k", 2)).Bytes(),
			want: []decoded{{kind: eventRecord, line: `{"k":1}`}, {kind: eventRecord, line: `{"k":2}`}},
		},
		{
			name: "str and bin values",
			data: one(et, rec("s", "text", "b", fb.Bin("bytes"), fb.Bin("binkey"), "v")),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"s":"text","b":"bytes","binkey":"v"}`}},
		},
		{
			name: "nested maps and arrays",
			data: one(et, rec("dimensions", rec("region", "us-east-1", "tags", []any{"a", 1, nil, []any{}}), "empty", fb.Map{})),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"dimensions":{"region":"us-east-1","tags":["a",1,null,[]]},"empty":{}}`}},
		},
		{
			name: "scalar edges",
			data: one(et, rec(
				"nil", nil, "t", true, "f", false,
				"u64max", uint64(math.MaxUint64), "i64min", int64(math.MinInt64),
				"i8", fb.Raw{0xd0, 0x80}, "negfix", -32, "fix", 127, "u8", fb.Raw{0xcc, 0xff},
				"i16", fb.Raw{0xd1, 0x80, 0x00}, "i32", fb.Raw{0xd2, 0xff, 0xff, 0xff, 0xff},
				"u16", fb.Raw{0xcd, 0xff, 0xff}, "u32", fb.Raw{0xce, 0xff, 0xff, 0xff, 0xff},
				"float", 1.5, "integral", 3.0, "big", 1e21, "small", 1e-7, "f32", float32(0.1),
				"nan", math.NaN(), "inf", math.Inf(-1), "negzero", math.Copysign(0, -1),
			)),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"nil":null,"t":true,"f":false,` +
				`"u64max":18446744073709551615,"i64min":-9223372036854775808,"i8":-128,"negfix":-32,"fix":127,"u8":255,` +
				`"i16":-32768,"i32":-1,"u16":65535,"u32":4294967295,` +
				`"float":1.5,"integral":3,"big":1e+21,"small":1e-7,"f32":0.1,"nan":null,"inf":null,"negzero":-0}`}},
		},
		{
			name: "wide string, map and array forms",
			data: one(et, fb.Raw(concat(
				[]byte{0xde, 0x00, 0x02},
				[]byte{0xd9, 0x01, 'a'}, []byte{0xda, 0x00, 0x01, 'b'},
				[]byte{0xdb, 0x00, 0x00, 0x00, 0x01, 'c'}, []byte{0xdc, 0x00, 0x01, 0xc5, 0x00, 0x01, 'd'},
			))),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"a":"b","c":["d"]}`}},
		},
		{
			name: "escaping and invalid UTF-8",
			data: one(et, rec("q\"k", "line\nwith \"quotes\" \\ and \x01", "bad", fb.Bin{'x', 0xff, 'y'}, "utf8", "héllo ✓")),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"q\"k":"line\nwith \"quotes\" \\ and \u0001","bad":"x\ufffdy","utf8":"héllo ✓"}`}},
		},
		{
			name: "non-string keys",
			data: one(et, rec(1, "one", nil, "nil", true, "t", -2.5, "f", []any{1, "a"}, "arr")),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"1":"one","null":"nil","true":"t","-2.5":"f","[1,\"a\"]":"arr"}`}},
		},
		{
			name: "extensions in a record",
			data: one(et, rec("at", fb.EventTime{Sec: 10, Nsec: 5_000_000}, "whole", fb.EventTime{Sec: 7}, "ext", fb.Ext{Type: 5, Data: []byte{1, 2, 3}})),
			want: []decoded{{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"at":10.005,"whole":7,"ext":"AQID"}`}},
		},
		{
			name: "group markers are skipped",
			data: new(fb.Chunk).
				GroupStart(rec("schema", "otlp"), rec("resource", rec("a", 1))).
				V2(et, nil, rec("k", 1)).
				GroupEnd().
				V2(-1, nil, rec("int", "marker")).
				Bytes(),
			want: []decoded{{kind: eventMarker}, {kind: eventRecord, hasTime: true, nanos: nanos, line: `{"k":1}`}, {kind: eventMarker}, {kind: eventMarker}},
		},
		{
			name: "v1 event with timestamp -1 is not a marker",
			data: one(-1, rec("k", 1)),
			want: []decoded{{kind: eventRecord, line: `{"k":1}`}},
		},
		{
			name: "log-only record yields its text",
			data: new(fb.Chunk).
				V1(et, rec("log", `{"customerId":"c"}`)).
				V1(et, rec("log", fb.Bin("raw text"))).
				V1(et, rec("log", 5)).
				V1(et, rec("log", "x", "stream", "stdout")).
				Bytes(),
			want: []decoded{
				{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"customerId":"c"}`},
				{kind: eventRecord, hasTime: true, nanos: nanos, line: `raw text`},
				{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"log":5}`},
				{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"log":"x","stream":"stdout"}`},
			},
		},
		{
			name: "extra elements after the record are ignored",
			data: concat(fb.Append(nil, []any{et, rec("k", 1), "extra", rec("x", 2)}), one(et, rec("k", 2))),
			want: []decoded{
				{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"k":1}`},
				{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"k":2}`},
			},
		},
		{
			name: "valid msgpack that is not an event",
			data: concat(
				fb.Append(nil, rec("k", 1)),
				fb.Append(nil, []any{et}),
				fb.Append(nil, []any{"yesterday", rec("k", 2)}),
				fb.Append(nil, []any{et, "not a map"}),
				fb.Append(nil, []any{[]any{}, rec("k", 3)}),
				fb.Append(nil, []any{[]any{"later", fb.Map{}}, rec("k", 4)}),
				one(et, rec("k", 5)),
			),
			want: []decoded{
				{kind: eventBad, line: `{"k":1}`, reason: "not a Fluent Bit event"},
				{kind: eventBad, line: `[1654560000.25]`, reason: "not a Fluent Bit event"},
				{kind: eventBad, line: `["yesterday",{"k":2}]`, reason: "timestamp is not a time"},
				{kind: eventBad, line: `[1654560000.25,"not a map"]`, reason: "record is not a map"},
				{kind: eventBad, line: `[[],{"k":3}]`, reason: "is empty"},
				{kind: eventBad, line: `[["later",{}],{"k":4}]`, reason: "timestamp is not a time"},
				{kind: eventRecord, hasTime: true, nanos: nanos, line: `{"k":5}`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(tt.data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d events %+v, want %d", len(got), got, len(tt.want))
			}
			for i, w := range tt.want {
				g := got[i]
				if g.kind != w.kind || g.hasTime != w.hasTime || g.nanos != w.nanos || g.line != w.line || !strings.Contains(g.reason, w.reason) {
					t.Errorf("event %d:\n got %+v\nwant %+v", i, g, w)
				}
				if g.kind == eventRecord && strings.HasPrefix(g.line, "{") && !json.Valid([]byte(g.line)) {
					t.Errorf("event %d: invalid JSON %s", i, g.line)
				}
			}
		})
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestDecodeMalformed(t *testing.T) {
	good := one(et, rec("k", "v"))
	tests := []struct {
		name   string
		data   []byte
		before int // events decoded before the error
	}{
		{"reserved byte 0xc1", concat(good, []byte{0xc1}), 1},
		{"reserved byte inside a record", one(et, rec("k", fb.Raw{0xc1})), 0},
		{"array32 claiming 4G elements", concat(good, []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}), 1},
		{"map32 claiming 4G entries in a record", one(et, fb.Raw{0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, 'k'}), 0},
		{"str32 longer than the chunk", one(et, rec("k", fb.Raw{0xdb, 0x7f, 0xff, 0xff, 0xff, 'x'})), 0},
		{"truncated fixext", concat(good, []byte{0x92, 0xd7, 0x00, 0x01}), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(tt.data)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if len(got) != tt.before {
				t.Fatalf("decoded %d events before the error, want %d", len(got), tt.before)
			}
		})
	}
}

// TestDecodeTruncatedEverywhere cuts a chunk at every byte: a cut at an
// event boundary decodes the events before it, any other cut is an
// ErrMalformed after exactly the complete events.
func TestDecodeTruncatedEverywhere(t *testing.T) {
	c := new(fb.Chunk)
	c.V1(et, rec("customerId", "c1", "meterApiName", "api", "meterValue", 1.5, "dimensions", rec("r", "eu"))).
		V2(et, rec("m", fb.Bin("x")), rec("a", []any{1, int64(-70000), uint64(1 << 40), float32(2.5), nil, true})).
		GroupStart(nil, rec("g", 1)).
		V1(uint32(sec), rec("log", "text")).
		GroupEnd()
	data := c.Bytes()
	var boundaries []int
	var d decoder
	d.reset(data)
	for d.more() {
		if _, err := d.nextEvent(); err != nil {
			t.Fatal(err)
		}
		boundaries = append(boundaries, d.pos)
	}
	for cut := 0; cut < len(data); cut++ {
		got, err := decodeAll(data[:cut])
		complete := 0
		for _, b := range boundaries {
			if b <= cut {
				complete++
			}
		}
		atBoundary := cut == 0 || complete > 0 && boundaries[complete-1] == cut
		if atBoundary {
			if err != nil || len(got) != complete {
				t.Fatalf("cut %d at a boundary: %d events, err %v; want %d, nil", cut, len(got), err, complete)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) || len(got) != complete {
			t.Fatalf("cut %d: %d events, err %v; want %d then ErrMalformed", cut, len(got), err, complete)
		}
	}
}

func TestDecodeTooDeep(t *testing.T) {
	var nested []byte
	for i := 0; i < maxDepth+10; i++ {
		nested = append(nested, 0x91)
	}
	nested = append(nested, 0x01)
	inner := fb.Append(nil, rec("deep", fb.Raw(nested)))
	data := concat(one(et, fb.Raw(inner)), one(et, rec("k", 1)))
	got, err := decodeAll(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].kind != eventBad || got[1].line != `{"k":1}` {
		t.Fatalf("got %+v", got)
	}
	raw, err := base64.StdEncoding.DecodeString(got[0].line)
	if err != nil || !bytes.Equal(raw, one(et, fb.Raw(inner))) {
		t.Fatalf("dead letter line is not the base64 of the event: %v", err)
	}
	if !strings.Contains(got[0].reason, "nested deeper") {
		t.Fatalf("reason %q", got[0].reason)
	}
}

func TestDecodeReusesBuffers(t *testing.T) {
	c := new(fb.Chunk)
	for i := 0; i < 100; i++ {
		c.V2(et, nil, fb.MeterRecord("customer-1", "api-calls", i, 0, rec("region", "us-east-1", "tier", fb.Bin("gold"))))
	}
	data := c.Bytes()
	var d decoder
	run := func() {
		d.reset(data)
		for d.more() {
			if _, err := d.nextEvent(); err != nil {
				t.Fatal(err)
			}
		}
	}
	run()
	if n := testing.AllocsPerRun(50, run); n != 0 {
		t.Fatalf("decoding a chunk allocates %.1f times, want 0", n)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(one(et, rec("customerId", "c", "meterValue", 1)))
	f.Add(new(fb.Chunk).GroupStart(nil, rec("a", 1)).V2(et, nil, rec("log", "x")).GroupEnd().Bytes())
	f.Add([]byte{0x92, 0xd7, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var d decoder
		d.reset(data)
		for d.more() {
			before := d.pos
			ev, err := d.nextEvent()
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v does not wrap ErrMalformed", err)
				}
				return
			}
			if d.pos <= before {
				t.Fatalf("no progress at %d", before)
			}
			if ev.kind == eventRecord && !ev.text && !json.Valid(ev.line) {
				t.Fatalf("record rendered as invalid JSON: %q", ev.line)
			}
		}
	})
}
