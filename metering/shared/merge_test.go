package shared

import (
	"math"
	"testing"
	"time"

	"github.com/metership/metership/metering"
)

func partialOf(agent string, entries ...Entry) loadedPartial {
	return loadedPartial{ref: PartialRef{Agent: agent, SHA256: "sha-" + agent}, p: &Partial{Agent: agent, Entries: entries}}
}

func entry(customer string, nanos int64, tags ...metering.UsageTag) Entry {
	return Entry{Series: Series{Customer: customer, Dimension: "api_calls"}, Buckets: []metering.UsageBucket{{Tags: tags, Nanos: nanos, Records: 1}}}
}

func TestDecide(t *testing.T) {
	h := hr(11)
	now := hr(12).Add(10 * time.Minute)
	team := func(v string) metering.UsageTag { return metering.UsageTag{Key: "team", Value: v} }
	type want struct {
		quantity map[string]int64 // customer -> quantity
		carry    map[string]int64 // customer -> nanos
	}
	tests := []struct {
		name     string
		prev     *Claim
		partials []loadedPartial
		now      time.Time
		want     want
	}{
		{
			name:     "sum across partials, fraction carried",
			partials: []loadedPartial{partialOf("a", entry("c1", 1_600_000_000)), partialOf("b", entry("c1", 2_700_000_000))},
			want:     want{quantity: map[string]int64{"c1": 4}, carry: map[string]int64{"c1": 300_000_000}},
		},
		{
			name:     "carry in from the previous claim",
			prev:     &Claim{Hour: hr(10), Carry: []Carry{{Series: Series{Customer: "c1", Dimension: "api_calls"}, Nanos: 600_000_000}}},
			partials: []loadedPartial{partialOf("a", entry("c1", 500_000_000))},
			want:     want{quantity: map[string]int64{"c1": 1}, carry: map[string]int64{"c1": 100_000_000}},
		},
		{
			name:     "a fraction without usage waits for the series' next hour",
			prev:     &Claim{Hour: hr(10), Carry: []Carry{{Series: Series{Customer: "c9", Dimension: "api_calls"}, Nanos: 900_000_000}}},
			partials: []loadedPartial{partialOf("a")},
			want:     want{quantity: map[string]int64{}, carry: map[string]int64{"c9": 900_000_000}},
		},
		{
			name:     "whole units carried are billed without usage",
			prev:     &Claim{Hour: hr(10), Carry: []Carry{{Series: Series{Customer: "c9", Dimension: "api_calls"}, Nanos: 2_500_000_000}}},
			partials: []loadedPartial{partialOf("a")},
			want:     want{quantity: map[string]int64{"c9": 2}, carry: map[string]int64{"c9": 500_000_000}},
		},
		{
			name:     "capped at the API's maximum, the rest carried",
			partials: []loadedPartial{partialOf("a", entry("c1", (math.MaxInt32+5)*1e9))},
			want:     want{quantity: map[string]int64{"c1": math.MaxInt32}, carry: map[string]int64{"c1": 5e9}},
		},
		{
			name:     "an hour past the window bills nothing and carries all",
			partials: []loadedPartial{partialOf("a", entry("c1", 3e9))},
			now:      hr(18).Add(time.Minute),
			want:     want{quantity: map[string]int64{}, carry: map[string]int64{"c1": 3e9}},
		},
		{
			name: "allocations split by largest remainder, summing to the quantity",
			partials: []loadedPartial{
				partialOf("a", entry("c1", 1_400_000_000, team("x"))),
				partialOf("b", entry("c1", 1_700_000_000, team("y"))),
			},
			want: want{quantity: map[string]int64{"c1": 3}, carry: map[string]int64{"c1": 100_000_000}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := now
			if !tc.now.IsZero() {
				n = tc.now
			}
			c := decide(decideInput{product: testProduct, hour: h, claimer: "a", allocate: true, window: 6 * time.Hour, now: n, prev: tc.prev, partials: tc.partials})
			got := map[string]int64{}
			for _, r := range c.Records {
				got[r.Customer] = r.Quantity
				if r.CustomerIdentifier != r.Customer {
					t.Errorf("record customer identifier %q", r.CustomerIdentifier)
				}
				var sum int64
				for _, al := range r.Allocations {
					sum += al.Quantity
				}
				if len(r.Allocations) > 0 && sum != r.Quantity {
					t.Errorf("%s: allocations sum %d, quantity %d", r.Customer, sum, r.Quantity)
				}
			}
			if len(got) != len(tc.want.quantity) {
				t.Errorf("records %v, want %v", got, tc.want.quantity)
			}
			for cust, q := range tc.want.quantity {
				if got[cust] != q {
					t.Errorf("%s: quantity %d, want %d", cust, got[cust], q)
				}
			}
			carry := map[string]int64{}
			for _, cr := range c.Carry {
				carry[cr.Customer] = cr.Nanos
			}
			if len(carry) != len(tc.want.carry) {
				t.Errorf("carry %v, want %v", carry, tc.want.carry)
			}
			for cust, n := range tc.want.carry {
				if carry[cust] != n {
					t.Errorf("%s: carry %d, want %d", cust, carry[cust], n)
				}
			}
			if len(c.Partials) != len(tc.partials) {
				t.Errorf("claim names %d partials, want %d", len(c.Partials), len(tc.partials))
			}
		})
	}
}
