package metering

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	mm "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	"github.com/aws/aws-sdk-go-v2/service/marketplacemetering/types"
	"go.uber.org/zap"
)

// batchKey matches a BatchMeterUsage result to its intent.
type batchKey struct {
	customer, license, dimension string
	hour                         int64
}

func recordKey(r *types.UsageRecord) batchKey {
	k := batchKey{dimension: aws.ToString(r.Dimension), license: aws.ToString(r.LicenseArn)}
	if r.CustomerAWSAccountId != nil {
		k.customer = *r.CustomerAWSAccountId
	} else {
		k.customer = aws.ToString(r.CustomerIdentifier)
	}
	if r.Timestamp != nil {
		k.hour = r.Timestamp.Unix()
	}
	return k
}

func (in *intent) batchKey() batchKey {
	return batchKey{customer: in.Customer, license: in.License, dimension: in.Dimension, hour: in.Hour.Unix()}
}

func (in *intent) usageRecord() types.UsageRecord {
	r := types.UsageRecord{
		Dimension:        aws.String(in.Dimension),
		Timestamp:        aws.Time(in.Hour),
		Quantity:         aws.Int32(int32(in.Quantity)),
		UsageAllocations: sdkAllocations(in.Allocations),
	}
	if in.CustomerAWSAccountID != "" {
		r.CustomerAWSAccountId = aws.String(in.CustomerAWSAccountID)
	} else {
		r.CustomerIdentifier = aws.String(in.CustomerIdentifier)
	}
	if in.License != "" {
		r.LicenseArn = aws.String(in.License)
	}
	return r
}

// chunkBatches groups intents into calls of at most 25 records and under
// maxBatchBytes, in order.
func chunkBatches(intents []*intent) [][]*intent {
	var out [][]*intent
	var cur []*intent
	size := 0
	for _, in := range intents {
		s := 160 + len(in.Customer) + len(in.License) + len(in.Dimension)
		for _, a := range in.Allocations {
			s += allocationSize(a.Tags)
		}
		if len(cur) > 0 && (len(cur) == maxBatchRecords || size+s > maxBatchBytes) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, in)
		size += s
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// groupByProduct splits intents by (product, dry-run), keeping their order
// within each group.
func groupByProduct(intents []*intent) [][]*intent {
	type key struct {
		product string
		dryRun  bool
	}
	var order []key
	groups := map[key][]*intent{}
	for _, in := range intents {
		k := key{in.Product, in.DryRun}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], in)
	}
	out := make([][]*intent, 0, len(order))
	for _, k := range order {
		out = append(out, groups[k])
	}
	return out
}

// sendBatches sends BatchMeterUsage intents in chunks, retrying
// UnprocessedRecords, throttling and errors of the whole call.
func (m *Meter) sendBatches(ctx context.Context, pending []*intent, deadline time.Time) (moved bool, err error) {
	defer m.saveResolved()
	var queue []*intent
	for _, in := range pending {
		if !withinWindow(in.Hour.Unix(), m.now(), m.set.window) {
			m.expire(in, "hour is past the BatchMeterUsage window")
			moved = true
			continue
		}
		queue = append(queue, in)
	}
	bo := m.backoff()
	// A call has one ProductCode and is sent or not (dry_run) as a whole:
	// each intent goes out under its own product and dry-run flag, as
	// decided when it was created, even across a config change.
	var chunks [][]*intent
	for _, group := range groupByProduct(queue) {
		chunks = append(chunks, chunkBatches(group)...)
	}
	var failed int
	var lastErr error
	for len(chunks) > 0 {
		chunk := chunks[0]
		chunks = chunks[1:]
		if chunk[0].DryRun {
			m.mu.Lock()
			for _, in := range chunk {
				m.resolveLocked(in, statusDryRun, "", "")
			}
			m.answeredLocked()
			m.mu.Unlock()
			continue
		}
		out, callErr := m.callBatch(ctx, chunk)
		m.crash("after-call")
		res, code := classify(ctx, callErr)
		switch res {
		case outOK:
			retry := m.applyBatchResults(chunk, out)
			if len(retry) == 0 {
				bo.Reset()
				continue
			}
			m.log.Warn("BatchMeterUsage left records unprocessed; retrying", zap.Int("records", len(retry)))
			lastErr = fmt.Errorf("%d unprocessed record(s)", len(retry))
			if !m.retryWait(ctx, bo, deadline, lastErr) {
				return moved, notReported(ctx, len(retry)+countIntents(chunks), lastErr)
			}
			chunks = append(chunkBatches(retry), chunks...)
		case outRetry:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			m.log.Warn("BatchMeterUsage failed; retrying", zap.Int("records", len(chunk)), zap.Error(callErr))
			lastErr = callErr
			if !m.retryWait(ctx, bo, deadline, callErr) {
				return moved, notReported(ctx, len(chunk)+countIntents(chunks), callErr)
			}
			chunks = append([][]*intent{chunk}, chunks...)
		case outCanceled:
			return moved, notReported(ctx, len(chunk)+countIntents(chunks), callErr)
		case outOutOfBounds:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			var keep []*intent
			for _, in := range chunk {
				if !withinWindow(in.Hour.Unix(), m.now().Add(-5*time.Minute), m.set.window) {
					m.expire(in, callErr.Error())
					moved = true
				} else {
					keep = append(keep, in)
				}
			}
			if len(keep) == len(chunk) {
				failed += m.isolate(chunk, &chunks, callErr)
				lastErr = callErr
			} else if len(keep) > 0 {
				chunks = append([][]*intent{keep}, chunks...)
			}
		default:
			m.metrics.reportErrors.WithLabelValues(code).Inc()
			failed += m.isolate(chunk, &chunks, callErr)
			lastErr = callErr
		}
	}
	if failed > 0 {
		return moved, notReported(ctx, failed, lastErr)
	}
	return moved, nil
}

// isolate handles a call refused as a whole: a chunk of several records is
// split so one bad record does not hold the others back; a single record
// stays pending (logged) and counts as failed.
func (m *Meter) isolate(chunk []*intent, chunks *[][]*intent, err error) int {
	if len(chunk) > 1 {
		singles := make([][]*intent, len(chunk))
		for i, in := range chunk {
			singles[i] = []*intent{in}
		}
		*chunks = append(singles, *chunks...)
		return 0
	}
	in := chunk[0]
	m.log.Error("BatchMeterUsage refused a record; it stays pending and is retried next pass",
		zap.String("dimension", in.Dimension), zap.String("customer", in.Customer), zap.Time("hour", in.Hour),
		zap.Int64("quantity", in.Quantity), zap.Error(err))
	return 1
}

func countIntents(chunks [][]*intent) int {
	n := 0
	for _, c := range chunks {
		n += len(c)
	}
	return n
}

func (m *Meter) callBatch(ctx context.Context, chunk []*intent) (*mm.BatchMeterUsageOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.CallTimeout)
	defer cancel()
	input := &mm.BatchMeterUsageInput{ProductCode: aws.String(chunk[0].Product)}
	for _, in := range chunk {
		input.UsageRecords = append(input.UsageRecords, in.usageRecord())
	}
	start := time.Now()
	out, err := m.api.BatchMeterUsage(ctx, input)
	m.metrics.reportLatency.Observe(time.Since(start).Seconds())
	return out, err
}

// applyBatchResults records each record's Status and returns the intents
// to send again (UnprocessedRecords, and any the answer did not mention).
func (m *Meter) applyBatchResults(chunk []*intent, out *mm.BatchMeterUsageOutput) []*intent {
	byKey := make(map[batchKey]*intent, len(chunk))
	for _, in := range chunk {
		byKey[in.batchKey()] = in
	}
	type answer struct {
		in     *intent
		status types.UsageRecordResultStatus
		id     string
	}
	var answers []answer
	answered := make(map[*intent]bool, len(chunk))
	for _, r := range out.Results {
		if r.UsageRecord == nil {
			continue
		}
		in := byKey[recordKey(r.UsageRecord)]
		if in == nil || answered[in] {
			continue
		}
		switch r.Status {
		case types.UsageRecordResultStatusSuccess, types.UsageRecordResultStatusDuplicateRecord:
		case types.UsageRecordResultStatusCustomerNotSubscribed:
			if err := m.deadLetter(in, string(r.Status)); err != nil {
				m.log.Error("metering: dead-letter write failed; the record stays pending", zap.Error(err))
				continue
			}
		default:
			m.log.Error("BatchMeterUsage returned an unknown status; the record stays pending", zap.String("status", string(r.Status)))
			continue
		}
		answered[in] = true
		answers = append(answers, answer{in, r.Status, aws.ToString(r.MeteringRecordId)})
	}
	m.mu.Lock()
	for _, a := range answers {
		switch a.status {
		case types.UsageRecordResultStatusSuccess:
			m.resolveLocked(a.in, statusAccepted, a.id, "")
		case types.UsageRecordResultStatusDuplicateRecord:
			m.resolveLocked(a.in, statusConflict, "", "DuplicateRecord: AWS holds another quantity for this customer, dimension and hour")
		default:
			m.resolveLocked(a.in, statusNotSubscribed, "", string(a.status))
		}
	}
	if len(answers) > 0 {
		m.answeredLocked()
	}
	m.mu.Unlock()
	var retry []*intent
	for _, in := range chunk {
		if !answered[in] {
			retry = append(retry, in)
		}
	}
	return retry
}
