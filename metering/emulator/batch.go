package emulator

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"
)

// batchRecord is one validated BatchMeterUsage record.
type batchRecord struct {
	wire        wireUsageRecord
	product     string
	dimension   string
	ts          time.Time
	quantity    int64
	allocs      []Allocation
	customerID  string
	accountID   string
	license     string
	customerKey string
}

// batchMeterUsage implements BatchMeterUsage. Every record is validated
// before any is processed: one bad record fails the whole request, as AWS
// does. Valid records then get a per-record Status.
func (e *Emulator) batchMeterUsage(rc *requestContext, body []byte) (any, *apiError) {
	var in batchMeterUsageInput
	if apiErr := decodeBody(body, &in); apiErr != nil {
		return nil, apiErr
	}
	if in.UsageRecords == nil {
		return nil, badRequest(CodeValidation, "UsageRecords is required")
	}
	if len(in.UsageRecords) > maxBatchRecords {
		return nil, badRequest(CodeValidation, "1 validation error detected: Value at 'usageRecords' failed to satisfy constraint: Member must have length less than or equal to %d (got %d)", maxBatchRecords, len(in.UsageRecords))
	}
	var product string
	var p Product
	if in.ProductCode != nil {
		var apiErr *apiError
		if product, p, apiErr = e.lookupProduct(in.ProductCode); apiErr != nil {
			return nil, apiErr
		}
	}
	records := make([]batchRecord, len(in.UsageRecords))
	for i, w := range in.UsageRecords {
		br, apiErr := e.checkUsageRecord(rc, i, w, product, p)
		if apiErr != nil {
			return nil, apiErr
		}
		records[i] = br
	}

	out := batchMeterUsageOutput{Results: []usageRecordResult{}, UnprocessedRecords: []wireUsageRecord{}}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, br := range records {
		if e.st.Faults.Unprocessed > 0 {
			e.st.Faults.Unprocessed--
			e.st.RecordStatuses[StatusUnprocessed]++
			out.UnprocessedRecords = append(out.UnprocessedRecords, br.wire)
			continue
		}
		res := usageRecordResult{UsageRecord: br.wire}
		res.Status, res.MeteringRecordID = e.recordBatchLocked(rc, br)
		e.st.RecordStatuses[res.Status]++
		out.Results = append(out.Results, res)
	}
	return out, nil
}

// recordBatchLocked records one validated record unless the customer is
// not subscribed or a different quantity was already recorded for its
// hour. It returns the Status and, for Success, the MeteringRecordId.
func (e *Emulator) recordBatchLocked(rc *requestContext, br batchRecord) (string, string) {
	if len(e.cfg.EntitledCustomers) > 0 &&
		!slices.Contains(e.cfg.EntitledCustomers, br.customerID) &&
		!slices.Contains(e.cfg.EntitledCustomers, br.accountID) {
		return StatusCustomerNotSubscribed, ""
	}
	hour := br.ts.Truncate(time.Hour)
	key := batchKey{product: br.product, customer: br.customerKey, license: br.license, dimension: br.dimension, hour: hour.Unix()}
	if idx, ok := e.batch[key]; ok {
		rec := e.st.Records[idx]
		if rec.Quantity == br.quantity && allocationsKey(rec.Allocations) == allocationsKey(br.allocs) {
			return StatusSuccess, rec.MeteringRecordID
		}
		e.st.Conflicts = append(e.st.Conflicts, Conflict{
			Operation: OpBatchMeterUsage, Error: StatusDuplicateRecord,
			ProductCode: br.product, Dimension: br.dimension, Hour: hour,
			CustomerIdentifier: br.customerID, CustomerAWSAccountID: br.accountID, LicenseArn: br.license,
			Instance:         rc.instance,
			RecordedQuantity: rec.Quantity, MeteringRecordID: rec.MeteringRecordID,
			AttemptedQuantity: br.quantity, At: rc.now,
		})
		return StatusDuplicateRecord, ""
	}
	rec := Record{
		Operation:            OpBatchMeterUsage,
		MeteringRecordID:     uuid.NewString(),
		ProductCode:          br.product,
		Dimension:            br.dimension,
		Hour:                 hour,
		Timestamp:            br.ts,
		Quantity:             br.quantity,
		Allocations:          br.allocs,
		CustomerIdentifier:   br.customerID,
		CustomerAWSAccountID: br.accountID,
		LicenseArn:           br.license,
		Instance:             rc.instance,
		ReceivedAt:           rc.now,
	}
	e.st.Records = append(e.st.Records, rec)
	e.batch[key] = len(e.st.Records) - 1
	return StatusSuccess, rec.MeteringRecordID
}

// checkUsageRecord validates record i of a batch whose request-level
// product is product (empty when the request had no ProductCode).
func (e *Emulator) checkUsageRecord(rc *requestContext, i int, w wireUsageRecord, product string, p Product) (batchRecord, *apiError) {
	br := batchRecord{wire: w, product: product}
	if w.LicenseArn != nil {
		br.license = *w.LicenseArn
		if br.license == "" {
			return br, badRequest(CodeInvalidLicense, "UsageRecords[%d].LicenseArn is empty", i)
		}
	}
	switch {
	case product != "":
		if br.license != "" && len(p.Licenses) > 0 && !slices.Contains(p.Licenses, br.license) {
			return br, badRequest(CodeInvalidLicense, "UsageRecords[%d].LicenseArn %q is not a license of product %q", i, br.license, product)
		}
	case br.license != "":
		found := false
		for _, code := range slices.Sorted(maps.Keys(e.cfg.Products)) {
			if cand := e.cfg.Products[code]; slices.Contains(cand.Licenses, br.license) {
				br.product, p, found = code, cand, true
				break
			}
		}
		if !found {
			return br, badRequest(CodeInvalidLicense, "UsageRecords[%d].LicenseArn %q is not a license of any product", i, br.license)
		}
	default:
		return br, badRequest(CodeValidation, "ProductCode is required unless every usage record has a LicenseArn (record %d has none)", i)
	}

	if w.Dimension == nil || *w.Dimension == "" || len(*w.Dimension) > maxIdentifierLen {
		return br, badRequest(CodeValidation, "UsageRecords[%d].Dimension is required (1 to %d characters)", i, maxIdentifierLen)
	}
	br.dimension = *w.Dimension
	if !p.hasDimension(br.dimension) {
		return br, badRequest(CodeInvalidUsageDimension, "UsageRecords[%d]: dimension %q is not a dimension of product %q", i, br.dimension, br.product)
	}

	hasID := w.CustomerIdentifier != nil
	hasAccount := w.CustomerAWSAccountID != nil
	switch {
	case hasID && hasAccount:
		return br, badRequest(CodeInvalidCustomerIdentifier, "UsageRecords[%d] has both CustomerIdentifier and CustomerAWSAccountId; send exactly one", i)
	case !hasID && !hasAccount:
		return br, badRequest(CodeInvalidCustomerIdentifier, "UsageRecords[%d] has neither CustomerIdentifier nor CustomerAWSAccountId; send exactly one", i)
	case hasID:
		br.customerID = *w.CustomerIdentifier
		if br.customerID == "" || len(br.customerID) > maxIdentifierLen {
			return br, badRequest(CodeInvalidCustomerIdentifier, "UsageRecords[%d].CustomerIdentifier must be 1 to %d characters", i, maxIdentifierLen)
		}
		br.customerKey = "id:" + br.customerID
	default:
		br.accountID = *w.CustomerAWSAccountID
		if len(br.accountID) > maxIdentifierLen || !accountIDPattern.MatchString(br.accountID) {
			return br, badRequest(CodeInvalidCustomerIdentifier, "UsageRecords[%d].CustomerAWSAccountId %q must be digits", i, br.accountID)
		}
		br.customerKey = "account:" + br.accountID
	}

	name := fmt.Sprintf("UsageRecords[%d]", i)
	var apiErr *apiError
	if br.ts, apiErr = parseTimestamp(name+".Timestamp", w.Timestamp); apiErr != nil {
		return br, apiErr
	}
	if br.quantity, apiErr = parseQuantity(name+".Quantity", w.Quantity); apiErr != nil {
		return br, apiErr
	}
	if apiErr = checkWindow(name+".Timestamp", br.ts, rc.now, e.cfg.BatchWindow, e.cfg.FutureSkew); apiErr != nil {
		return br, apiErr
	}
	if apiErr = checkMonthEnd(br.ts, rc.now, e.cfg.MonthEndGrace); apiErr != nil {
		return br, apiErr
	}
	if br.allocs, apiErr = checkAllocations(w.UsageAllocations, br.quantity); apiErr != nil {
		apiErr.message = name + ": " + apiErr.message
		return br, apiErr
	}
	return br, nil
}
