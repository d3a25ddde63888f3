package ship

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// ts is 2022-06-07T08:09:05.123Z, a Tuesday, day 158 of the year.
var ts = time.Date(2022, 6, 7, 8, 9, 5, 123e6, time.UTC).UnixMilli()

func TestKeySpecifiers(t *testing.T) {
	pm := time.Date(2022, 12, 31, 13, 4, 0, 0, time.UTC).UnixMilli()
	midnight := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	tests := []struct {
		format string
		at     int64
		want   string
	}{
		{"%Y", ts, "2022"},
		{"%y", ts, "22"},
		{"%C", ts, "20"},
		{"%m", ts, "06"},
		{"%d", ts, "07"},
		{"%e", ts, " 7"},
		{"%H", ts, "08"},
		{"%k", ts, " 8"},
		{"%I", ts, "08"},
		{"%l", ts, " 8"},
		{"%M", ts, "09"},
		{"%S", ts, "05"},
		{"%j", ts, "158"},
		{"%b", ts, "Jun"},
		{"%h", ts, "Jun"},
		{"%B", ts, "June"},
		{"%a", ts, "Tue"},
		{"%A", ts, "Tuesday"},
		{"%u", ts, "2"},
		{"%w", ts, "2"},
		{"%p", ts, "AM"},
		{"%s", ts, "1654589345"},
		{"%F", ts, "2022-06-07"},
		{"%T", ts, "08:09:05"},
		{"%R", ts, "08:09"},
		{"%D", ts, "06/07/22"},
		{"%z", ts, "+0000"},
		{"%Z", ts, "UTC"},
		{"%%", ts, "%"},
		{"100%%/%Y%m%d", ts, "100%/20220607"},
		{"%p %I %l %j %a %u", pm, "PM 01  1 365 Sat 6"},
		{"%I%p %j %e %u %w", midnight, "12AM 001  1 6 6"},
		{"%m-%d-%Y", ts, "06-07-2022"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			k, err := CompileKeyFormat("", tt.format+"/$UUID", "")
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			got := k.Key(k.Partition(tt.at, ""), "U", 0)
			if want := tt.want + "/U"; got != want {
				t.Fatalf("key = %q, want %q", got, want)
			}
		})
	}
}

func TestKeyVariables(t *testing.T) {
	tests := []struct {
		prefix, format, tag string
		index               uint64
		want                string
	}{
		{"ingest/amberdata", DefaultKeyFormat, "", 0, "ingest/amberdata/06-07-2022/U.gz"},
		{"/ingest/amberdata/", DefaultKeyFormat, "", 0, "ingest/amberdata/06-07-2022/U.gz"},
		{"", DefaultDeadLetterKeyFormat, "", 0, "failed-requests/06-07-2022/U.gz"},
		{"", "$TAG/$UUID", "app.meter.v1", 0, "app.meter.v1/U"},
		{"", "$TAG[0]/$TAG[1]/$TAG[2]/$UUID", "app.meter.v1", 0, "app/meter/v1/U"},
		{"", "$TAG[3]/$UUID", "app.meter.v1", 0, "/U"},
		{"", "$TAG[1]-$UUID", "single", 0, "-U"},
		{"", "$TAG[1]-$UUID", "a..c", 0, "-U"},
		{"", "$HOSTNAME/%Y/$INDEX.json", "", 42, "host-1/2022/42.json"},
		{"", "$UUID-$INDEX-$UUID", "", 7, "U-7-U"},
		{"", "cost$5/$UUIDX", "", 0, "cost$5/UX"},
		{"", "$TAG/$UUID", "nul\x00tag", 0, "nultag/U"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			k, err := CompileKeyFormat(tt.prefix, tt.format, "host-1")
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if got := k.Key(k.Partition(ts, tt.tag), "U", tt.index); got != tt.want {
				t.Fatalf("key = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestKeyCompileErrors(t *testing.T) {
	tests := []struct {
		format string
		want   string
	}{
		{"", "empty"},
		{"%m-%d-%Y/data.gz", "needs $UUID"},
		{"%Q/$UUID", "unsupported strftime specifier %Q"},
		{"%Y/%i/$UUID", "unsupported strftime specifier %i"},
		{"$UUID%", "trailing %"},
		{"$TAG[x]/$UUID", "malformed $TAG[n]"},
		{"$TAG[-1]/$UUID", "malformed $TAG[n]"},
		{"$TAG[1/$UUID", "malformed $TAG[n]"},
		{"a\x00b/$UUID", "NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			_, err := CompileKeyFormat("p", tt.format, "h")
			if err == nil {
				t.Fatalf("compile %q succeeded", tt.format)
			}
			if !errors.Is(err, ErrKeyFormat) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q, want ErrKeyFormat mentioning %q", err, tt.want)
			}
		})
	}
}

// TestPartitionCacheMatchesRender compares cached partitions with fresh
// renders over random times near unit boundaries, before 1970 too.
func TestPartitionCacheMatchesRender(t *testing.T) {
	formats := []string{
		DefaultKeyFormat,
		"%Y/%m/%d/%H/$TAG[0]/$UUID",
		"%F %T %s/$TAG/$UUID",
		"%Y-%j/%p/$INDEX",
		"%M/$UUID",
		"static/$UUID",
		"%b %B %y/$UUID",
	}
	tags := []string{"", "a.b", "a.c", "x"}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, f := range formats {
		k, err := CompileKeyFormat("pre", f, "h")
		if err != nil {
			t.Fatalf("compile %q: %v", f, err)
		}
		for i := 0; i < 5000; i++ {
			base := int64(rng.IntN(200)-100) * granDay
			at := base + int64(rng.IntN(3)-1)*granHour + int64(rng.IntN(3)-1)*granMinute + int64(rng.IntN(2001)-1000)
			tag := tags[rng.IntN(len(tags))]
			cached := k.Partition(at, tag)
			if fresh := k.render(at, tag); cached != fresh {
				t.Fatalf("format %q at %d tag %q: cached %q, fresh %q", f, at, tag, k.Display(cached), k.Display(fresh))
			}
		}
	}
}

func TestPartitionCacheHitAllocatesNothing(t *testing.T) {
	k, err := CompileKeyFormat("ingest/amberdata", "$TAG/%m-%d-%Y/$UUID.gz", "")
	if err != nil {
		t.Fatal(err)
	}
	tag := "app.meter"
	k.Partition(ts, tag)
	allocs := testing.AllocsPerRun(1000, func() { k.Partition(ts+1, tag) })
	if allocs != 0 {
		t.Fatalf("Partition on a cache hit allocates %.1f times", allocs)
	}
}

func TestPartitionCacheIsBounded(t *testing.T) {
	k, err := CompileKeyFormat("", "%s/$UUID", "")
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(0); i < 3*maxPartitionCache; i++ {
		at := i * 1000
		if got, want := k.Key(k.Partition(at, ""), "U", 0), fmt.Sprintf("%d/U", i); got != want {
			t.Fatalf("key = %q, want %q", got, want)
		}
	}
	if n := len(k.cache); n > maxPartitionCache {
		t.Fatalf("cache holds %d entries, bound is %d", n, maxPartitionCache)
	}
}

func TestPartitionIgnoresUnusedTag(t *testing.T) {
	k, err := CompileKeyFormat("", DefaultKeyFormat, "")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := k.Partition(ts, "a"), k.Partition(ts, "b"); a != b {
		t.Fatalf("partitions differ by tag for a format without $TAG: %q %q", a, b)
	}
	if k.UsesTag() {
		t.Fatal("UsesTag = true for a format without $TAG")
	}
}

func TestKeyDisplay(t *testing.T) {
	k, err := CompileKeyFormat("p", "%Y/$UUID-$INDEX", "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := k.Display(k.Partition(ts, "")), "p/2022/$UUID-$INDEX"; got != want {
		t.Fatalf("display = %q, want %q", got, want)
	}
	if got, want := k.String(), "p/%Y/$UUID-$INDEX"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestObjectUUIDDeterministic(t *testing.T) {
	a := ObjectUUID("agent-1", 7, "06-07-2022/\x00U.gz")
	if b := ObjectUUID("agent-1", 7, "06-07-2022/\x00U.gz"); a != b {
		t.Fatalf("same inputs gave %s and %s", a, b)
	}
	// Pinned (checked with Python's uuid.uuid5): the namespace and name
	// encoding must never change, or agents upgraded across a crash would
	// re-ship their segments under new keys.
	if want := "404cddca-b876-5c63-bafc-10b66caad31f"; a != want {
		t.Errorf("ObjectUUID = %s, want pinned %s", a, want)
	}
	if a[14] != '5' {
		t.Errorf("ObjectUUID %s is not a version 5 UUID", a)
	}
	distinct := map[string]string{a: "base"}
	for name, u := range map[string]string{
		"seq":       ObjectUUID("agent-1", 8, "06-07-2022/\x00U.gz"),
		"agent":     ObjectUUID("agent-2", 7, "06-07-2022/\x00U.gz"),
		"partition": ObjectUUID("agent-1", 7, "06-08-2022/\x00U.gz"),
		"ambiguous": ObjectUUID("agent-1/7", 0, "06-07-2022/\x00U.gz"),
	} {
		if prev, ok := distinct[u]; ok {
			t.Errorf("changing %s gave the same UUID as %s", name, prev)
		}
		distinct[u] = name
	}
}
