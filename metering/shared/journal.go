package shared

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/metership/metership/internal/fsutil"
	"github.com/metership/metership/metering"
)

// journalName is the agent's local state in Config.Dir, replaced whole
// (temp, fsync, rename, fsync dir) on every change.
const (
	journalName   = "shared.json"
	journalFormat = "metership-shared-journal/1"
)

// ErrCorruptJournal is returned by New when the journal does not parse.
var ErrCorruptJournal = errors.New("shared: corrupt journal")

// States of a written partial.
const (
	stateWritten = "written" // in the store, its hour not claimed yet
	stateMerged  = "merged"  // named by its hour's claim
	stateCarried = "carried" // not named: its usage went to a later partial
)

// writtenPartial is a partial this agent wrote; its entries are kept until
// it is merged or carried.
type writtenPartial struct {
	Hour      time.Time `json:"hour"`
	SHA256    string    `json:"sha256"`
	State     string    `json:"state"`
	CarriedTo time.Time `json:"carried_to,omitzero"`
	Claimer   string    `json:"claimer,omitempty"`  // merged: who claimed its hour
	Answered  bool      `json:"answered,omitempty"` // merged: the claim's result exists
	Entries   []Entry   `json:"entries,omitempty"`
}

// journal is what an agent must not forget across restarts.
type journal struct {
	Format  string    `json:"format"`
	Agent   string    `json:"agent"`
	Product string    `json:"product"`
	Started time.Time `json:"started"`
	// NextHour is the first hour without a written partial; Cut the
	// ledger's last closure cut (hours before it are closed here).
	NextHour time.Time `json:"next_hour"`
	Cut      time.Time `json:"cut"`
	// Taken holds the IDs of the last hand-over (with their hours): the
	// only one the ledger can hand again.
	Taken map[string]time.Time `json:"taken"`
	// Open is usage per hour not in a written partial yet.
	Open map[string][]Entry `json:"open"`
	// CarriedFrom lists, per open hour, the late partials carried into it.
	CarriedFrom map[string][]time.Time `json:"carried_from"`
	Written     []*writtenPartial      `json:"written"`
}

func hourName(h time.Time) string { return h.UTC().Format(hourLayout) }

// loadJournal reads Dir/shared.json, or starts one. A new agent's first
// partial is for the hour before the one it starts in: that hour may be
// unclaimed still, and its empty partial spares the claimers a wait.
func loadJournal(dir, agent, product string, now time.Time) (*journal, error) {
	data, err := os.ReadFile(filepath.Join(dir, journalName))
	if errors.Is(err, fs.ErrNotExist) {
		// Cut stays zero until the ledger's first pass: until then,
		// claimers wait for this agent (its backlog may hold any hour).
		start := now.UTC().Truncate(time.Hour).Add(-time.Hour)
		return &journal{Format: journalFormat, Agent: agent, Product: product, Started: now.UTC(),
			NextHour: start, Taken: map[string]time.Time{}, Open: map[string][]Entry{},
			CarriedFrom: map[string][]time.Time{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shared: read journal: %w", err)
	}
	var j journal
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil || j.Format != journalFormat {
		return nil, fmt.Errorf("%w: %s: %v (format %q)", ErrCorruptJournal, filepath.Join(dir, journalName), err, j.Format) //nolint:errorlint // err may be nil (a format mismatch); ErrCorruptJournal is what callers test
	}
	if j.Agent != agent || j.Product != product {
		return nil, fmt.Errorf("%w: %s belongs to agent %q, product %q (now %q, %q): its usage would be lost to the new id",
			ErrCorruptJournal, filepath.Join(dir, journalName), j.Agent, j.Product, agent, product)
	}
	if j.Taken == nil {
		j.Taken = map[string]time.Time{}
	}
	if j.Open == nil {
		j.Open = map[string][]Entry{}
	}
	if j.CarriedFrom == nil {
		j.CarriedFrom = map[string][]time.Time{}
	}
	return &j, nil
}

func (j *journal) save(dir string) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("shared: encode journal: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("shared: %w", err)
	}
	if err := fsutil.WriteFileAtomic(dir, journalName, data, 0o644, nil); err != nil {
		return fmt.Errorf("shared: write journal: %w", err)
	}
	return nil
}

// target is where usage of hour h goes: h itself unless this agent wrote
// its partial of h already, then the next hour it will write.
func (j *journal) target(h time.Time) time.Time {
	for _, w := range j.Written {
		if w.Hour.Equal(h) {
			return j.NextHour
		}
	}
	return h
}

// addOpen adds entries to open hour h.
func (j *journal) addOpen(h time.Time, entries []Entry) {
	if len(entries) == 0 {
		return
	}
	name := hourName(h)
	j.Open[name] = addEntries(j.Open[name], entries)
}

// prune forgets settled partials old enough never to matter.
func (j *journal) prune(now time.Time) bool {
	changed := false
	keep := j.Written[:0]
	for _, w := range j.Written {
		if w.State != stateWritten && now.Sub(w.Hour) > 48*time.Hour {
			changed = true
			continue
		}
		keep = append(keep, w)
	}
	j.Written = keep
	return changed
}

// addEntries merges src into dst per series and tag set, in series order.
func addEntries(dst, src []Entry) []Entry {
	idx := make(map[Series]int, len(dst))
	for i, e := range dst {
		idx[e.Series] = i
	}
	for _, e := range src {
		i, ok := idx[e.Series]
		if !ok {
			dst = append(dst, Entry{Series: e.Series})
			i = len(dst) - 1
			idx[e.Series] = i
		}
		for _, b := range e.Buckets {
			dst[i].Buckets = addBucket(dst[i].Buckets, b, 1)
		}
	}
	sort.Slice(dst, func(a, b int) bool { return dst[a].Series.less(dst[b].Series) })
	return dst
}

// addBucket adds (sign 1) or subtracts (sign -1) b into the bucket of its
// tag set, keeping buckets in key order and dropping emptied ones.
func addBucket(bs []metering.UsageBucket, b metering.UsageBucket, sign int64) []metering.UsageBucket {
	k := metering.BucketKey(b.Tags)
	for i := range bs {
		if metering.BucketKey(bs[i].Tags) == k {
			bs[i].Nanos += sign * b.Nanos
			bs[i].Records += sign * b.Records
			if bs[i].Nanos <= 0 && bs[i].Records <= 0 {
				bs = append(bs[:i], bs[i+1:]...)
			}
			return bs
		}
	}
	if sign < 0 {
		return bs
	}
	bs = append(bs, b)
	sort.Slice(bs, func(x, y int) bool { return metering.BucketKey(bs[x].Tags) < metering.BucketKey(bs[y].Tags) })
	return bs
}

// subtractEntries returns have minus written: the usage of an hour that
// its written partial does not hold (usage only grows, so nothing is
// negative).
func subtractEntries(have, written []Entry) []Entry {
	var out []Entry
	for _, e := range have {
		out = append(out, Entry{Series: e.Series, Buckets: append([]metering.UsageBucket(nil), e.Buckets...)})
	}
	idx := make(map[Series]int, len(out))
	for i, e := range out {
		idx[e.Series] = i
	}
	for _, w := range written {
		i, ok := idx[w.Series]
		if !ok {
			continue
		}
		for _, b := range w.Buckets {
			out[i].Buckets = addBucket(out[i].Buckets, b, -1)
		}
	}
	rest := out[:0]
	for _, e := range out {
		if len(e.Buckets) > 0 {
			rest = append(rest, e)
		}
	}
	return rest
}
