package metering

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/record"
)

// aggregateShapes are scanner settings whose keys differ: the tags, the
// customer (batch mode) and a license dimension.
var aggregateShapes = []struct {
	name       string
	tags       []string
	licenseDim string
	customer   bool
}{
	{"meter_usage", []string{"team"}, "", false},
	{"two tags", []string{"team", "region"}, "", false},
	{"batch", []string{"team"}, "", true},
	{"batch license", nil, "license", true},
}

// aggregateCorpus are input lines as applications write them: the parser's
// fast path (fields located) and its slow path (escapes, exponents; the
// count then reads the canonical line), tags absent, empty, repeated, and
// values the count cannot use.
var aggregateCorpus = []string{
	`{"customerId":"c-1","meterApiName":"api-calls","meterValue":1,"meterTimeInMillis":1714521600000,"dimensions":{"team":"red","region":"eu"}}`,
	`{"customerId":"c-1","meterApiName":"api-calls","meterValue":2.5,"meterTimeInMillis":1714521601000,"dimensions":{"team":"red"}}`,
	`{"customerId":"c-2","meterApiName":"api-calls","meterValue":0.000000001,"meterTimeInMillis":1714525200000,"dimensions":{"team":"blue","license":"arn:aws:license-manager::1:license:l-1"}}`,
	`{"customerId":"c-2","meterApiName":"storage","meterValue":12345678901234,"meterTimeInMillis":1714525200001}`,
	`{"meterApiName":"storage","customerId":"c-3","meterTimeInMillis":1714528800000,"meterValue":3,"dimensions":{}}`,
	`{"customerId":"c-3","meterApiName":"storage","meterValue":1e3,"meterTimeInMillis":1714528800000,"dimensions":{"team":"red"}}`,
	`{"customerId":"c-\u00e9","meterApiName":"api-calls","meterValue":4,"meterTimeInMillis":1714528800000,"dimensions":{"team":"gr\"een"}}`,
	`{"customerId":"c-4","meterApiName":"api\\calls","meterValue":5,"meterTimeInMillis":1714528800000,"dimensions":{"te\u0061m":"red"}}`,
	`{"customerId":"c-4","meterApiName":"api-calls","meterValue":6,"meterTimeInMillis":1714528800000,"dimensions":{"team":""}}`,
	`{"customerId":"c-4","meterApiName":"api-calls","meterValue":7,"meterTimeInMillis":1714528800000,"dimensions":{"team":"red","team":"blue"}}`,
	`{"customerId":"c-5","meterApiName":"api-calls","meterValue":-0,"meterTimeInMillis":1714532400000,"dimensions":{"region":"us","team":"blue"}}`,
	`{"customerId":"c-5","meterApiName":"api-calls","meterValue":123456789012345678901234567890,"meterTimeInMillis":1714532400000}`,
	`{"customerId":"c-5","meterApiName":"api-calls","meterValue":0.1234567891,"meterTimeInMillis":1714532400000}`,
	` {"customerId" : "c-6", "meterApiName":"api-calls", "meterValue": 8, "meterTimeInMillis": 1714532400000 , "uniqueId":"u-1"} `,
	`{"customerId":"c-7","meterApiName":"api-calls","meterValue":9}`,
}

// sums renders a scanner's entries and unusable records exactly, in a
// canonical order.
func sums(s *scanner) string {
	var lines []string
	for _, e := range s.entries {
		lines = append(lines, fmt.Sprintf("%d|%s|%s|%s|%d|%q|%d:%d|%d", e.hour, e.api, e.customer, e.license, e.present, e.tags, e.nanos.Hi, e.nanos.Lo, e.records))
	}
	slices.Sort(lines)
	return fmt.Sprintf("invalid %d\n%s", s.invalid, strings.Join(lines, "\n"))
}

// checkAggregateMatchesScan counts lines at ingest (located fields, an
// aggregate merged into a segment's scanner) and by scanning canonical
// lines, and requires identical sums. It returns how many records were
// counted from located fields and how many from their canonical line.
func checkAggregateMatchesScan(t *testing.T, lines []string, tags []string, licenseDim string, customer bool) (located, fromLine int) {
	t.Helper()
	p, err := record.NewParser(record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bc := &BatchSums{sc: newScanner(tags, licenseDim, customer)}
	scanned := newScanner(tags, licenseDim, customer)
	var accepted int
	for _, line := range lines {
		out, ts, err := p.Parse(nil, []byte(line), record.Origin{ID: "f", Offset: 1, TimeMillis: 1714521600000})
		if err != nil {
			continue
		}
		accepted++
		loc, ok := p.Located()
		if ok {
			located++
		} else {
			fromLine++
		}
		bc.Add(ts, loc, out)
		scanned.add(ts, out)
	}
	merged := newScanner(tags, licenseDim, customer)
	agg := bc.Aggregate()
	if accepted == 0 {
		if agg != nil {
			t.Fatalf("aggregate of no records: %q", agg)
		}
		return located, fromLine
	}
	covered, ok := merged.mergeAggregate(agg)
	if !ok || covered != accepted {
		t.Fatalf("mergeAggregate = %d, %v; want %d records covered", covered, ok, accepted)
	}
	if got, want := sums(merged), sums(scanned); got != want {
		t.Fatalf("counted at ingest:\n%s\nscanned:\n%s", got, want)
	}
	return located, fromLine
}

func TestAggregateMatchesScan(t *testing.T) {
	for _, sh := range aggregateShapes {
		t.Run(sh.name, func(t *testing.T) {
			located, fromLine := checkAggregateMatchesScan(t, aggregateCorpus, sh.tags, sh.licenseDim, sh.customer)
			if located < 8 || fromLine < 3 {
				t.Fatalf("the corpus has %d records with located fields and %d without: it must exercise both", located, fromLine)
			}
			// Each line alone too: one key per aggregate.
			for _, l := range aggregateCorpus {
				checkAggregateMatchesScan(t, []string{l}, sh.tags, sh.licenseDim, sh.customer)
			}
		})
	}
}

// FuzzAggregateMatchesScan: for any line the parser accepts, counting its
// located fields at ingest and scanning its canonical line agree.
func FuzzAggregateMatchesScan(f *testing.F) {
	for _, l := range aggregateCorpus {
		f.Add(l, l)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, sh := range aggregateShapes {
			checkAggregateMatchesScan(t, []string{a, b}, sh.tags, sh.licenseDim, sh.customer)
		}
	})
}

// An aggregate of another key shape, or not an aggregate at all, is never
// merged, and merging adds nothing unless the whole frame decodes.
func TestMergeAggregateRefuses(t *testing.T) {
	bc := &BatchSums{sc: newScanner([]string{"team"}, "", false)}
	p, _ := record.NewParser(record.Options{})
	out, ts, err := p.Parse(nil, []byte(aggregateCorpus[0]), record.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := p.Located()
	bc.Add(ts, loc, out)
	agg := slices.Clone(bc.Aggregate())

	for _, sh := range aggregateShapes[1:] {
		s := newScanner(sh.tags, sh.licenseDim, sh.customer)
		if _, ok := s.mergeAggregate(agg); ok || len(s.entries) != 0 {
			t.Errorf("%s: merged an aggregate of shape meter_usage", sh.name)
		}
	}
	s := newScanner([]string{"team"}, "", false)
	for i := range agg {
		if _, ok := s.mergeAggregate(agg[:i]); ok {
			t.Errorf("merged an aggregate cut to %d of %d bytes", i, len(agg))
		}
	}
	if _, ok := s.mergeAggregate(append(slices.Clone(agg), 0)); ok {
		t.Error("merged an aggregate with a trailing byte")
	}
	if len(s.entries) != 0 || s.invalid != 0 {
		t.Errorf("refused aggregates left sums behind: %s", sums(s))
	}
	if n, ok := s.mergeAggregate(agg); !ok || n != 1 || len(s.entries) != 1 {
		t.Errorf("the intact aggregate: %d records, %v, %d entries", n, ok, len(s.entries))
	}
}

// ledgerBuckets renders the ledger's open usage per dimension, customer,
// hour and tag set.
func ledgerBuckets(m *Meter) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lines []string
	for _, s := range m.led.series {
		for h, bs := range s.open {
			for k, b := range bs {
				lines = append(lines, fmt.Sprintf("%s|%s|%s|%q|%d|%d", s.key.dimension, s.key.customer, hourTime(h).Format(time.RFC3339), k, b.Nanos, b.Records))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// Counting a segment uses the aggregate frames of the meter's shape and
// skips the records they cover; aggregates of another shape are ignored
// and the records counted. The test writes aggregates that deliberately
// disagree with their records, so the ledger shows which was counted.
func TestCountUsesAggregatesOfItsShape(t *testing.T) {
	from := testNow.Add(-5 * time.Hour).Truncate(time.Hour)
	written, _ := testRecords(from, from.Add(2*time.Hour), 6)
	claimed, _ := testRecords(from.Add(time.Hour), from.Add(3*time.Hour), 6)
	if len(written) != len(claimed) {
		t.Fatalf("%d written, %d claimed", len(written), len(claimed))
	}
	twoTags := meterConfig()
	twoTags.AllocationTags = []string{"team", "region"}

	// want(cfg, recs): what counting recs without aggregates gives.
	want := func(cfg conf.Metering, recs []rec) string {
		dir := t.TempDir()
		writeBuffer(t, dir, recs, 10)
		m := mustNew(t, cfg, testOptions(t.TempDir(), noAPI{}, newClock(testNow)))
		countBuffer(t, m, dir)
		return ledgerBuckets(m)
	}
	// A buffer holding written's records, each batch carrying the
	// aggregate of the matching batch of claimed, made with cfg's shape.
	withAggregates := func(cfg conf.Metering) string {
		dir := t.TempDir()
		maker := mustNew(t, cfg, testOptions(t.TempDir(), noAPI{}, newClock(testNow)))
		buf, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "agent-1", Sync: buffer.SyncNever})
		if err != nil {
			t.Fatal(err)
		}
		var batch buffer.Batch
		for i := 0; i < len(written); i += 10 {
			batch.Reset()
			bc := maker.NewBatchSums()
			for j := i; j < min(i+10, len(written)); j++ {
				batch.AddRecord(written[j].at.UnixMilli(), written[j].line())
				bc.Add(claimed[j].at.UnixMilli(), nil, claimed[j].line())
			}
			batch.SetAggregate(bc.Aggregate())
			if err := buf.Write(&batch); err != nil {
				t.Fatal(err)
			}
		}
		if err := buf.Close(); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	oneTagDir := withAggregates(meterConfig())
	m := mustNew(t, meterConfig(), testOptions(t.TempDir(), noAPI{}, newClock(testNow)))
	countBuffer(t, m, oneTagDir)
	if got, w := ledgerBuckets(m), want(meterConfig(), claimed); got != w {
		t.Errorf("same shape: the aggregates were not what was counted:\n got %s\nwant %s", got, w)
	}
	if s := m.Summary(); s.RecordsCounted != int64(len(claimed)) || s.RecordsRescanned != 0 {
		t.Errorf("counted %d records (%d parsed again), want %d (0)", s.RecordsCounted, s.RecordsRescanned, len(claimed))
	}

	// allocation_tags changed between ingest and counting.
	m2 := mustNew(t, twoTags, testOptions(t.TempDir(), noAPI{}, newClock(testNow)))
	countBuffer(t, m2, withAggregates(meterConfig()))
	if got, w := ledgerBuckets(m2), want(twoTags, written); got != w {
		t.Errorf("other shape: the records were not what was counted:\n got %s\nwant %s", got, w)
	}
	if s := m2.Summary(); s.RecordsRescanned != int64(len(written)) {
		t.Errorf("other shape: %d records parsed again, want all %d", s.RecordsRescanned, len(written))
	}
}

// The pipeline's ingest path: BatchSums from a Meter has the Meter's
// shape, Reset empties it, and an empty one has no aggregate.
func TestBatchSumsReset(t *testing.T) {
	m := mustNew(t, meterConfig(), testOptions(t.TempDir(), noAPI{}, newClock(testNow)))
	bc := m.NewBatchSums()
	if bc.Aggregate() != nil {
		t.Fatal("aggregate of nothing")
	}
	r := rec{customer: "c", api: "api-calls", nanos: 2_000_000_000, at: testNow.Add(-3 * time.Hour), dims: map[string]string{"team": "red"}, uid: "u"}
	bc.Add(r.at.UnixMilli(), nil, r.line())
	bc.Reset()
	bc.Add(r.at.UnixMilli(), nil, r.line())
	s := newScanner(m.set.tags, m.set.licenseDim, false)
	if n, ok := s.mergeAggregate(bc.Aggregate()); !ok || n != 1 || len(s.entries) != 1 || s.entries[0].records != 1 {
		t.Fatalf("after Reset and one record: %d covered, %v, %s", n, ok, sums(s))
	}
	if e := s.entries[0]; e.api != "api-calls" || e.tags[0] != "red" || e.nanos != (record.Nanos{Lo: 2_000_000_000}) {
		t.Fatalf("entry %+v", e)
	}
}

// The scanner's table holds any number of keys of any length: thousands
// of distinct keys (it grows), short and long (both hash paths), each
// summed apart.
func TestScannerManyKeys(t *testing.T) {
	s := newScanner([]string{"team"}, "", true)
	const n = 5000
	at := testNow.Add(-3 * time.Hour).UnixMilli()
	for round := range 2 {
		for i := range n {
			api := strings.Repeat("a", i%60) + fmt.Sprint(i) // 1 to 63 bytes
			line := fmt.Sprintf(`{"customerId":"c%d","meterApiName":%q,"meterValue":%d,"meterTimeInMillis":%d,"dimensions":{"team":"t%d"}}`, i%7, api, i+1, at, i%3)
			s.add(at+int64(round), []byte(line))
		}
	}
	if len(s.entries) != n {
		t.Fatalf("%d entries for %d distinct keys", len(s.entries), n)
	}
	for _, e := range s.entries {
		var i int
		fmt.Sscan(strings.TrimLeft(e.api, "a"), &i)
		if e.records != 2 || e.nanos != (record.Nanos{Lo: uint64(2*(i+1)) * nanosPerUnit}) || e.customer != fmt.Sprintf("c%d", i%7) || e.tags[0] != fmt.Sprintf("t%d", i%3) {
			t.Fatalf("entry %+v", e)
		}
	}
}
