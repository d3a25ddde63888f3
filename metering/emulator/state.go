package emulator

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Operation names, as in X-Amz-Target after "AWSMPMeteringService.".
const (
	OpMeterUsage      = "MeterUsage"
	OpBatchMeterUsage = "BatchMeterUsage"
	OpRegisterUsage   = "RegisterUsage"
	OpResolveCustomer = "ResolveCustomer"
)

// Per-record BatchMeterUsage outcomes counted in State.RecordStatuses: the
// three Status values of the API plus StatusUnprocessed for records returned
// in UnprocessedRecords.
const (
	StatusSuccess               = "Success"
	StatusCustomerNotSubscribed = "CustomerNotSubscribed"
	StatusDuplicateRecord       = "DuplicateRecord"
	StatusUnprocessed           = "Unprocessed"
)

// State is a snapshot of everything the emulator accepted and refused. It
// is what GET /_state serves.
type State struct {
	// Records are the accepted usage records in acceptance order; an
	// idempotent repeat does not add one.
	Records []Record `json:"records"`
	// Conflicts are the refused changes to recorded usage:
	// DuplicateRequestException, IdempotencyConflictException and the
	// DuplicateRecord batch status.
	Conflicts []Conflict `json:"conflicts"`
	// Requests counts AWS-protocol requests per operation, including
	// failed ones and SDK retries.
	Requests map[string]int `json:"requests"`
	// Errors counts error answers per error type (the "__type").
	Errors map[string]int `json:"errors"`
	// RecordStatuses counts BatchMeterUsage records per outcome.
	RecordStatuses map[string]int `json:"record_statuses"`
	// Faults are the injected faults still pending.
	Faults Faults `json:"faults"`
}

// Record is one accepted usage record, from MeterUsage or BatchMeterUsage.
type Record struct {
	Operation        string `json:"operation"`
	MeteringRecordID string `json:"metering_record_id"`
	ProductCode      string `json:"product_code"`
	Dimension        string `json:"dimension"`
	// Hour is Timestamp truncated to the hour: the unit AWS bills and
	// de-duplicates on.
	Hour      time.Time `json:"hour"`
	Timestamp time.Time `json:"timestamp"`
	Quantity  int64     `json:"quantity"`
	// Allocations are as sent, nil when the request had none.
	Allocations          []Allocation `json:"allocations,omitempty"`
	CustomerIdentifier   string       `json:"customer_identifier,omitempty"`
	CustomerAWSAccountID string       `json:"customer_aws_account_id,omitempty"`
	LicenseArn           string       `json:"license_arn,omitempty"`
	// Instance is the caller identity: X-Emulator-Instance, else the SigV4
	// access key id. MeterUsage's once-per-hour rule is per instance.
	Instance    string    `json:"instance"`
	ClientToken string    `json:"client_token,omitempty"`
	ReceivedAt  time.Time `json:"received_at"`
}

// Allocation is one UsageAllocation: a quantity and the tags of its bucket.
type Allocation struct {
	Quantity int64 `json:"quantity"`
	Tags     []Tag `json:"tags,omitempty"`
}

// Tag is one allocation tag.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Conflict is one refused attempt to change recorded usage.
type Conflict struct {
	Operation string `json:"operation"`
	// Error is the error type or batch status the caller got.
	Error                string    `json:"error"`
	ProductCode          string    `json:"product_code"`
	Dimension            string    `json:"dimension"`
	Hour                 time.Time `json:"hour"`
	CustomerIdentifier   string    `json:"customer_identifier,omitempty"`
	CustomerAWSAccountID string    `json:"customer_aws_account_id,omitempty"`
	LicenseArn           string    `json:"license_arn,omitempty"`
	Instance             string    `json:"instance"`
	ClientToken          string    `json:"client_token,omitempty"`
	// RecordedQuantity and MeteringRecordID describe the record that stands.
	RecordedQuantity int64  `json:"recorded_quantity"`
	MeteringRecordID string `json:"metering_record_id"`
	// AttemptedQuantity is what the refused request asked for.
	AttemptedQuantity int64     `json:"attempted_quantity"`
	At                time.Time `json:"at"`
}

// Faults are failures to inject into the next AWS-protocol requests. Each
// request consumes at most one of Throttle or Internal (throttles first).
type Faults struct {
	// Throttle answers the next Throttle requests with ThrottlingException
	// (HTTP 400, retried by the SDK).
	Throttle int `json:"throttle"`
	// Internal answers the next Internal requests with
	// InternalServiceErrorException (HTTP 500).
	Internal int `json:"internal"`
	// Unprocessed returns the next Unprocessed BatchMeterUsage records in
	// UnprocessedRecords instead of processing them (counted per record).
	Unprocessed int `json:"unprocessed"`
	// Latency delays every request by this long while set, before any other
	// fault or processing; a request whose caller gives up is not processed.
	Latency time.Duration `json:"-"`
	// DisabledAPI answers every request with DisabledApiException while set.
	DisabledAPI bool `json:"disabled_api"`
}

// faultsJSON is the JSON form of Faults, with Latency as a Go duration
// string such as "250ms".
type faultsJSON struct {
	Throttle    int    `json:"throttle"`
	Internal    int    `json:"internal"`
	Unprocessed int    `json:"unprocessed"`
	Latency     string `json:"latency,omitempty"`
	DisabledAPI bool   `json:"disabled_api"`
}

// MarshalJSON writes Latency as a duration string.
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{Throttle: f.Throttle, Internal: f.Internal, Unprocessed: f.Unprocessed, DisabledAPI: f.DisabledAPI}
	if f.Latency > 0 {
		j.Latency = f.Latency.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Latency as a duration string and rejects negative
// counts.
func (f *Faults) UnmarshalJSON(data []byte) error {
	var j faultsJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("emulator: faults: %w", err)
	}
	var lat time.Duration
	if j.Latency != "" {
		d, err := time.ParseDuration(j.Latency)
		if err != nil {
			return fmt.Errorf("emulator: faults latency: %w", err)
		}
		lat = d
	}
	if j.Throttle < 0 || j.Internal < 0 || j.Unprocessed < 0 || lat < 0 {
		return fmt.Errorf("emulator: faults must not be negative")
	}
	*f = Faults{Throttle: j.Throttle, Internal: j.Internal, Unprocessed: j.Unprocessed, Latency: lat, DisabledAPI: j.DisabledAPI}
	return nil
}

// clone returns a deep copy, so a State handed out never aliases the
// emulator's slices and maps.
func (s State) clone() State {
	out := State{
		Records:        make([]Record, len(s.Records)),
		Conflicts:      slices.Clone(s.Conflicts),
		Requests:       maps.Clone(s.Requests),
		Errors:         maps.Clone(s.Errors),
		RecordStatuses: maps.Clone(s.RecordStatuses),
		Faults:         s.Faults,
	}
	if out.Conflicts == nil {
		out.Conflicts = []Conflict{}
	}
	for i, r := range s.Records {
		if r.Allocations != nil {
			allocs := make([]Allocation, len(r.Allocations))
			for j, a := range r.Allocations {
				allocs[j] = Allocation{Quantity: a.Quantity, Tags: slices.Clone(a.Tags)}
			}
			r.Allocations = allocs
		}
		out.Records[i] = r
	}
	return out
}
