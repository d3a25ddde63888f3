package metering

import (
	"crypto/sha256"
	"encoding/hex"
	"math/bits"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// hourSeconds is one hour in Unix seconds; ledger hours are the Unix
// seconds of their start.
const hourSeconds = 3600

// hourOfMillis is the UTC hour (Unix seconds of its start) holding a record
// time in Unix milliseconds.
func hourOfMillis(ms int64) int64 {
	h := ms / (hourSeconds * 1000)
	if ms%(hourSeconds*1000) < 0 {
		h--
	}
	return h * hourSeconds
}

// floorHour is the start of the UTC hour holding t, in Unix seconds.
func floorHour(t time.Time) int64 { return hourOfMillis(t.UnixMilli()) }

// hourTime renders a ledger hour as a UTC time.
func hourTime(h int64) time.Time { return time.Unix(h, 0).UTC() }

// closedBefore returns the first hour that is not closed: every hour H
// before it satisfies now >= H+1h+lateness and, when records are still
// waiting to be counted, H+1h <= the oldest of their times.
func closedBefore(now time.Time, lateness time.Duration, pendingMin int64, hasPending bool) int64 {
	cut := floorHour(now.Add(-lateness))
	if hasPending {
		cut = min(cut, hourOfMillis(pendingMin))
	}
	return cut
}

// nextClose is when the next hour closes after now: the end of the hour
// in progress at now-lateness, plus lateness.
func nextClose(now time.Time, lateness time.Duration) time.Time {
	return hourTime(floorHour(now.Add(-lateness)) + hourSeconds).Add(lateness)
}

// windowSafety is how much of the API's window the reporter leaves unused:
// an intent created for the oldest reportable hour still has this long to
// be accepted (retries, a restart) before AWS would call it too old. It
// is at most half the slack an hour has between closing (its end plus
// lateness) and leaving the window, so every hour stays reportable for a
// while after it closes, whatever window and lateness are.
func windowSafety(window, lateness time.Duration) time.Duration {
	slack := window - time.Hour - lateness
	return max(0, min(window/4, time.Hour, slack/2))
}

// sendMargin is the least time before AWS's cutoff the reporter still
// creates an intent for an hour: one call and its answer.
const sendMargin = 2 * time.Minute

// ceilHour is the first hour starting at or after t, in Unix seconds.
func ceilHour(t time.Time) int64 {
	h := floorHour(t)
	if t.Unix() > h || t.Nanosecond() > 0 {
		h += hourSeconds
	}
	return h
}

// oldestReportable is the oldest hour whose usage the reporter still
// sends, given that hours before cut are closed: the first hour starting
// at or after now - window + safety. Usage of older hours is added to it
// (AWS's guidance for agents that were down). When that hour is not
// closed yet but the newest closed hour is still inside the window (with
// sendMargin to spare), it is that one instead: usage then goes out now,
// rather than waiting for an hour that a slow close (a backlog, a late
// pass) could again push out of the window.
func oldestReportable(now time.Time, window, lateness time.Duration, cut int64) int64 {
	h := ceilHour(now.Add(-window + windowSafety(window, lateness)))
	if h >= cut && cut-hourSeconds >= ceilHour(now.Add(-window+sendMargin)) {
		h = cut - hourSeconds
	}
	return h
}

// withinWindow reports whether an API call for hour h made now would be
// inside the window (exactly as AWS checks it, without the safety).
func withinWindow(h int64, now time.Time, window time.Duration) bool {
	return hourTime(h).After(now.Add(-window))
}

// roundDown turns an hour's exact total (its buckets plus the carry of the
// key) into the integer quantity to report and the carry left for the next
// hour: the fraction below one unit, plus anything over maxQuantity. The
// carry is never rounded up, so a unit is billed only once it is whole.
func roundDown(total int64) (quantity int64, carry int64) {
	quantity = min(total/nanosPerUnit, maxQuantity)
	return quantity, total - quantity*nanosPerUnit
}

// largestRemainder splits quantity across weights in proportion, in whole
// units that sum exactly to quantity: each share is rounded down and the
// units left go to the largest remainders (ties to the lower index). It
// returns nil when the weights sum to zero.
func largestRemainder(quantity int64, weights []int64) []int64 {
	var total uint64
	for _, w := range weights {
		total += uint64(w)
	}
	if total == 0 || quantity < 0 {
		return nil
	}
	shares := make([]int64, len(weights))
	rems := make([]uint64, len(weights))
	var given int64
	for i, w := range weights {
		hi, lo := bits.Mul64(uint64(quantity), uint64(w))
		q, r := bits.Div64(hi, lo, total)
		shares[i], rems[i] = int64(q), r
		given += int64(q)
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rems[order[a]] > rems[order[b]] })
	for k := 0; given < quantity; k++ {
		shares[order[k%len(order)]]++
		given++
	}
	return shares
}

// clientToken is the MeterUsage ClientToken of one (product, dimension,
// hour) of one instance: the same inputs always give the same token, so a
// repeat after a crash is recognised by AWS as the same request. 60
// characters, within the API's 64.
func clientToken(product, dimension string, hour int64, instance string) string {
	return "msh1" + hashParts(product, dimension, strconv.FormatInt(hour, 10), instance)[:56]
}

// intentID names an intent in dead-letter files and logs: a hash of
// everything that makes it unique (hour, customer, license, dimension).
func intentID(product string, hour int64, customer, license, dimension string) string {
	return hashParts(product, strconv.FormatInt(hour, 10), customer, license, dimension)[:24]
}

// hashParts is the hex SHA-256 of the parts, each length-prefixed so that
// parts can never run into each other.
func hashParts(parts ...string) string {
	h := sha256.New()
	for _, s := range parts {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sanitizeTagValue makes a record's dimension value usable as an
// allocation tag value: every character AWS's pattern refuses becomes '_'
// (one per character, not per byte) and the result is cut to 256 bytes.
// Values that only differ in refused characters share a bucket; sums are
// unaffected.
func sanitizeTagValue(v string) string {
	if ValidTag(v, MaxTagValueLen) || v == "" {
		return v
	}
	out := make([]byte, 0, min(len(v), MaxTagValueLen))
	for i := 0; i < len(v) && len(out) < MaxTagValueLen; {
		c := v[i]
		if c < utf8.RuneSelf {
			if TagByteOK(c) {
				out = append(out, c)
			} else {
				out = append(out, '_')
			}
			i++
			continue
		}
		_, size := utf8.DecodeRuneInString(v[i:])
		out = append(out, '_')
		i += size
	}
	return string(out)
}
