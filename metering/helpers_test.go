package metering

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/metership/metership/buffer"
	"github.com/metership/metership/conf"
	"github.com/metership/metership/internal/testutil/fakeclock"
	"github.com/metership/metership/metering/emulator"
)

// childEnv names the crash scenario a re-executed test binary runs.
const childEnv = "METERSHIP_METERING_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(m)
}

// testNow is the agents' and the emulator's clock unless a test moves it:
// 12:30 UTC, so 12:00 is the open hour and hours up to 11:00 are closed.
var testNow = time.Date(2025, time.June, 15, 12, 30, 0, 0, time.UTC)

// clock is a settable time source shared by the Meter, the emulator and
// the buffer.
type clock = fakeclock.Clock

func newClock(t time.Time) *clock { return fakeclock.New(t) }

// testProduct is the emulator product the tests meter.
const testProduct = "metership-test"

// emulatorConfig is the Marketplace the tests report to.
func emulatorConfig(clk *clock) emulator.Config {
	cfg := emulator.DefaultConfig()
	cfg.Products[testProduct] = emulator.Product{Dimensions: []string{"api_calls", "storage_gb", "users", "gigabytes"}}
	cfg.Now = clk.Now
	return cfg
}

// startEmulator serves an emulator on 127.0.0.1 for the test.
func startEmulator(t *testing.T, cfg emulator.Config) (*emulator.Emulator, string) {
	t.Helper()
	em := emulator.New(cfg)
	srv := httptest.NewServer(em)
	t.Cleanup(srv.Close)
	return em, srv.URL
}

// newClient is the real SDK client against url, signing as akid, with
// quick SDK-level retries and no client-side retry quota.
func newClient(t testing.TB, url, akid string) *mm.Client {
	c, tr := buildClient(url, akid)
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// buildClient is newClient for a crash child, which has no testing.TB.
func buildClient(url, akid string) (*mm.Client, *http.Transport) {
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

// meterConfig is a MeterUsage config: api-calls bill as api_calls, storage
// bytes-ish values bill as storage_gb scaled by 0.001, tag "team".
func meterConfig() conf.Metering {
	return conf.Metering{
		Mode:           ModeMeterUsage,
		ProductCode:    testProduct,
		Region:         "us-east-1",
		Dimensions:     map[string]string{"api-calls": "api_calls", "storage": "storage_gb*0.001"},
		AllocationTags: []string{"team"},
		CustomerIDType: "customer_identifier",
		Lateness:       conf.Duration(5 * time.Minute),
		Window:         conf.Duration(6 * time.Hour),
	}
}

// testOptions are Options for dir with quick backoff.
func testOptions(dir string, client API, clk *clock) Options {
	return Options{
		Dir:             dir,
		InstanceID:      "agent-1",
		Client:          client,
		Now:             clk.Now,
		Backoff:         Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond},
		MaxRetryElapsed: 10 * time.Second,
		CallTimeout:     5 * time.Second,
	}
}

func mustNew(t testing.TB, cfg conf.Metering, opts Options) *Meter {
	t.Helper()
	m, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// rec is one test meter record.
type rec struct {
	customer string
	api      string
	nanos    int64 // meterValue in billionths
	at       time.Time
	dims     map[string]string
	uid      string
}

// decimal renders nanos as an exact decimal meterValue.
func decimal(nanos int64) string {
	s := strconv.FormatInt(nanos/nanosPerUnit, 10)
	if f := nanos % nanosPerUnit; f != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%09d", f), "0")
	}
	return s
}

// line renders r in the canonical layout record.Parser writes.
func (r rec) line() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"customerId":%q,"meterApiName":%q,"meterValue":%s,"meterTimeInMillis":%d`, r.customer, r.api, decimal(r.nanos), r.at.UnixMilli())
	if len(r.dims) > 0 {
		keys := make([]string, 0, len(r.dims))
		for k := range r.dims {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString(`,"dimensions":{`)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%q:%q", k, r.dims[k])
		}
		b.WriteByte('}')
	}
	uid := r.uid
	if uid == "" {
		uid = fmt.Sprintf("u-%d-%s-%d", r.at.UnixNano(), r.api, r.nanos)
	}
	fmt.Fprintf(&b, `,"uniqueId":%q}`, uid)
	return []byte(b.String())
}

// writeBuffer writes recs into a buffer in dir, perSegment records per
// sealed segment, and closes it.
func writeBuffer(t testing.TB, dir string, recs []rec, perSegment int) {
	t.Helper()
	buf, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "agent-1", Sync: buffer.SyncNever})
	if err != nil {
		t.Fatalf("buffer.Open: %v", err)
	}
	var batch buffer.Batch
	for i := 0; i < len(recs); i += perSegment {
		batch.Reset()
		for _, r := range recs[i:min(i+perSegment, len(recs))] {
			batch.AddRecord(r.at.UnixMilli(), r.line())
		}
		if err := buf.Write(&batch); err != nil {
			t.Fatalf("buffer.Write: %v", err)
		}
		if err := buf.Seal(); err != nil {
			t.Fatalf("buffer.Seal: %v", err)
		}
	}
	if err := buf.Close(); err != nil {
		t.Fatalf("buffer.Close: %v", err)
	}
}

// countBuffer opens the buffer in dir and counts and acks every sealed
// segment, as the pipeline does after a successful upload.
func countBuffer(t testing.TB, m *Meter, dir string) int {
	t.Helper()
	buf, err := buffer.Open(buffer.Options{Dir: dir, AgentID: "agent-1", Sync: buffer.SyncNever})
	if err != nil {
		t.Fatalf("buffer.Open: %v", err)
	}
	defer buf.Close()
	n := 0
	for buf.Stats().SegmentsPending > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		seg, err := buf.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("buffer.Next: %v", err)
		}
		if err := m.Count(context.Background(), seg); err != nil {
			t.Fatalf("Count(%d): %v", seg.Seq, err)
		}
		if err := buf.Ack(seg); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		n++
	}
	return n
}

// segmentLive is Options.Live for a buffer directory.
func segmentLive(dir string) func(uint64) bool {
	return func(seq uint64) bool {
		_, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%020d.seg", seq)))
		return !errors.Is(err, os.ErrNotExist)
	}
}

// hourlyKey identifies an accepted record in the emulator.
type hourlyKey struct {
	customer  string
	dimension string
	hour      time.Time
}

// expectedQuantities is an independent model of the reporting rules for
// usage that reaches AWS in hour order: per key, quantity =
// floor(carry + hour total), the rest carried.
func expectedQuantities(totals map[hourlyKey]int64) map[hourlyKey]int64 {
	type series struct{ customer, dimension string }
	byKey := map[series][]hourlyKey{}
	for k := range totals {
		s := series{k.customer, k.dimension}
		byKey[s] = append(byKey[s], k)
	}
	out := map[hourlyKey]int64{}
	for _, ks := range byKey {
		sort.Slice(ks, func(i, j int) bool { return ks[i].hour.Before(ks[j].hour) })
		var carry int64
		for _, k := range ks {
			total := carry + totals[k]
			out[k] = total / nanosPerUnit
			carry = total % nanosPerUnit
		}
	}
	return out
}

// accepted indexes the emulator's accepted records, failing on repeats.
func accepted(t *testing.T, st emulator.State) map[hourlyKey]emulator.Record {
	t.Helper()
	out := map[hourlyKey]emulator.Record{}
	for _, r := range st.Records {
		k := hourlyKey{customer: r.CustomerIdentifier + r.CustomerAWSAccountID, dimension: r.Dimension, hour: r.Hour}
		if _, dup := out[k]; dup {
			t.Errorf("two accepted records for %+v", k)
		}
		out[k] = r
	}
	return out
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// metricValue reads a counter or gauge (the sum over its label values).
func metricValue(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			panic(err)
		}
		switch {
		case pb.Counter != nil:
			sum += pb.Counter.GetValue()
		case pb.Gauge != nil:
			sum += pb.Gauge.GetValue()
		}
	}
	return sum
}

// testServer is an HTTP server on a real listener that a test can stop and
// start again on the same address.
type testServer struct {
	addr string
	srv  *http.Server
	done chan struct{}
	once sync.Once
}

// serveOn serves h on addr ("127.0.0.1:0" for a free port) until close or
// the end of the test.
func serveOn(t *testing.T, addr string, h http.Handler) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	ts := &testServer{addr: ln.Addr().String(), srv: &http.Server{Handler: h}, done: make(chan struct{})}
	go func() {
		defer close(ts.done)
		_ = ts.srv.Serve(ln)
	}()
	t.Cleanup(ts.close)
	return ts
}

func (ts *testServer) close() {
	ts.once.Do(func() {
		_ = ts.srv.Close()
		<-ts.done
	})
}

// countRecords writes recs to a fresh buffer, perSegment records a
// segment, and counts every segment into m.
func countRecords(t testing.TB, m *Meter, recs []rec, perSegment int) {
	t.Helper()
	dir := t.TempDir()
	writeBuffer(t, dir, recs, perSegment)
	countBuffer(t, m, dir)
}

// podMeter is a meter_usage Meter over the ledger in dir, reporting to the
// emulator at url as the pod AKIDPOD1.
func podMeter(t testing.TB, dir, url string, clk *clock) *Meter {
	t.Helper()
	return mustNew(t, meterConfig(), testOptions(dir, newClient(t, url, "AKIDPOD1"), clk))
}

// oldestAt is oldestReportable with the tests' 5m lateness and nothing
// pending.
func oldestAt(now time.Time, window time.Duration) int64 {
	const lateness = 5 * time.Minute
	return oldestReportable(now, window, lateness, closedBefore(now, lateness, 0, false))
}
