package shared

import (
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/metership/metership/metering"
)

// loadedPartial is a partial as read from the store, with its reference.
type loadedPartial struct {
	ref PartialRef
	p   *Partial
}

// decideInput is what a claim of one hour is computed from.
type decideInput struct {
	product    string
	hour       time.Time
	claimer    string
	accountIDs bool
	allocate   bool // metering.allocation_tags are set
	window     time.Duration
	lateness   time.Duration
	now        time.Time
	prev       *Claim // claim of hour-1; nil for the first claim
	partials   []loadedPartial
	// expired are records of earlier claims that expired unanswered, not
	// absorbed by prev's chain yet: they join the carry.
	expired  []*Expired
	keepFrom time.Time // Absorbed entries older than this are dropped
}

// decide merges the partials of an hour with the previous claim's carry
// into the hour's claim. Per series: total = carry + the partials' exact
// nanos; quantity = floor(total), capped at MaxQuantity; the rest is the
// series' carry. A record is made for every series with usage in the hour
// and for every series whose carry holds a whole unit; a series with only
// a fraction carried keeps it for its next hour with usage, as the
// single-agent ledger does. An hour already past the window when claimed
// bills nothing: its usage is all carried into the next claim (AWS's
// guidance: report it with the oldest hour still accepted).
func decide(in decideInput) *Claim {
	c := &Claim{
		Format: claimFormat, Product: in.product, Hour: in.hour.UTC(), Claimer: in.claimer,
		Created: in.now.UTC(), Partials: []PartialRef{}, Records: []Record{}, Carry: []Carry{},
	}
	carry := map[Series]int64{}
	if in.prev != nil {
		h := in.prev.Hour
		c.Previous = &h
		for _, cr := range in.prev.Carry {
			carry[cr.Series] = addSat(carry[cr.Series], cr.Nanos)
		}
		for _, g := range in.prev.Absorbed {
			if !g.Before(in.keepFrom) {
				c.Absorbed = append(c.Absorbed, g)
			}
		}
	}
	for _, e := range in.expired {
		for _, cr := range e.Records {
			carry[cr.Series] = addSat(carry[cr.Series], cr.Nanos)
		}
		c.Absorbed = append(c.Absorbed, e.Hour)
	}
	type usage struct {
		buckets map[string]*metering.UsageBucket
	}
	merged := map[Series]*usage{}
	parts := slices.Clone(in.partials)
	sort.Slice(parts, func(i, j int) bool { return parts[i].ref.Agent < parts[j].ref.Agent })
	for _, lp := range parts {
		c.Partials = append(c.Partials, lp.ref)
		for _, e := range lp.p.Entries {
			u := merged[e.Series]
			if u == nil {
				u = &usage{buckets: map[string]*metering.UsageBucket{}}
				merged[e.Series] = u
			}
			for _, b := range e.Buckets {
				k := metering.BucketKey(b.Tags)
				mb := u.buckets[k]
				if mb == nil {
					mb = &metering.UsageBucket{Tags: b.Tags}
					u.buckets[k] = mb
				}
				mb.Nanos = addSat(mb.Nanos, b.Nanos)
				mb.Records += b.Records
			}
		}
	}
	c.PastWindow = in.hour.Before(metering.OldestReportable(in.now, in.window, in.lateness))
	all := map[Series]bool{}
	for s := range carry {
		all[s] = true
	}
	for s := range merged {
		all[s] = true
	}
	series := slices.Collect(maps.Keys(all))
	sort.Slice(series, func(i, j int) bool { return series[i].less(series[j]) })
	for _, s := range series {
		in0 := carry[s]
		u := merged[s]
		var nanos, records int64
		var buckets []metering.UsageBucket
		if u != nil {
			for _, k := range slices.Sorted(maps.Keys(u.buckets)) {
				b := *u.buckets[k]
				buckets = append(buckets, b)
				nanos = addSat(nanos, b.Nanos)
				records += b.Records
			}
		}
		total := addSat(in0, nanos)
		if c.PastWindow || (u == nil && total < metering.NanosPerUnit) {
			if total > 0 {
				c.Carry = append(c.Carry, Carry{Series: s, Nanos: total})
			}
			continue
		}
		q := min(total/metering.NanosPerUnit, metering.MaxQuantity)
		rest := total - q*metering.NanosPerUnit
		r := Record{Series: s, Quantity: q, Nanos: nanos, CarryIn: in0, Records: records}
		if in.accountIDs {
			r.CustomerAWSAccountID = s.Customer
		} else {
			r.CustomerIdentifier = s.Customer
		}
		if in.allocate {
			r.Allocations = metering.Allocate(q, buckets)
		}
		c.Records = append(c.Records, r)
		if rest > 0 {
			c.Carry = append(c.Carry, Carry{Series: s, Nanos: rest})
		}
	}
	return c
}
