package shared

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/metership/metership/metering"
)

// Formats of the shared objects.
const (
	partialFormat   = "metership-partial/1"
	claimFormat     = "metership-claim/1"
	resultFormat    = "metership-claim-result/1"
	expiredFormat   = "metership-claim-expired/1"
	heartbeatFormat = "metership-agent/1"
	hourLayout      = "2006-01-02T15"
)

// Key layout under the state prefix.
func partialPrefix(product string, h time.Time) string {
	return "partials/" + product + "/" + h.UTC().Format(hourLayout) + "/"
}
func partialKey(product string, h time.Time, agent string) string {
	return partialPrefix(product, h) + agent + ".json"
}
func claimPrefix(product string) string { return "claims/" + product + "/" }
func claimKey(product string, h time.Time) string {
	return claimPrefix(product) + h.UTC().Format(hourLayout) + ".json"
}
func resultKey(product string, h time.Time) string {
	return claimPrefix(product) + h.UTC().Format(hourLayout) + ".result.json"
}
func expiredKey(product string, h time.Time) string {
	return claimPrefix(product) + h.UTC().Format(hourLayout) + ".expired.json"
}
func heartbeatPrefix() string          { return "agents/" }
func heartbeatKey(agent string) string { return heartbeatPrefix() + agent + ".json" }

// parseHour reads the hour of a claim or partial-directory key element.
func parseHour(s string) (time.Time, bool) {
	t, err := time.Parse(hourLayout, s)
	return t.UTC(), err == nil
}

// Series names one usage record per hour: customer, license, dimension.
type Series struct {
	Customer  string `json:"customer"`
	License   string `json:"license_arn,omitempty"`
	Dimension string `json:"dimension"`
}

func (s Series) less(o Series) bool {
	if s.Dimension != o.Dimension {
		return s.Dimension < o.Dimension
	}
	if s.Customer != o.Customer {
		return s.Customer < o.Customer
	}
	return s.License < o.License
}

// Entry is one series' exact usage in a partial.
type Entry struct {
	Series
	Buckets []metering.UsageBucket `json:"buckets"`
}

func (e Entry) nanos() int64 {
	var n int64
	for _, b := range e.Buckets {
		n = addSat(n, b.Nanos)
	}
	return n
}

// Partial is one agent's usage of one closed hour:
// partials/<product>/<YYYY-MM-DDTHH>/<agent>.json, written once.
type Partial struct {
	Format  string    `json:"format"`
	Product string    `json:"product"`
	Agent   string    `json:"agent"`
	Hour    time.Time `json:"hour"`
	Written time.Time `json:"written"`
	// Entries is the usage, per series, in series order; empty when the
	// agent had none (an empty partial tells claimers not to wait).
	Entries []Entry `json:"entries"`
	// CarriedFrom lists this agent's earlier partials that no claim
	// merged (written after their hour was claimed) and whose usage this
	// one includes.
	CarriedFrom []time.Time `json:"carried_from,omitempty"`
}

// Heartbeat is agents/<agent>.json, rewritten every minute.
type Heartbeat struct {
	Format   string    `json:"format"`
	Agent    string    `json:"agent"`
	Product  string    `json:"product"`
	Started  time.Time `json:"started"`
	UpSince  time.Time `json:"up_since"` // this process's start
	LastSeen time.Time `json:"last_seen"`
	// OldestOpen is the first hour this agent has not written a partial
	// for yet, ClosedBefore its ledger's closure cut (zero until its first
	// reporting pass), OpenHours older hours it holds usage of and has not
	// written: claimers of an hour this agent may still write wait for it
	// (up to merge_grace).
	OldestOpen   time.Time   `json:"oldest_open_hour"`
	ClosedBefore time.Time   `json:"closed_before,omitzero"`
	OpenHours    []time.Time `json:"open_hours,omitempty"`
	// Stopped: the agent stopped cleanly with no usage left unwritten
	// (Agent.Stop); its heartbeat ending is not a replica lost.
	Stopped bool `json:"stopped,omitempty"`
}

// mayWrite reports whether the agent may still write a partial of h.
func (hb *Heartbeat) mayWrite(h time.Time) bool {
	return !hb.ClosedBefore.After(h) || !hb.OldestOpen.After(h) || slices.ContainsFunc(hb.OpenHours, h.Equal)
}

// PartialRef names a merged partial exactly: its agent and the SHA-256 of
// its bytes.
type PartialRef struct {
	Agent  string `json:"agent"`
	SHA256 string `json:"sha256"`
}

// Record is one usage record of a claim: the request is fixed by it, so
// every sender sends the same one.
type Record struct {
	Series
	CustomerAWSAccountID string                     `json:"customer_aws_account_id,omitempty"`
	CustomerIdentifier   string                     `json:"customer_identifier,omitempty"`
	Quantity             int64                      `json:"quantity"`
	Allocations          []metering.UsageAllocation `json:"allocations,omitempty"`
	// Nanos is the hour's merged usage, CarryIn what the previous claim
	// carried for the series; Quantity = floor(Nanos+CarryIn), capped.
	Nanos   int64 `json:"nanos"`
	CarryIn int64 `json:"carry_in_nanos"`
	Records int64 `json:"records"`
}

// Carry is usage of a series not billed yet, carried to the next claim.
type Carry struct {
	Series
	Nanos int64 `json:"nanos"`
}

// Claim decides one hour: claims/<product>/<YYYY-MM-DDTHH>.json, written
// once with If-None-Match: *. Claims are contiguous: the claim of hour H
// takes its carry from the claim of H-1 (none only for the first claim).
type Claim struct {
	Format   string       `json:"format"`
	Product  string       `json:"product"`
	Hour     time.Time    `json:"hour"`
	Claimer  string       `json:"claimer"`
	Created  time.Time    `json:"created"`
	Previous *time.Time   `json:"previous,omitempty"`
	Partials []PartialRef `json:"partials"`
	Records  []Record     `json:"records"`
	Carry    []Carry      `json:"carry"`
	// PastWindow: the hour was older than the API's window when claimed;
	// its usage is all in Carry, billed with the next claim's records.
	PastWindow bool `json:"past_window,omitempty"`
	// Absorbed lists the recent claims whose expired records (see
	// Expired) this claim or an earlier one in the chain took into its
	// carry: each is taken once.
	Absorbed []time.Time `json:"absorbed_expired,omitempty"`
}

// Expired is claims/<product>/<hour>.expired.json: the records of a claim
// still unanswered when its hour left the API's window. The next claim
// made adds them to its carry (AWS's guidance: bill late usage with the
// oldest hour still accepted).
type Expired struct {
	Format  string    `json:"format"`
	Hour    time.Time `json:"hour"`
	Records []Carry   `json:"records"` // quantity in nanos
}

// merged reports whether the claim merged agent's partial with these bytes.
func (c *Claim) merged(agent, sum string) bool {
	for _, p := range c.Partials {
		if p.Agent == agent && p.SHA256 == sum {
			return true
		}
	}
	return false
}

// RecordResult is AWS's answer to one record of a claim.
type RecordResult struct {
	Series
	Quantity         int64  `json:"quantity"`
	Status           string `json:"status"`
	MeteringRecordID string `json:"metering_record_id,omitempty"`
}

// Result is claims/<product>/<hour>.result.json: the answers to a claim's
// records, written once by the first sender that has them all.
type Result struct {
	Format  string         `json:"format"`
	Hour    time.Time      `json:"hour"`
	Sender  string         `json:"sender"`
	Sent    time.Time      `json:"sent"`
	Records []RecordResult `json:"records"`
}

func encode(v any) []byte {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		panic(fmt.Sprintf("shared: encode %T: %v", v, err)) // plain structs always encode
	}
	return append(b, '\n')
}

func decode[T any](data []byte, format string) (*T, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("shared: decode %s: %w", format, err)
	}
	var f struct {
		Format string `json:"format"`
	}
	_ = json.Unmarshal(data, &f)
	if f.Format != format {
		return nil, fmt.Errorf("shared: object format %q, want %q", f.Format, format)
	}
	return &v, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// agentFromPartialKey returns the agent of a partial key.
func agentFromPartialKey(key string) string {
	i := strings.LastIndex(key, "/")
	return strings.TrimSuffix(key[i+1:], ".json")
}

func addSat(a, b int64) int64 {
	if a > 1<<63-1-b {
		return 1<<63 - 1
	}
	return a + b
}
