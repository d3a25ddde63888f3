package metering

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// File names inside Options.Dir.
const (
	ledgerName     = "ledger.json"
	deadLetterDir  = "dead-letters"
	ledgerFormat   = "metership-metering-ledger/1"
	checksumPrefix = "crc32c:"
)

// Intent statuses.
const (
	// statusPending: persisted, not yet answered; sent (again) by every pass.
	statusPending = "pending"
	// statusAccepted: AWS accepted it (or an identical earlier call).
	statusAccepted = "accepted"
	// statusConflict: AWS holds a different quantity for the hour
	// (DuplicateRequestException, IdempotencyConflictException,
	// DuplicateRecord). Never re-sent.
	statusConflict = "conflict"
	// statusNotSubscribed: BatchMeterUsage said CustomerNotSubscribed; the
	// usage went to a dead-letter file. Never re-sent.
	statusNotSubscribed = "not_subscribed"
	// statusDryRun: dry_run is on; the call was validated, not recorded.
	statusDryRun = "dry_run"
	// statusExpired: the hour fell out of the API's window before it was
	// accepted; the quantity was moved to the oldest reportable hour.
	statusExpired = "expired"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// tag is one allocation tag.
type tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// bucket is the usage of one allocation tag set within an hour of a key.
type bucket struct {
	Tags    []tag `json:"tags,omitempty"`
	Nanos   int64 `json:"nanos"`
	Records int64 `json:"records"`
}

// bucketKey identifies a tag set independent of tag order.
func bucketKey(tags []tag) string {
	if len(tags) == 0 {
		return ""
	}
	parts := make([]string, len(tags))
	for i, t := range tags {
		parts[i] = t.Key + "\x00" + t.Value
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x01")
}

// allocation is one UsageAllocation of an intent.
type allocation struct {
	Quantity int64 `json:"quantity"`
	Tags     []tag `json:"tags,omitempty"`
}

// intent is one usage record the reporter decided to send, persisted before
// the first call so a restart re-sends exactly it.
type intent struct {
	ID                   string       `json:"id"`
	Op                   string       `json:"op"`
	Product              string       `json:"product"`
	Hour                 time.Time    `json:"hour"`
	Customer             string       `json:"customer,omitempty"`
	CustomerAWSAccountID string       `json:"customer_aws_account_id,omitempty"`
	CustomerIdentifier   string       `json:"customer_identifier,omitempty"`
	License              string       `json:"license_arn,omitempty"`
	Dimension            string       `json:"dimension"`
	Quantity             int64        `json:"quantity"`
	Allocations          []allocation `json:"allocations,omitempty"`
	Buckets              []*bucket    `json:"buckets,omitempty"` // op shared: the exact usage handed over
	ClientToken          string       `json:"client_token,omitempty"`
	DryRun               bool         `json:"dry_run,omitempty"`
	Records              int64        `json:"records"`
	Status               string       `json:"status"`
	Created              time.Time    `json:"created"`
	Resolved             time.Time    `json:"resolved,omitzero"`
	RecordID             string       `json:"metering_record_id,omitempty"`
	Error                string       `json:"error,omitempty"`
}

// seriesKey is what gets one usage record per hour: the dimension, and in
// batch mode the customer and license too.
type seriesKey struct {
	customer, license, dimension string
}

// series is the ledger state of one key.
type series struct {
	key seriesKey
	// carry is the nanos not yet reported: the fraction below one unit
	// (and anything above maxQuantity) of the hours reported so far.
	carry int64
	// prunedBefore: hours before it had intents that were pruned; they
	// count as reported.
	prunedBefore int64
	// open holds usage not yet in an intent: hour -> bucketKey -> bucket.
	open map[int64]map[string]*bucket
	// intents holds the intents of this key by hour, at most one each.
	intents map[int64]*intent
}

// hasIntent reports whether hour h of the key is reported or intended.
func (s *series) hasIntent(h int64) bool {
	if h < s.prunedBefore {
		return true
	}
	_, ok := s.intents[h]
	return ok
}

// firstFree is the first hour at or after h with no intent: where usage of
// an already reported hour goes.
func (s *series) firstFree(h int64) int64 {
	if h < s.prunedBefore {
		h = s.prunedBefore
	}
	for s.hasIntent(h) {
		h += hourSeconds
	}
	return h
}

// addUsage adds nanos and records to hour h under tags.
func (s *series) addUsage(h int64, tags []tag, nanos, records int64) {
	hour := s.open[h]
	if hour == nil {
		hour = make(map[string]*bucket)
		s.open[h] = hour
	}
	k := bucketKey(tags)
	b := hour[k]
	if b == nil {
		b = &bucket{Tags: tags}
		hour[k] = b
	}
	b.Nanos = addSat(b.Nanos, nanos)
	b.Records += records
}

// moveHour moves all open usage of hour from into hour to.
func (s *series) moveHour(from, to int64) {
	for _, b := range s.open[from] {
		s.addUsage(to, b.Tags, b.Nanos, b.Records)
	}
	delete(s.open, from)
}

// customerState records a customer BatchMeterUsage called not subscribed.
type customerState struct {
	Customer   string    `json:"customer"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
	Records    int       `json:"records"`
	LastIntent string    `json:"last_intent"`
}

// Reasons usage is recorded as unbilled.
const (
	// unbilledMaxCarry: the hour was older than metering.max_carry when
	// its records were counted.
	unbilledMaxCarry = "max_carry"
)

// unbilledKey groups unbilled usage: one entry per key, hour and reason.
type unbilledKey struct {
	key    seriesKey
	hour   int64
	reason string
}

// unbilledUsage is usage counted but deliberately not billed, kept in the
// ledger so it can be seen (metering status) and billed by hand.
type unbilledUsage struct {
	Customer  string    `json:"customer,omitempty"`
	License   string    `json:"license_arn,omitempty"`
	Dimension string    `json:"dimension"`
	Hour      time.Time `json:"hour"`
	Reason    string    `json:"reason"`
	Nanos     int64     `json:"nanos"`
	Records   int64     `json:"records"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
}

// ledger is the whole persisted state. Meter.mu guards it.
type ledger struct {
	instance      string
	created       time.Time
	zeroFrom      int64
	counted       map[uint64]struct{}
	series        map[seriesKey]*series
	notSubscribed map[string]*customerState
	unbilled      map[unbilledKey]*unbilledUsage
}

func newLedger(instance string, now time.Time) *ledger {
	return &ledger{
		instance:      instance,
		created:       now.UTC(),
		zeroFrom:      floorHour(now),
		counted:       make(map[uint64]struct{}),
		series:        make(map[seriesKey]*series),
		notSubscribed: make(map[string]*customerState),
		unbilled:      make(map[unbilledKey]*unbilledUsage),
	}
}

// seriesFor returns the state of key k, creating it.
func (l *ledger) seriesFor(k seriesKey) *series {
	s := l.series[k]
	if s == nil {
		s = &series{key: k, open: make(map[int64]map[string]*bucket), intents: make(map[int64]*intent)}
		l.series[k] = s
	}
	return s
}

// sortedSeries returns the series in a stable order.
func (l *ledger) sortedSeries() []*series {
	out := make([]*series, 0, len(l.series))
	for _, s := range l.series {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].key, out[j].key
		if a.dimension != b.dimension {
			return a.dimension < b.dimension
		}
		if a.customer != b.customer {
			return a.customer < b.customer
		}
		return a.license < b.license
	})
	return out
}

// ledgerFile is the JSON form of the ledger.
type ledgerFile struct {
	Format        string           `json:"format"`
	Instance      string           `json:"instance"`
	Created       time.Time        `json:"created"`
	ZeroFrom      time.Time        `json:"zero_from"`
	Counted       []uint64         `json:"counted"`
	Series        []seriesFile     `json:"series"`
	Intents       []*intent        `json:"intents"`
	NotSubscribed []*customerState `json:"customers_not_subscribed"`
	// Unbilled is omitted when empty, so ledgers without it stay readable
	// by versions before it.
	Unbilled []*unbilledUsage `json:"unbilled,omitempty"`
}

type seriesFile struct {
	Customer     string     `json:"customer,omitempty"`
	License      string     `json:"license_arn,omitempty"`
	Dimension    string     `json:"dimension"`
	CarryNanos   int64      `json:"carry_nanos"`
	PrunedBefore time.Time  `json:"pruned_before,omitzero"`
	Open         []openHour `json:"open"`
}

type openHour struct {
	Hour    time.Time `json:"hour"`
	Buckets []*bucket `json:"buckets"`
}

// encode renders the ledger deterministically, followed by a line with the
// CRC-32C of the JSON so a damaged file is detected on load.
func (l *ledger) encode() ([]byte, error) {
	f := ledgerFile{
		Format:        ledgerFormat,
		Instance:      l.instance,
		Created:       l.created,
		ZeroFrom:      hourTime(l.zeroFrom),
		Counted:       make([]uint64, 0, len(l.counted)),
		Series:        []seriesFile{},
		Intents:       []*intent{},
		NotSubscribed: []*customerState{},
	}
	for seq := range l.counted {
		f.Counted = append(f.Counted, seq)
	}
	slices.Sort(f.Counted)
	for _, s := range l.sortedSeries() {
		sf := seriesFile{Customer: s.key.customer, License: s.key.license, Dimension: s.key.dimension, CarryNanos: s.carry, Open: []openHour{}}
		if s.prunedBefore != 0 {
			sf.PrunedBefore = hourTime(s.prunedBefore)
		}
		for _, h := range slices.Sorted(maps.Keys(s.open)) {
			oh := openHour{Hour: hourTime(h)}
			for _, k := range slices.Sorted(maps.Keys(s.open[h])) {
				oh.Buckets = append(oh.Buckets, s.open[h][k])
			}
			sf.Open = append(sf.Open, oh)
		}
		f.Series = append(f.Series, sf)
		for _, h := range slices.Sorted(maps.Keys(s.intents)) {
			f.Intents = append(f.Intents, s.intents[h])
		}
	}
	sort.SliceStable(f.Intents, func(i, j int) bool { return f.Intents[i].Hour.Before(f.Intents[j].Hour) })
	for _, c := range l.notSubscribed {
		f.NotSubscribed = append(f.NotSubscribed, c)
	}
	sort.Slice(f.NotSubscribed, func(i, j int) bool { return f.NotSubscribed[i].Customer < f.NotSubscribed[j].Customer })
	for _, u := range l.unbilled {
		f.Unbilled = append(f.Unbilled, u)
	}
	sort.Slice(f.Unbilled, func(i, j int) bool {
		a, b := f.Unbilled[i], f.Unbilled[j]
		if !a.Hour.Equal(b.Hour) {
			return a.Hour.Before(b.Hour)
		}
		if a.Dimension != b.Dimension {
			return a.Dimension < b.Dimension
		}
		if a.Customer != b.Customer {
			return a.Customer < b.Customer
		}
		if a.License != b.License {
			return a.License < b.License
		}
		return a.Reason < b.Reason
	})
	body, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("metering: encode ledger: %w", err)
	}
	body = append(body, '\n')
	return fmt.Appendf(body, "%s%08x\n", checksumPrefix, crc32.Checksum(body, castagnoli)), nil
}

// decodeLedger parses and verifies a ledger file.
func decodeLedger(data []byte) (*ledger, error) {
	i := bytes.LastIndex(data, []byte("\n"+checksumPrefix))
	if i < 0 {
		return nil, fmt.Errorf("%w: no checksum line", ErrCorruptLedger)
	}
	body, sum := data[:i+1], strings.TrimSpace(string(data[i+1+len(checksumPrefix):]))
	if fmt.Sprintf("%08x", crc32.Checksum(body, castagnoli)) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorruptLedger)
	}
	var f ledgerFile
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptLedger, err)
	}
	if f.Format != ledgerFormat {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrCorruptLedger, f.Format, ledgerFormat)
	}
	l := newLedger(f.Instance, f.Created)
	l.zeroFrom = f.ZeroFrom.Unix()
	for _, seq := range f.Counted {
		l.counted[seq] = struct{}{}
	}
	for _, sf := range f.Series {
		s := l.seriesFor(seriesKey{customer: sf.Customer, license: sf.License, dimension: sf.Dimension})
		s.carry = sf.CarryNanos
		if !sf.PrunedBefore.IsZero() {
			s.prunedBefore = sf.PrunedBefore.Unix()
		}
		for _, oh := range sf.Open {
			for _, b := range oh.Buckets {
				s.addUsage(oh.Hour.Unix(), b.Tags, b.Nanos, b.Records)
			}
		}
	}
	for _, in := range f.Intents {
		s := l.seriesFor(seriesKey{customer: in.Customer, license: in.License, dimension: in.Dimension})
		h := in.Hour.Unix()
		if _, dup := s.intents[h]; dup {
			return nil, fmt.Errorf("%w: two intents for %s %s", ErrCorruptLedger, in.Dimension, in.Hour.Format(time.RFC3339))
		}
		s.intents[h] = in
	}
	for _, c := range f.NotSubscribed {
		l.notSubscribed[c.Customer] = c
	}
	for _, u := range f.Unbilled {
		k := unbilledKey{key: seriesKey{customer: u.Customer, license: u.License, dimension: u.Dimension}, hour: u.Hour.Unix(), reason: u.Reason}
		l.unbilled[k] = u
	}
	return l, nil
}

// loadLedger reads Dir/ledger.json; a missing file is a new ledger.
func loadLedger(dir, instance string, now time.Time) (*ledger, bool, error) {
	p := filepath.Join(dir, ledgerName)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return newLedger(instance, now), false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("metering: read ledger: %w", err)
	}
	l, err := decodeLedger(data)
	if err != nil {
		return nil, false, fmt.Errorf("metering: %s: %w", p, err)
	}
	return l, true, nil
}
