package shared

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metership/metership/metering"
	"github.com/metership/metership/metering/emulator"
	"github.com/metership/metership/ship"
)

// Three replicas see overlapping customers; each hour gets exactly one
// record per (customer, dimension), with the merged total and the carry.
func TestThreeAgentsMergeOverlappingCustomers(t *testing.T) {
	threeAgents(t, newWorld(t))
}

// The same with the state in a directory (file://).
func TestThreeAgentsFileState(t *testing.T) {
	w := newWorld(t)
	w.state = "file://" + t.TempDir() + "/state"
	threeAgents(t, w)
}

func threeAgents(t *testing.T, w *world) {
	w.clk.Set(hr(8).Add(30 * time.Minute)) // the agents start in hour 8
	ids := []string{"pod-a", "pod-b", "pod-c"}
	var agents []*Agent
	for _, id := range ids {
		agents = append(agents, w.agent(id, tempDir(t, id)))
	}
	totals := map[key]int64{}
	hourly(t, w, agents, 8, 11, func(i, h int) []metering.HourUsage {
		var us []metering.HourUsage
		for c := range 4 {
			if (c+i+h)%3 == 0 {
				continue // not every pod sees every customer every hour
			}
			cust := fmt.Sprintf("cust-%d", c)
			n := int64(1+c+i) * 333_333_333 // thirds: fractions carry
			us = append(us, usage(hr(h), cust, "api_calls", n, 3))
			totals[key{hr(h), cust, "api_calls"}] += n
		}
		return us
	}, false)
	checkBilled(t, w.em, expected(totals))
	for h := 8; h <= 11; h++ {
		c := readClaimT(t, agents[0], hr(h))
		if len(c.Partials) != 3 {
			t.Errorf("claim %d merged %d partials, want 3", h, len(c.Partials))
		}
	}
	for _, a := range agents {
		if !a.Settled() {
			t.Errorf("%s not settled", a.cfg.Agent)
		}
	}
}

// hourly runs hours from..to as the replicas' Run loops would: at 6
// minutes past each next hour every agent hands the hour's usage
// (usageFor(agent index, hour)), heartbeats, and steps (concurrently when
// race is set).
func hourly(t *testing.T, w *world, agents []*Agent, from, to int, usageFor func(i, h int) []metering.HourUsage, race bool) {
	t.Helper()
	for h := from; h <= to; h++ {
		w.clk.Set(hr(h + 1).Add(6 * time.Minute))
		beat(t, agents...)
		for i, a := range agents {
			if err := a.Hand(context.Background(), hr(h+1), usageFor(i, h)); err != nil {
				t.Fatal(err)
			}
		}
		if !race {
			steps(t, 2, agents...)
			continue
		}
		for _, a := range agents {
			if err := a.writePartials(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 {
			var wg sync.WaitGroup
			for _, a := range agents {
				wg.Go(func() {
					if err := a.Step(context.Background()); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
		}
	}
}

func readClaimT(t *testing.T, a *Agent, h time.Time) *Claim {
	t.Helper()
	c, err := a.readClaim(context.Background(), h)
	if err != nil {
		t.Fatalf("claim %s: %v", h.Format(hourLayout), err)
	}
	return c
}

// A live replica that has not written its partial holds the claim back
// until merge_grace; a dead one (stale heartbeat) does not.
func TestClaimWaitsForLiveReplicasOnly(t *testing.T) {
	w := newWorld(t)
	w.clk.Set(hr(11).Add(50 * time.Minute))
	a := w.agent("pod-a", tempDir(t, "a"))
	b := w.agent("pod-b", tempDir(t, "b"))
	steps(t, 1, a, b) // both heartbeat; oldest open hour 10
	w.clk.Set(hr(12).Add(6 * time.Minute))
	beat(t, b)
	if err := a.Hand(context.Background(), hr(12), []metering.HourUsage{usage(hr(11), "c1", "api_calls", 2e9, 1)}); err != nil {
		t.Fatal(err)
	}
	steps(t, 1, a)
	if _, err := a.readClaim(context.Background(), hr(11)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("hour 11 claimed while pod-b, alive, had not written: %v", err)
	}
	// pod-b writes (nothing to report): the hour is claimed at once.
	if err := b.Hand(context.Background(), hr(12), nil); err != nil {
		t.Fatal(err)
	}
	steps(t, 1, b, a)
	c := readClaimT(t, a, hr(11))
	if len(c.Partials) != 2 || len(c.Records) != 1 || c.Records[0].Quantity != 2 {
		t.Fatalf("claim: %+v", c)
	}
	// Hour 12: pod-b goes silent; after 3 ticks it is not waited for.
	w.clk.Set(hr(13).Add(6 * time.Minute))
	if err := a.Hand(context.Background(), hr(13), []metering.HourUsage{usage(hr(12), "c1", "api_calls", 1e9, 1)}); err != nil {
		t.Fatal(err)
	}
	steps(t, 1, a)
	if c := readClaimT(t, a, hr(12)); len(c.Partials) != 1 {
		t.Fatalf("claim 12: %+v", c)
	}
	checkBilled(t, w.em, map[key]int64{{hr(11), "c1", "api_calls"}: 2, {hr(12), "c1", "api_calls"}: 1})
}

// Two replicas race to claim and send the same hours, many times over:
// one claim per hour, naming both partials, one record per key, no
// DuplicateRecord.
func TestRacingClaimers(t *testing.T) {
	w := newWorld(t)
	for round := range 10 {
		prefix := fmt.Sprintf("round-%d", round)
		w.state = "s3://" + w.s3.Bucket() + "/" + prefix
		w.clk.Set(hr(8).Add(10 * time.Minute))
		agents := []*Agent{w.agent("pod-a", tempDir(t, prefix+"a")), w.agent("pod-b", tempDir(t, prefix+"b"))}
		totals := map[key]int64{}
		hourly(t, w, agents, 8, 11, func(i, h int) []metering.HourUsage {
			cust := fmt.Sprintf("r%d-c%d", round, h%2)
			n := int64(i+1) * 700_000_000
			totals[key{hr(h), cust, "api_calls"}] += n
			return []metering.HourUsage{usage(hr(h), cust, "api_calls", n, 1)}
		}, true)
		for h := 8; h <= 11; h++ {
			if c := readClaimT(t, agents[0], hr(h)); len(c.Partials) != 2 {
				t.Fatalf("round %d: claim %d names %d partials", round, h, len(c.Partials))
			}
		}
		want := expected(totals)
		got := accepted(t, w.em.State())
		for k, q := range want {
			if got[k] != q {
				t.Fatalf("round %d: %+v billed %d, want %d", round, k, got[k], q)
			}
		}
	}
	if st := w.em.State(); len(st.Conflicts) > 0 || st.RecordStatuses[emulator.StatusDuplicateRecord] > 0 {
		t.Fatalf("conflicts: %+v %v", st.Conflicts, st.RecordStatuses)
	}
}

// A replica down for two hours comes back with usage of those hours: its
// late partials are carried into its next open hour; over all hours every
// series is billed floor(its total), once.
func TestLateReplicaCarried(t *testing.T) {
	w := newWorld(t)
	w.clk.Set(hr(9).Add(30 * time.Minute))
	a := w.agent("pod-a", tempDir(t, "a"))
	bDir := tempDir(t, "b")
	b := w.agent("pod-b", bDir)
	steps(t, 1, a, b)
	all := map[string]int64{}
	hand := func(ag *Agent, cut time.Time, us ...metering.HourUsage) {
		t.Helper()
		for _, u := range us {
			all[u.Customer] += u.Buckets[0].Nanos
		}
		if err := ag.Hand(context.Background(), cut, us); err != nil {
			t.Fatal(err)
		}
	}
	// pod-b stops at 9:30. pod-a reports hours 9, 10, 11 alone.
	for h := 10; h <= 12; h++ {
		w.clk.Set(hr(h).Add(20 * time.Minute))
		hand(a, hr(h), usage(hr(h-1), "c1", "api_calls", 1_500_000_000, 2))
		steps(t, 1, a)
	}
	for h := 9; h <= 11; h++ {
		if c := readClaimT(t, a, hr(h)); len(c.Partials) != 1 {
			t.Fatalf("claim %d: %+v", h, c.Partials)
		}
	}
	// pod-b is back at 12:25 (a restart: same journal) with usage of
	// hours 9 and 10 it had buffered.
	b = w.agent("pod-b", bDir)
	hand(b, hr(12), usage(hr(9), "c1", "api_calls", 2_250_000_000, 3), usage(hr(10), "c2", "api_calls", 4e9, 1))
	steps(t, 1, b)
	if got := late(t, b); got != 2 {
		t.Fatalf("%d partials carried, want 2", got)
	}
	// Hour 12 closes: pod-b's partial 12 carries hours 9 and 10.
	w.clk.Set(hr(13).Add(6 * time.Minute))
	beat(t, a, b)
	hand(a, hr(13), usage(hr(12), "c1", "api_calls", 1e9, 1))
	hand(b, hr(13))
	steps(t, 2, a, b)
	c12 := readClaimT(t, a, hr(12))
	if len(c12.Partials) != 2 {
		t.Fatalf("claim 12: %+v", c12.Partials)
	}
	st := w.em.State()
	if len(st.Conflicts) > 0 {
		t.Fatalf("conflicts: %+v", st.Conflicts)
	}
	billed := map[string]int64{}
	for k, q := range accepted(t, st) {
		billed[k.customer] += q
	}
	for c, n := range all {
		if billed[c] != n/1e9 {
			t.Errorf("%s billed %d over all hours, want %d", c, billed[c], n/1e9)
		}
	}
	if !a.Settled() || !b.Settled() {
		t.Error("not settled")
	}
}

func late(t *testing.T, a *Agent) int {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, w := range a.j.Written {
		if w.State == stateCarried {
			n++
		}
	}
	return n
}

// Hand is idempotent per usage id, as a ledger re-hands after a crash.
func TestHandIdempotent(t *testing.T) {
	w := newWorld(t)
	reg := prometheus.NewRegistry()
	a := w.agent("pod-a", tempDir(t, "a"), func(c *Config) { c.Registerer = reg })
	u := usage(hr(11), "c1", "api_calls", 3e9, 1)
	for range 3 {
		if err := a.Hand(context.Background(), hr(12), []metering.HourUsage{u}); err != nil {
			t.Fatal(err)
		}
	}
	steps(t, 2, a)
	checkBilled(t, w.em, map[key]int64{{hr(11), "c1", "api_calls"}: 3})
	for name, want := range map[string]float64{
		"metership_metering_shared_hours_claimed_total": 1,
		"metership_metering_shared_records_sent_total":  1,
		"metership_metering_shared_hours_unsettled":     0,
	} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			found = true
			m := mf.GetMetric()[0]
			if v := m.GetCounter().GetValue() + m.GetGauge().GetValue(); v != want {
				t.Errorf("%s = %v, want %v", name, v, want)
			}
		}
		if !found {
			t.Errorf("no %s", name)
		}
	}
}

func TestFileStoreCreateOnce(t *testing.T) {
	s, err := Open(context.Background(), "file://"+t.TempDir()+"/state", ship.S3Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Go(func() {
			ok, err := s.Create(ctx, "claims/p/2025-06-15T11.json", []byte(fmt.Sprint(i)))
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d creates won", wins)
	}
	objs, err := s.List(ctx, "claims/p/", "")
	if err != nil || len(objs) != 1 {
		t.Fatalf("list: %v %v", objs, err)
	}
	if _, err := s.Get(ctx, "claims/p/none.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
}

// A claim that AWS never answered before its hour left the window is
// recorded Expired, and the next claim made bills its records, once.
func TestExpiredClaimBilledByNextClaim(t *testing.T) {
	w := newWorld(t)
	w.clk.Set(hr(11).Add(10 * time.Minute))
	a := w.agent("pod-a", tempDir(t, "a"))
	w.clk.Set(hr(12).Add(6 * time.Minute))
	w.em.InjectFaults(emulator.Faults{DisabledAPI: true})
	if err := a.Hand(context.Background(), hr(12), []metering.HourUsage{usage(hr(11), "c1", "api_calls", 3e9, 3)}); err != nil {
		t.Fatal(err)
	}
	if err := a.Step(context.Background()); err == nil {
		t.Fatal("step succeeded with the API disabled")
	}
	readClaimT(t, a, hr(11))
	w.em.InjectFaults(emulator.Faults{})
	for h := 18; h <= 19; h++ { // 11:00 is out of the 6h window now
		w.clk.Set(hr(h).Add(6 * time.Minute))
		if err := a.Hand(context.Background(), hr(h), []metering.HourUsage{usage(hr(h-1), "c2", "api_calls", 1e9, 1)}); err != nil {
			t.Fatal(err)
		}
		steps(t, 1, a)
	}
	c18 := readClaimT(t, a, hr(18))
	if len(c18.Absorbed) != 1 || !c18.Absorbed[0].Equal(hr(11)) {
		t.Fatalf("claim 18 absorbed %v", c18.Absorbed)
	}
	checkBilled(t, w.em, map[key]int64{
		{hr(17), "c2", "api_calls"}: 1,
		{hr(18), "c2", "api_calls"}: 1,
		{hr(18), "c1", "api_calls"}: 3,
	})
	w.clk.Set(hr(20).Add(6 * time.Minute))
	if err := a.Hand(context.Background(), hr(20), nil); err != nil {
		t.Fatal(err)
	}
	steps(t, 1, a)
	if c := readClaimT(t, a, hr(19)); len(c.Records) != 0 || len(c.Absorbed) != 1 {
		t.Fatalf("claim 19 billed the expired records again: %+v", c)
	}
}

// A record AWS refuses (here an unknown dimension) fails its whole call:
// the claim's records are then sent one by one, the others are billed,
// and the refused one is recorded in the result, not retried forever.
func TestRefusedRecordIsolated(t *testing.T) {
	w := newWorld(t)
	w.clk.Set(hr(11).Add(10 * time.Minute))
	a := w.agent("pod-a", tempDir(t, "a"))
	w.clk.Set(hr(12).Add(6 * time.Minute))
	us := []metering.HourUsage{usage(hr(11), "c1", "api_calls", 2e9, 1), usage(hr(11), "c2", "bogus", 1e9, 1), usage(hr(11), "c3", "api_calls", 4e9, 1)}
	if err := a.Hand(context.Background(), hr(12), us); err != nil {
		t.Fatal(err)
	}
	steps(t, 2, a)
	checkBilled(t, w.em, map[key]int64{{hr(11), "c1", "api_calls"}: 2, {hr(11), "c3", "api_calls"}: 4})
	body, err := a.cfg.Store.Get(context.Background(), resultKey(testProduct, hr(11)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := decode[Result](body, resultFormat)
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, r := range res.Records {
		if r.Status != "Success" {
			refused = append(refused, r.Customer+" "+r.Status)
		}
	}
	if len(refused) != 1 || refused[0] != "c2 Refused: InvalidUsageDimensionException" {
		t.Fatalf("result: %v", refused)
	}
}
