package export_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"

	"github.com/metership/metership/export"
	"github.com/metership/metership/internal/testutil/s3server"
)

// TestConcurrentUpdatesTwoServers: two Jobs API servers share one s3://
// store; eight clients, half on each, add their own meter to the same
// job with read-modify-write (GET, change, PUT with the updateTime read,
// retry on 409). Every update must survive.
func TestConcurrentUpdatesTwoServers(t *testing.T) {
	srv := s3server.Start(t)
	cfg := s3Config(t, srv, "s3://"+srv.Bucket()+"/jobstore")
	a := newEnv(t, cfg, t0, exportOptions())
	b := newEnv(t, cfg, t0, exportOptions())
	j := a.create(valid())

	const clients = 8
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		e := a
		if c%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			meter := fmt.Sprintf("meter-%d", c)
			for attempt := 0; attempt < 200; attempt++ {
				var cur map[string]any
				if st, raw := doKey(t, e.http.URL, testKey, "GET", "/jobs/"+j.ID, nil, &cur); st != http.StatusOK {
					errs <- fmt.Errorf("get: %d %s", st, raw)
					return
				}
				meters, _ := cur["meterApiNames"].([]any)
				cur["meterApiNames"] = append(meters, meter)
				st, raw := doKey(t, e.http.URL, testKey, "PUT", "/jobs", cur, nil)
				switch st {
				case http.StatusOK:
					return
				case http.StatusConflict:
					continue
				default:
					errs <- fmt.Errorf("put: %d %s", st, raw)
					return
				}
			}
			errs <- fmt.Errorf("%s: no update after 200 attempts", meter)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := a.get(j.ID).MeterAPINames
	sort.Strings(got)
	if len(got) != clients {
		t.Fatalf("meters after %d concurrent updates: %v (updates lost)", clients, got)
	}
}

// TestS3StoreConditional: the store itself refuses a second create of an
// id and an update from a stale version, on a real S3 server.
func TestS3StoreConditional(t *testing.T) {
	srv := s3server.Start(t)
	cfg := s3Config(t, srv, "s3://"+srv.Bucket()+"/jobstore")
	e := newEnv(t, cfg, t0, exportOptions())
	st := e.svc.Store
	ctx := context.Background()
	j := &export.Job{ID: "job-1", JobName: "One", S3URL: "b/p", Format: "csv", AggregationBucket: "day", Range: "ago(1d)"}
	if err := st.Create(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, j); !errors.Is(err, export.ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	_, v1, err := st.Get(ctx, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	j.Description = "first"
	if err := st.Update(ctx, j, v1); err != nil {
		t.Fatal(err)
	}
	j.Description = "stale"
	if err := st.Update(ctx, j, v1); !errors.Is(err, export.ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	got, _, _ := st.Get(ctx, "job-1")
	if got.Description != "first" {
		t.Fatalf("stored %q", got.Description)
	}
	if err := st.Delete(ctx, "job-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Get(ctx, "job-1"); !errors.Is(err, export.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// TestUniqueNamesTwoServers: eight creates of one name, spread over two
// servers on one s3:// store, make exactly one job; a renamed job's old
// name is free again and its new one taken.
func TestUniqueNamesTwoServers(t *testing.T) {
	srv := s3server.Start(t)
	cfg := s3Config(t, srv, "s3://"+srv.Bucket()+"/jobstore")
	a := newEnv(t, cfg, t0, exportOptions())
	b := newEnv(t, cfg, t0, exportOptions())
	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	for c := range 8 {
		e := a
		if c%2 == 1 {
			e = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, _ := doKey(t, e.http.URL, testKey, "POST", "/jobs", with("jobName", "Same name"), nil)
			statuses <- st
		}()
	}
	wg.Wait()
	close(statuses)
	created := 0
	for st := range statuses {
		switch st {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Fatalf("status %d", st)
		}
	}
	var list []jobView
	a.do("GET", "/jobs", nil, &list)
	if created != 1 || len(list) != 1 {
		t.Fatalf("%d created, %d jobs, want 1", created, len(list))
	}
	// Rename: the old name is free, the new one taken.
	body := map[string]any{}
	a.do("GET", "/jobs/"+list[0].ID, nil, &body)
	body["jobName"] = "New name"
	if st, raw := b.do("PUT", "/jobs", body, nil); st != http.StatusOK {
		t.Fatalf("rename: %d %s", st, raw)
	}
	if st, raw := a.do("POST", "/jobs", with("jobName", "Same name"), nil); st != http.StatusCreated {
		t.Fatalf("old name after rename: %d %s", st, raw)
	}
	if st, raw := a.do("POST", "/jobs", with("jobName", "New name"), nil); st != http.StatusConflict {
		t.Fatalf("new name: %d %s", st, raw)
	}
	// Delete: the name is free at once, on the other server too.
	if st, raw := b.do("DELETE", "/jobs/"+list[0].ID, nil, nil); st != http.StatusOK && st != http.StatusNoContent {
		t.Fatalf("delete: %d %s", st, raw)
	}
	if st, raw := a.do("POST", "/jobs", with("jobName", "New name"), nil); st != http.StatusCreated {
		t.Fatalf("name of a deleted job: %d %s", st, raw)
	}
}
