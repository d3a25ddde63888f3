package export

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/metership/metership/record"
)

// Plan is what a job exports, resolved once per run: the window in epoch
// seconds, the meters, filters and groups. /jobs/check shows it.
type Plan struct {
	Meters           []string            `json:"meterApiNames"`
	GroupBy          []string            `json:"groupBy"`
	Filter           map[string][]string `json:"filter,omitempty"`
	Bucket           string              `json:"aggregationBucket"`
	StartTimeSeconds int64               `json:"startTimeInSeconds"`
	EndTimeSeconds   int64               `json:"endTimeInSeconds"`
	Start            string              `json:"startTime"`
	End              string              `json:"endTime"`
	Rescale          *Rescale            `json:"rescaleFunction,omitempty"`
	Sparse           bool                `json:"sparse"`
}

// NewPlan resolves a valid job for a run at now.
func NewPlan(j *Job, now time.Time) (*Plan, error) {
	w, err := j.Window(now)
	if err != nil {
		return nil, err
	}
	return &Plan{
		Meters: orEmpty(j.MeterAPINames), GroupBy: orEmpty(j.GroupBy), Filter: j.Filter,
		Bucket:           j.AggregationBucket,
		StartTimeSeconds: w.Start.Unix(), EndTimeSeconds: w.End.Unix(),
		Start: w.Start.Format(time.RFC3339), End: w.End.Format(time.RFC3339),
		Rescale: j.RescaleFunction, Sparse: j.IsSparse(),
	}, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Window is the plan's window.
func (p *Plan) Window() Window {
	return Window{Start: time.Unix(p.StartTimeSeconds, 0).UTC(), End: time.Unix(p.EndTimeSeconds, 0).UTC()}
}

// aggregator sums the records of one plan. Memory grows with the number
// of distinct (bucket, meter, group values), never with records: a record
// whose group was seen before allocates nothing.
type aggregator struct {
	plan     *Plan
	lo, hi   int64 // window in ms
	meters   map[string]bool
	filters  []filterSpec
	groups   []groupSpec
	bucketer bucketer

	key  []byte
	sums map[string]*record.Nanos
	f    fields

	Records  int64 // records aggregated
	Skipped  int64 // records outside the window, meters or filter
	Invalid  int64 // lines that are not meter records
	ReadByte int64 // uncompressed bytes read
}

type filterSpec struct {
	name     []byte
	customer bool
	allowed  map[string]bool
}

type groupSpec struct {
	name     []byte
	customer bool
}

func newAggregator(p *Plan) *aggregator {
	a := &aggregator{
		plan: p, lo: p.StartTimeSeconds * 1000, hi: p.EndTimeSeconds * 1000,
		bucketer: bucketer{bucket: p.Bucket},
		sums:     map[string]*record.Nanos{},
	}
	if len(p.Meters) > 0 {
		a.meters = map[string]bool{}
		for _, m := range p.Meters {
			a.meters[m] = true
		}
	}
	keys := make([]string, 0, len(p.Filter))
	for k := range p.Filter {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fs := filterSpec{name: []byte(k), customer: k == "customerId", allowed: map[string]bool{}}
		for _, v := range p.Filter[k] {
			fs.allowed[v] = true
		}
		a.filters = append(a.filters, fs)
	}
	for _, g := range p.GroupBy {
		a.groups = append(a.groups, groupSpec{name: []byte(g), customer: g == "customerId"})
	}
	return a
}

// addLine aggregates one NDJSON line.
func (a *aggregator) addLine(line []byte) {
	f := &a.f
	if !scanRecord(line, f) {
		a.Invalid++
		return
	}
	if f.millis < a.lo || f.millis >= a.hi {
		a.Skipped++
		return
	}
	if a.meters != nil && !a.meters[string(f.api)] {
		a.Skipped++
		return
	}
	for i := range a.filters {
		fs := &a.filters[i]
		v, ok := f.dimension(fs.name, fs.customer)
		if !ok || !fs.allowed[string(v)] {
			a.Skipped++
			return
		}
	}
	nanos, ok := record.ParseNanos(f.value)
	if !ok {
		a.Invalid++
		return
	}
	k := binary.BigEndian.AppendUint64(a.key[:0], uint64(a.bucketer.start(f.millis)))
	k = appendField(k, f.api)
	for i := range a.groups {
		v, _ := f.dimension(a.groups[i].name, a.groups[i].customer)
		k = appendField(k, v)
	}
	a.key = k
	s := a.sums[string(k)]
	if s == nil {
		s = &record.Nanos{}
		a.sums[string(k)] = s
	}
	s.Add(nanos)
	a.Records++
}

func appendField(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// merge adds b's sums into a.
func (a *aggregator) merge(b *aggregator) {
	for k, v := range b.sums {
		if s := a.sums[k]; s != nil {
			s.Add(*v)
		} else {
			a.sums[k] = v
		}
	}
	a.Records += b.Records
	a.Skipped += b.Skipped
	a.Invalid += b.Invalid
	a.ReadByte += b.ReadByte
}

// readObject aggregates one shipped object: gzip (detected by its magic
// bytes) or plain, NDJSON or a JSON array (output.format json).
func (a *aggregator) readObject(r io.Reader, zr *gzip.Reader, br *bufio.Reader) error {
	br.Reset(r)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		if err := zr.Reset(br); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close() //nolint:errcheck // a gzip reader's Close only reports an earlier read error, already returned
		br2 := bufio.NewReaderSize(zr, 256<<10)
		return a.readLines(br2)
	}
	return a.readLines(br)
}

func (a *aggregator) readLines(br *bufio.Reader) error {
	if first, err := peekNonSpace(br); err == nil && first == '[' {
		return a.readArray(br)
	}
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		a.ReadByte += int64(len(line))
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > 0 {
			a.addLine(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func peekNonSpace(br *bufio.Reader) (byte, error) {
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if len(b) < n {
			return 0, err
		}
		c := b[n-1]
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			return c, nil
		}
		if n > 4096 {
			return 0, io.ErrUnexpectedEOF
		}
	}
}

// readArray reads an object of output.format json: an array of records.
func (a *aggregator) readArray(r io.Reader) error {
	dec := json.NewDecoder(r)
	if _, err := dec.Token(); err != nil {
		return err
	}
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		a.ReadByte += int64(len(raw))
		a.addLine(raw)
	}
	return nil
}

// Row is one exported row.
type Row struct {
	Time   time.Time
	Meter  string
	Groups []string
	Value  string // decimal, nanos resolution
}

// rows renders the sums as sorted rows, rescaled, with zero rows for
// every group and bucket when the plan is not sparse.
func (a *aggregator) rows() []Row {
	type entry struct {
		bucket int64
		meter  string
		groups []string
		sum    record.Nanos
	}
	entries := make([]entry, 0, len(a.sums))
	for k, v := range a.sums {
		e := entry{bucket: int64(binary.BigEndian.Uint64([]byte(k[:8]))), sum: *v}
		rest := []byte(k[8:])
		fieldsOf := func() string {
			n, w := binary.Uvarint(rest)
			s := string(rest[w : w+int(n)])
			rest = rest[w+int(n):]
			return s
		}
		e.meter = fieldsOf()
		for range a.groups {
			e.groups = append(e.groups, fieldsOf())
		}
		entries = append(entries, e)
	}
	if !a.plan.Sparse {
		seen := map[string]bool{}
		have := map[string]bool{}
		var groups []entry
		for _, e := range entries {
			gk := groupKey(e.meter, e.groups)
			have[fmt.Sprint(e.bucket)+"\x00"+gk] = true
			if !seen[gk] {
				seen[gk] = true
				groups = append(groups, entry{meter: e.meter, groups: e.groups})
			}
		}
		for _, b := range a.plan.Window().Buckets(a.plan.Bucket) {
			ms := b.UnixMilli()
			for _, g := range groups {
				if !have[fmt.Sprint(ms)+"\x00"+groupKey(g.meter, g.groups)] {
					entries = append(entries, entry{bucket: ms, meter: g.meter, groups: g.groups})
				}
			}
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		x, y := entries[i], entries[j]
		if x.bucket != y.bucket {
			return x.bucket < y.bucket
		}
		if x.meter != y.meter {
			return x.meter < y.meter
		}
		for g := range x.groups {
			if x.groups[g] != y.groups[g] {
				return x.groups[g] < y.groups[g]
			}
		}
		return false
	})
	var coef *big.Rat
	if a.plan.Rescale != nil {
		coef, _ = a.plan.Rescale.rat()
	}
	out := make([]Row, len(entries))
	for i, e := range entries {
		out[i] = Row{Time: time.UnixMilli(e.bucket).UTC(), Meter: e.meter, Groups: e.groups, Value: formatNanos(e.sum, coef)}
	}
	return out
}

func groupKey(meter string, groups []string) string {
	return meter + "\x00" + strings.Join(groups, "\x00")
}

// formatNanos renders a sum of nanos, times coef when set (rounded half
// away from zero to nanos, as a SQL CAST to DECIMAL(38,9) does), as a
// plain decimal with no trailing zeros.
func formatNanos(sum record.Nanos, coef *big.Rat) string {
	n := sum.Big()
	if coef != nil {
		r := new(big.Rat).SetInt(n)
		r.Mul(r, coef)
		num, den := r.Num(), r.Denom()
		q, m := new(big.Int).QuoRem(num, den, new(big.Int))
		if new(big.Int).Mul(m, big.NewInt(2)).Cmp(den) >= 0 {
			q.Add(q, big.NewInt(1))
		}
		n = q
	}
	s := n.String()
	if len(s) <= 9 {
		s = strings.Repeat("0", 10-len(s)) + s
	}
	ip, fp := s[:len(s)-9], strings.TrimRight(s[len(s)-9:], "0")
	if fp == "" {
		return ip
	}
	return ip + "." + fp
}
