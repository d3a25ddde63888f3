package shared

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// HourStatus is what the shared state holds about one hour.
type HourStatus struct {
	Hour time.Time
	// Partials are the agents with a partial of the hour.
	Partials []string
	Claim    *Claim  // nil: not claimed (yet)
	Result   *Result // nil: not answered (yet)
}

// ReadStatus reads the hours [from, to) of product from the store.
func ReadStatus(ctx context.Context, store Store, product string, from, to time.Time) ([]HourStatus, error) {
	var out []HourStatus
	for h := from.UTC().Truncate(time.Hour); h.Before(to); h = h.Add(time.Hour) {
		hs := HourStatus{Hour: h}
		objs, err := store.List(ctx, partialPrefix(product, h), "")
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			hs.Partials = append(hs.Partials, agentFromPartialKey(o.Key))
		}
		if body, err := store.Get(ctx, claimKey(product, h)); err == nil {
			if hs.Claim, err = decode[Claim](body, claimFormat); err != nil {
				return nil, err
			}
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if body, err := store.Get(ctx, resultKey(product, h)); err == nil {
			if hs.Result, err = decode[Result](body, resultFormat); err != nil {
				return nil, err
			}
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if len(hs.Partials) > 0 || hs.Claim != nil {
			out = append(out, hs)
		}
	}
	return out, nil
}

// units renders nanos as a decimal number of units.
func units(n int64) string {
	s := fmt.Sprintf("%d", n/1e9)
	if f := n % 1e9; f != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%09d", f), "0")
	}
	return s
}

// WriteStatus prints hours as `metership metering status` shows them.
func WriteStatus(w io.Writer, hours []HourStatus) {
	if len(hours) == 0 {
		fmt.Fprintln(w, "no partials or claims in these hours")
	}
	for _, hs := range hours {
		fmt.Fprintf(w, "%s  partials: %d (%s)\n", hs.Hour.Format(hourLayout), len(hs.Partials), strings.Join(hs.Partials, ", "))
		c := hs.Claim
		if c == nil {
			fmt.Fprintln(w, "  claim:    none yet")
			continue
		}
		names := make([]string, len(c.Partials))
		for i, p := range c.Partials {
			names[i] = p.Agent
		}
		fmt.Fprintf(w, "  claim:    by %s at %s, merged %d (%s)\n", c.Claimer, c.Created.Format(time.RFC3339), len(c.Partials), strings.Join(names, ", "))
		if missing := notMerged(hs.Partials, names); len(missing) > 0 {
			fmt.Fprintf(w, "  late:     %s (carried by their agents into a later hour)\n", strings.Join(missing, ", "))
		}
		totals := map[string]int64{}
		for _, r := range c.Records {
			totals[r.Dimension] += r.Quantity
		}
		fmt.Fprintf(w, "  records:  %d", len(c.Records))
		for _, d := range slices.Sorted(maps.Keys(totals)) {
			fmt.Fprintf(w, "  %s=%d", d, totals[d])
		}
		fmt.Fprintln(w)
		var carry int64
		for _, cr := range c.Carry {
			carry = addSat(carry, cr.Nanos)
		}
		if c.PastWindow {
			fmt.Fprintf(w, "  past the window when claimed: %s units carried to the next claim\n", units(carry))
		} else if carry > 0 {
			fmt.Fprintf(w, "  carried:  %s units over %d series (fractions, to each series' next hour)\n", units(carry), len(c.Carry))
		}
		if hs.Result == nil {
			fmt.Fprintln(w, "  answers:  not yet")
			continue
		}
		statuses := map[string]int{}
		for _, r := range hs.Result.Records {
			statuses[r.Status]++
		}
		fmt.Fprintf(w, "  answers:  sent by %s at %s:", hs.Result.Sender, hs.Result.Sent.Format(time.RFC3339))
		for _, s := range slices.Sorted(maps.Keys(statuses)) {
			fmt.Fprintf(w, " %s %d", s, statuses[s])
		}
		fmt.Fprintln(w)
		for _, r := range hs.Result.Records {
			if r.Status != "Success" && r.Status != "DryRun" {
				fmt.Fprintf(w, "  unbilled: %s %s %s quantity %d: %s\n", r.Customer, r.License, r.Dimension, r.Quantity, r.Status)
			}
		}
	}
}

func notMerged(have, merged []string) []string {
	var out []string
	for _, a := range have {
		if !slices.Contains(merged, a) {
			out = append(out, a)
		}
	}
	return out
}

// WriteLocalStatus prints this replica's journal in dir (read only; the
// agent may be running): hours not written yet and partials not settled.
func WriteLocalStatus(w io.Writer, dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, journalName))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(w, "this replica: no journal in %s (it has not handed any hour yet)\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("%w: %w", ErrCorruptJournal, err)
	}
	fmt.Fprintf(w, "this replica: agent %s, next partial %s, closed before %s\n", j.Agent, j.NextHour.Format(hourLayout), j.Cut.Format(hourLayout))
	for _, name := range slices.Sorted(maps.Keys(j.Open)) {
		var n int64
		for _, e := range j.Open[name] {
			n = addSat(n, e.nanos())
		}
		fmt.Fprintf(w, "  open %s: %d series, %s units not in a partial yet\n", name, len(j.Open[name]), units(n))
	}
	for _, p := range j.Written {
		switch p.State {
		case stateWritten:
			fmt.Fprintf(w, "  partial %s: written, waiting for its claim\n", p.Hour.Format(hourLayout))
		case stateCarried:
			fmt.Fprintf(w, "  partial %s: late, carried into %s\n", p.Hour.Format(hourLayout), p.CarriedTo.Format(hourLayout))
		}
	}
	return nil
}
