package shared

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"go.uber.org/goleak"

	"github.com/metership/metership/internal/testutil/fakeclock"
	"github.com/metership/metership/internal/testutil/s3server"
	"github.com/metership/metership/metering"
	"github.com/metership/metership/metering/emulator"
	"github.com/metership/metership/ship"
)

// childEnv names the crash scenario a re-executed test binary runs.
const childEnv = "METERSHIP_SHARED_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

const testProduct = "metership-test"

// testNow: 12:30 UTC, so hours up to 11:00 are closed (lateness 5m).
var testNow = time.Date(2025, time.June, 15, 12, 30, 0, 0, time.UTC)

func hr(h int) time.Time { return time.Date(2025, time.June, 15, h, 0, 0, 0, time.UTC) }

// world is one product's Marketplace (the emulator) and state (versitygw).
type world struct {
	t     *testing.T
	clk   *fakeclock.Clock
	em    *emulator.Emulator
	emURL string
	s3    *s3server.Server
	state string // s3://bucket/prefix
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, clk: fakeclock.New(testNow)}
	cfg := emulator.DefaultConfig()
	cfg.Products[testProduct] = emulator.Product{Dimensions: []string{"api_calls", "storage_gb"}}
	cfg.Now = w.clk.Now
	w.em = emulator.New(cfg)
	srv := httptest.NewServer(w.em)
	t.Cleanup(srv.Close)
	w.emURL = srv.URL
	w.s3 = s3server.Start(t)
	w.state = "s3://" + w.s3.Bucket() + "/metering-state"
	return w
}

func (w *world) s3opts() ship.S3Options {
	return ship.S3Options{Endpoint: w.s3.Endpoint(), ForcePathStyle: true, Region: "us-east-1", Credentials: w.s3.Credentials()}
}

// client is the real SDK Marketplace client, signing as akid.
func mmClient(url, akid string) (*mm.Client, *http.Transport) {
	tr := &http.Transport{}
	return mm.New(mm.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider(akid, "secret-"+akid, ""),
		HTTPClient:   &http.Client{Transport: tr},
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.Backoff = retry.NewExponentialJitterBackoff(2 * time.Millisecond)
			o.RateLimiter = ratelimit.None
		}),
	}), tr
}

func agentConfig(store Store, dir, id string, client metering.API, now func() time.Time) Config {
	return Config{
		Store: store, Dir: dir, Agent: id, Product: testProduct,
		Window: 6 * time.Hour, Lateness: 5 * time.Minute, MergeGrace: 10 * time.Minute,
		Client: client, Now: now, Tick: time.Minute, Stagger: -1,
		BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond, MaxRetryElapsed: 10 * time.Second,
		CallTimeout: 5 * time.Second,
	}
}

// agent starts replica id of the world, with its journal under the
// test's temp dir (the same dir for the same id: a restart).
func (w *world) agent(id string, dir string, mod ...func(*Config)) *Agent {
	w.t.Helper()
	store, err := Open(context.Background(), w.state, w.s3opts())
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = store.Close() })
	client, tr := mmClient(w.emURL, "AKID"+id)
	w.t.Cleanup(tr.CloseIdleConnections)
	cfg := agentConfig(store, dir, id, client, w.clk.Now)
	for _, f := range mod {
		f(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	return a
}

// key is one expected usage record.
type key struct {
	hour      time.Time
	customer  string
	dimension string
}

// usage builds the ledger's hand-over of one key's hour.
func usage(h time.Time, customer, dimension string, nanos, records int64) metering.HourUsage {
	return metering.HourUsage{
		ID:   fmt.Sprintf("%s/%s/%s", h.Format(hourLayout), customer, dimension),
		Hour: h, Customer: customer, Dimension: dimension,
		Buckets: []metering.UsageBucket{{Nanos: nanos, Records: records}},
	}
}

// expected computes, independently of decide, what AWS must hold: per
// series and hour in order, floor(carry + the hour's total), the rest
// carried to the series' next hour with usage.
func expected(hours map[key]int64) map[key]int64 {
	type series struct{ customer, dimension string }
	bySeries := map[series][]time.Time{}
	for k := range hours {
		s := series{k.customer, k.dimension}
		bySeries[s] = append(bySeries[s], k.hour)
	}
	out := map[key]int64{}
	for s, hs := range bySeries {
		sort.Slice(hs, func(i, j int) bool { return hs[i].Before(hs[j]) })
		var carry int64
		for _, h := range hs {
			k := key{h, s.customer, s.dimension}
			total := carry + hours[k]
			out[k] = total / 1e9
			carry = total % 1e9
		}
	}
	return out
}

// accepted is what the emulator holds, per key; a second record for a key
// fails the test.
func accepted(t *testing.T, st emulator.State) map[key]int64 {
	t.Helper()
	out := map[key]int64{}
	for _, r := range st.Records {
		k := key{r.Hour.UTC(), r.CustomerIdentifier, r.Dimension}
		if _, dup := out[k]; dup {
			t.Fatalf("two accepted records for %+v", k)
		}
		out[k] = r.Quantity
	}
	return out
}

func checkBilled(t *testing.T, em *emulator.Emulator, want map[key]int64) {
	t.Helper()
	st := em.State()
	if len(st.Conflicts) > 0 || st.RecordStatuses[emulator.StatusDuplicateRecord] > 0 {
		t.Fatalf("conflicts: %+v, statuses %v", st.Conflicts, st.RecordStatuses)
	}
	got := accepted(t, st)
	for k, q := range want {
		if got[k] != q {
			t.Errorf("%s %s %s: billed %d, want %d", k.hour.Format(hourLayout), k.customer, k.dimension, got[k], q)
		}
	}
	for k, q := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected record %+v = %d", k, q)
		}
	}
}

// beat rewrites the agents' heartbeats, as their Run loops would every
// minute while the test moves the clock by hours.
func beat(t *testing.T, agents ...*Agent) {
	t.Helper()
	for _, a := range agents {
		if err := a.heartbeat(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// steps steps every agent n times, after a heartbeat of each.
func steps(t *testing.T, n int, agents ...*Agent) {
	t.Helper()
	beat(t, agents...)
	for range n {
		for _, a := range agents {
			if err := a.Step(context.Background()); err != nil {
				t.Fatalf("step: %v", err)
			}
		}
	}
}

func tempDir(t *testing.T, name string) string {
	d := filepath.Join(t.TempDir(), name)
	return d
}
