// Package metering keeps the hourly usage ledger beside the buffer and
// reports it to AWS Marketplace with MeterUsage (one call per hour and
// dimension from each agent instance) or BatchMeterUsage (per customer,
// SaaS), so that usage is never lost and never billed twice.
//
// # Counting
//
// Records are summed per (UTC hour, meterApiName, customer, license,
// allocation tag values) twice over, in two places:
//
//   - At ingest (BatchSums, one per pipeline.Ingester): each accepted
//     record is added from the fields the record parser located (the
//     canonical line's own bytes; a record the parser took its slow path
//     for is read from its canonical line), and the batch's sums are
//     written as a buffer.FrameAggregate ahead of its records, in the same
//     atomic batch. The aggregate names its key shape (customer in the
//     key, license dimension, allocation tag names).
//   - When the segment is counted (Counting, fed by the encoder's pass over
//     the segment, or Count): an aggregate of the meter's shape is merged
//     and the records it covers are skipped; other records (segments
//     written with metering off or by an older version, or after
//     allocation_tags, license_arn or the mode changed) are read with a
//     small scanner of the canonical record layout (gjson for anything
//     else). Both give the same sums (TestAggregateMatchesScan and its
//     fuzz target hold them together).
//
// The pipeline acknowledges (deletes) a segment only after its count is
// in the ledger on disk and its upload succeeded. Merge adds the
// segment's sums and its sequence number to the ledger in memory; the
// next ledger write (Sync, which the pipeline makes once for the segments
// shipped within 100 ms, or any other write) puts both on disk in one
// atomic file write, for every segment merged before it. Commit is Merge
// then Sync. A segment whose sequence is in the ledger is skipped, so a
// segment counted again after a crash between the write and its Ack
// changes nothing; a crash before the write leaves neither its usage nor
// its sequence on disk, and the segment, still in the buffer, is counted
// on the next start. Counted sequences of segments that no longer exist
// (Options.Live) are pruned: an acknowledged segment never comes back.
//
// Quantities are integer billionths of a unit ("nanos"): decimal
// meterValues add up exactly, digits past the ninth decimal are dropped.
// A dimension's factor (metering.dimensions "name*0.001") is applied as an
// exact rational to each segment's sum per key, rounding down to a nano.
// Records whose meterApiName has no mapping, whose meterValue is not a
// non-negative number or (batch mode) whose customerId is empty or not a
// 12-digit account id with customer_id_type aws_account_id are not billed;
// they are counted in metrics and logged, and still shipped to S3.
//
// Usage of an hour that ended more than metering.max_carry (default 24h;
// 0: no limit) before its segment is counted (an archive replayed, old
// logs read from the beginning) is not billed either: it is added to the
// ledger's unbilled entries with its reason ("max_carry"), counted in
// usage_unbilled_total{reason} and the Summary, and logged once per key
// and segment.
//
// Allocation tags (metering.allocation_tags) are record dimensions; a
// record without one of them leaves that tag out of its allocation (the
// untagged bucket, as AWS's UsageAllocation allows), and characters AWS's
// tag pattern refuses become '_'.
//
// # Ledger format
//
// Dir/ledger.json is one JSON document followed by a line
// "crc32c:<8 hex digits>" over the bytes before it. It is always replaced
// whole: written to ledger.json.tmp, fsync'd, renamed over ledger.json,
// and the directory fsync'd. A file that does not verify makes New fail
// with ErrCorruptLedger rather than start from nothing. Fields:
//
//	format      "metership-metering-ledger/1"
//	instance    the agent id that created it
//	zero_from   report_zero: hours before it had their heartbeat
//	counted     segment sequences counted and still in the buffer
//	series[]    per key (dimension, and customer + license in batch mode):
//	            carry_nanos   fraction not yet reported (and any excess
//	                          over the API's 2147483647 per record)
//	            pruned_before hours before it count as reported
//	            open[]        usage not yet in an intent: hour, buckets of
//	                          {tags, nanos, records}
//	intents[]   usage records decided on: op, product, hour, customer,
//	            license, dimension, quantity, allocations, client_token,
//	            dry_run, status, metering_record_id, error
//	customers_not_subscribed[]  customers BatchMeterUsage refused
//	unbilled[]  usage counted and not billed: dimension, customer,
//	            license, hour, reason, nanos, records, first, last
//	            (omitted when empty; kept 7 days)
//
// # Reporting and the intent protocol
//
// Hour H is closed when now >= H+1h+lateness, no record of H or earlier
// is still waiting to be counted (Options.Pending), and no source is
// still reading the backlog its files held when the agent started
// (Options.CatchUpSources, SourceCaughtUp; at most
// metering.catch_up_timeout), so a downtime's usage lands in its own
// hours. ReportFinal (a stopping instance: metering.report_on_stop, ship
// --final) closes every hour up to the one in progress, lateness and the
// catch-up aside; records not yet counted still hold theirs open. Run
// makes a pass every Tick and just after each hour closes. For each key,
// in hour order, a reporting pass then:
//
//  1. moves usage of hours older than the oldest reportable hour into the
//     first unreported hour at or after it. The oldest reportable hour is
//     the first starting at or after now - window + a safety margin of
//     min(window/4, 1h, (window-1h-lateness)/2), so an intent has time to
//     be accepted and yet every hour is reportable for a while after it
//     closes; when that hour is not closed but the newest closed hour is
//     still in the window with two minutes to spare, it is that one.
//     Validation (conf) requires window >= 1h + lateness + 5m: otherwise
//     no hour could ever be sent. Windows are AWS's: records are refused
//     6 hours or more after the event, by both APIs;
//  2. turns each closed hour into an intent: quantity = floor(carry + the
//     hour's nanos), capped at 2147483647, the rest carried to the key's
//     next reported hour (never rounded up, so a unit is billed once it is
//     whole and exactly once); allocations split the quantity over the tag
//     buckets by largest remainder so they sum exactly (at most 2500, the
//     smallest merged into the untagged bucket beyond that); MeterUsage
//     gets a ClientToken hashed from product, dimension, hour and instance
//     id; report_zero adds a zero intent for each configured dimension's
//     hour without usage (MeterUsage mode);
//  3. writes the ledger with the intents (usage removed from open hours,
//     carry updated) before any call;
//  4. sends every pending intent exactly as persisted (up to four calls at
//     a time: each intent is its own hour and key; BatchMeterUsage calls
//     grouped by each intent's own product code and dry-run flag), and
//     writes the answers to the ledger when the pass ends, and each
//     second while it lasts.
//
// An intent for the hour in progress (ReportFinal) makes that hour
// reported like any other: usage of it counted later goes to the next
// hour. If the instance stops again before that hour has begun, the usage
// stays open in the ledger (LogHeld logs it) for the next start.
//
// An intent is never recomputed: after a crash between a call and the
// write of its answer, the restarted agent sends the identical call (same
// timestamp, quantity, allocations and ClientToken), which AWS answers as
// the original; grouping the answers' writes only makes such repeats more
// numerous, never different. Records for an hour that already has an intent go to the
// key's next hour without one ("late records"), so no hour is ever sent
// with two quantities. Hence each record's value is in exactly one
// intent: counting is once per segment, an intent is created in the same
// atomic write that removes its usage from the open hours, and a pending
// intent is only ever re-sent unchanged.
//
// Answers:
//
//   - Success (or an identical earlier call): accepted.
//   - DuplicateRequestException, IdempotencyConflictException,
//     DuplicateRecord: AWS holds a different quantity (e.g. the ledger was
//     deleted). Recorded as a conflict, logged at Error, counted; never
//     re-sent with another quantity.
//   - CustomerNotSubscribed: recorded per customer, the hour's totals
//     written to Dir/dead-letters/<hour>-<intent id>.ndjson, counted;
//     never re-sent.
//   - ThrottlingException, InternalServiceErrorException, other 5xx,
//     network errors, UnprocessedRecords: retried with the project's one
//     backoff (internal/retry: exponential, equal jitter, Options.Backoff)
//     for up to Options.MaxRetryElapsed (30 min) per pass, then left
//     pending for the next pass. Never dropped. What is worth retrying is
//     internal/retry's IsPermanent, the same rules as the S3 output.
//   - TimestampOutOfBoundsException, or an intent found past the window
//     before sending: the intent is marked expired and its quantity added
//     to the oldest reportable hour (AWS's guidance). This is the one place
//     where a repeat is possible: if an earlier attempt was in fact
//     accepted but its answer lost, and the agent then stayed unable to
//     reach AWS past the window margin, the quantity is billed again in the
//     later hour. Logged and counted (hours_carried_total{reason=
//     "out_of_bounds"}).
//   - Any other error (invalid product, dimension, tag, disabled API...):
//     logged at Error, left pending, retried every pass; a batch refused as
//     a whole is split so one bad record does not hold back the others.
//   - dry_run: MeterUsage is sent with DryRun, and AWS's DryRunOperation
//     answer counts as success without recording (status dry_run; those
//     hours are not reported later). BatchMeterUsage has no DryRun: in
//     batch mode dry_run logs what it would send and marks it dry_run
//     without calling.
//
// # Outages
//
// An AWS outage or throttling only delays reporting: intents stay pending
// in the ledger and are re-sent identically on every pass (Run's tick, or
// the next start) until answered. Every wait honours its context, waiting
// for another pass included (ReportClosed, ReportFinal): a shutdown gives
// up at its deadline, the intents stay pending, and LogHeld says what the
// next start will send. Usage of hours that pass out of the
// window meanwhile is added to the oldest reportable hour. A crash at any
// point loses nothing and duplicates nothing: see the intent protocol
// above. Metering never blocks the pipeline: counts are merged in memory
// and written, grouped, while later segments ship; only the segments'
// Acks wait for the write. Its failures never affect readiness; they are
// logged and visible in metership_metering_* metrics.
//
// # Where things are
//
// report.go runs a reporting pass; plan.go turns closed hours into
// intents (Meter.plan and its steps, allocations, pruning); meterusage.go
// and batch.go send them with MeterUsage and BatchMeterUsage; answers.go
// classifies the answers, records them (resolve, expire) and writes the
// dead letters. ledger.go and meter.go hold the ledger and its writes.
package metering
