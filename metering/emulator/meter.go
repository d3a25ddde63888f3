package emulator

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"
)

// lookupProduct resolves a ProductCode member to a configured product.
func (e *Emulator) lookupProduct(code *string) (string, Product, *apiError) {
	if code == nil {
		return "", Product{}, badRequest(CodeValidation, "ProductCode is required")
	}
	p, ok := e.cfg.Products[*code]
	if !ok {
		return "", Product{}, badRequest(CodeInvalidProductCode, "product code %q is not a product of this seller", *code)
	}
	return *code, p, nil
}

// hasDimension reports whether p prices dimension d; a product without
// listed dimensions accepts any.
func (p Product) hasDimension(d string) bool {
	return len(p.Dimensions) == 0 || slices.Contains(p.Dimensions, d)
}

// meterUsage implements MeterUsage: validate, then record once per
// (product, dimension, hour, caller), honouring ClientToken idempotency.
func (e *Emulator) meterUsage(rc *requestContext, body []byte) (any, *apiError) {
	var in meterUsageInput
	if apiErr := decodeBody(body, &in); apiErr != nil {
		return nil, apiErr
	}
	product, p, apiErr := e.lookupProduct(in.ProductCode)
	if apiErr != nil {
		return nil, apiErr
	}
	if in.UsageDimension == nil || *in.UsageDimension == "" || len(*in.UsageDimension) > maxIdentifierLen {
		return nil, badRequest(CodeValidation, "UsageDimension is required (1 to %d characters)", maxIdentifierLen)
	}
	dimension := *in.UsageDimension
	if !p.hasDimension(dimension) {
		return nil, badRequest(CodeInvalidUsageDimension, "dimension %q is not a dimension of product %q", dimension, product)
	}
	ts, apiErr := parseTimestamp("Timestamp", in.Timestamp)
	if apiErr != nil {
		return nil, apiErr
	}
	quantity, apiErr := parseQuantity("UsageQuantity", in.UsageQuantity)
	if apiErr != nil {
		return nil, apiErr
	}
	var token string
	if in.ClientToken != nil {
		token = *in.ClientToken
		if token == "" || len(token) > maxClientTokenLen {
			return nil, badRequest(CodeValidation, "ClientToken must be 1 to %d characters, got %d", maxClientTokenLen, len(token))
		}
	}
	if apiErr := checkWindow("Timestamp", ts, rc.now, e.cfg.MeterUsageWindow, e.cfg.FutureSkew); apiErr != nil {
		return nil, apiErr
	}
	allocs, apiErr := checkAllocations(in.UsageAllocations, quantity)
	if apiErr != nil {
		return nil, apiErr
	}
	if slices.Contains(e.cfg.NotEntitledInstances, rc.instance) {
		return nil, badRequest(CodeCustomerNotEntitled, "caller %q has no subscription to product %q", rc.instance, product)
	}
	if in.DryRun != nil && *in.DryRun {
		return nil, newError(StatusDryRun, CodeDryRunOperation, "Request would have succeeded, but DryRun flag is set.")
	}

	hour := ts.Truncate(time.Hour)
	allocKey := allocationsKey(allocs)
	fingerprint := fmt.Sprintf("%q|%q|%d|%d|%s", product, dimension, ts.UnixNano(), quantity, allocKey)

	// conflict records a call refused because rec was accepted first.
	conflict := func(code string, rec Record) {
		e.st.Conflicts = append(e.st.Conflicts, Conflict{
			Operation: OpMeterUsage, Error: code,
			ProductCode: product, Dimension: dimension, Hour: hour,
			Instance: rc.instance, ClientToken: token,
			RecordedQuantity: rec.Quantity, MeteringRecordID: rec.MeteringRecordID,
			AttemptedQuantity: quantity, At: rc.now,
		})
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	tk := tokenKey{instance: rc.instance, token: token}
	if token != "" {
		if te, ok := e.tokens[tk]; ok {
			rec := e.st.Records[te.record]
			if te.fingerprint == fingerprint {
				return meterUsageOutput{MeteringRecordID: rec.MeteringRecordID}, nil
			}
			conflict(CodeIdempotencyConflict, rec)
			return nil, newError(http.StatusConflict, CodeIdempotencyConflict, "ClientToken %q was already used with different parameters", token)
		}
	}
	hk := hourKey{product: product, dimension: dimension, instance: rc.instance, hour: hour.Unix()}
	if idx, ok := e.hourly[hk]; ok {
		rec := e.st.Records[idx]
		if rec.Quantity != quantity || allocationsKey(rec.Allocations) != allocKey {
			conflict(CodeDuplicateRequest, rec)
			return nil, badRequest(CodeDuplicateRequest, "usage of dimension %q for hour %s was already metered with quantity %d (record %s); got %d",
				dimension, hour.Format(time.RFC3339), rec.Quantity, rec.MeteringRecordID, quantity)
		}
		if token != "" {
			e.tokens[tk] = tokenEntry{fingerprint: fingerprint, record: idx}
		}
		return meterUsageOutput{MeteringRecordID: rec.MeteringRecordID}, nil
	}
	rec := Record{
		Operation:        OpMeterUsage,
		MeteringRecordID: uuid.NewString(),
		ProductCode:      product,
		Dimension:        dimension,
		Hour:             hour,
		Timestamp:        ts,
		Quantity:         quantity,
		Allocations:      allocs,
		Instance:         rc.instance,
		ClientToken:      token,
		ReceivedAt:       rc.now,
	}
	e.st.Records = append(e.st.Records, rec)
	idx := len(e.st.Records) - 1
	e.hourly[hk] = idx
	if token != "" {
		e.tokens[tk] = tokenEntry{fingerprint: fingerprint, record: idx}
	}
	return meterUsageOutput{MeteringRecordID: rec.MeteringRecordID}, nil
}
