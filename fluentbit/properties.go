package fluentbit

import (
	"strings"

	"github.com/metership/metership/conf"
)

// propertyDoc says what a property does, for the README's property table.
// Every property of conf.Properties must have one (a test checks).
func propertyDoc(name string) string {
	switch name {
	case conf.PropertyConfigFile:
		return "A metership YAML file loaded first; the other properties override it. Its `sources:` are ignored."
	case "agent_id":
		return "Names this output in logs and metering ClientTokens. Empty: a random id kept in `buffer_dir`. Object keys derive from `buffer_dir`'s own instance id, so outputs sharing an `agent_id` do not share keys."
	case "agent_shutdown_timeout":
		return "How long Fluent Bit's exit may take to seal, upload and report; what is left stays on disk for the next start. Keep it below Fluent Bit's `Grace` and the pod's termination grace period."
	case "records_format":
		return "`meter`: each Fluent Bit record is a meter record. `json`: map fields with `records_fields`."
	case "records_fields":
		return "With `records_format json`: `target=path` pairs, comma-separated, e.g. `customerId=tenant.id,meterValue=bytes,meterApiName='egress'` (a quoted value is a constant)."
	case "records_max_line_size":
		return "Largest record (as JSON); larger ones are dead-lettered with their first bytes."
	case "buffer_dir":
		return "The disk buffer of this output. Each `[OUTPUT]` needs its own; put it on a persistent volume."
	case "buffer_max_size":
		return "Disk the buffer may use. When full, flushes return `FLB_RETRY` and Fluent Bit keeps the chunks."
	case "buffer_segment_size":
		return "Segment size: a segment becomes one object (per key partition) when it is this big."
	case "buffer_flush_interval":
		return "Longest a record waits before its segment is sealed and uploaded."
	case "buffer_sync":
		return "`always`: fsync before `FLB_OK` (group commit). `interval`: every `buffer_sync_interval`. `never`: leave it to the OS."
	case "buffer_sync_interval":
		return "fsync period with `buffer_sync interval`."
	case "output_url":
		return "`s3://bucket/prefix` or `file:///dir/prefix`."
	case "output_key_format":
		return "Object key under the prefix: strftime of the records' time (UTC) plus `$UUID`, `$TAG` (the Fluent Bit tag), `$INDEX`, `$HOSTNAME`."
	case "output_dead_letter_url":
		return "Where dead letters go. Empty: the bucket root (`s3://`) or beside the prefix (`file://`)."
	case "output_dead_letter_key_format":
		return "Key format of dead-letter objects."
	case "output_compression":
		return "`gzip` or `none`."
	case "output_format":
		return "`ndjson` (one record a line) or `json` (an array)."
	case "output_region":
		return "AWS region of the bucket."
	case "output_endpoint":
		return "S3-compatible endpoint URL (MinIO, versitygw, ...)."
	case "output_force_path_style":
		return "Path-style bucket addressing, for S3-compatible servers."
	case "output_role_arn":
		return "Role to assume for uploads (credentials otherwise come from the AWS default chain: env, IRSA, Pod Identity, ECS, IMDS)."
	case "output_external_id":
		return "External id for `output_role_arn`."
	case "output_acl":
		return "Canned ACL of uploaded objects."
	case "output_storage_class":
		return "S3 storage class of uploaded objects."
	case "output_server_side_encryption":
		return "`AES256`, `aws:kms` or `aws:kms:dsse`."
	case "output_sse_kms_key_id":
		return "KMS key for `aws:kms` encryption."
	case "output_content_type":
		return "Content-Type of record objects (default from the format)."
	case "output_content_encoding":
		return "Content-Encoding of record objects."
	case "output_tags":
		return "S3 object tags, `k=v` pairs, comma-separated."
	case "output_multipart_threshold":
		return "Objects larger than this use multipart upload."
	case "output_concurrency":
		return "Segments uploaded in parallel."
	case "output_hostname":
		return "`$HOSTNAME` in key formats. Empty: the host name."
	case "metering_mode":
		return "`off`, `meter_usage` (per instance) or `batch_meter_usage` (SaaS, per customer): hourly AWS Marketplace reports."
	case "metering_product_code":
		return "Marketplace product code (required when metering is on)."
	case "metering_region":
		return "Region of the Marketplace Metering endpoint. Empty: `output_region`."
	case "metering_endpoint":
		return "Metering endpoint URL override (e.g. the emulator)."
	case "metering_dimensions":
		return "`meterApiName=dimension` pairs, optionally with a factor: `bytes=gb_hours*0.000000001`."
	case "metering_allocation_tags":
		return "Record dimensions that become usage allocation tags (comma-separated, at most 5)."
	case "metering_customer_id_type":
		return "`customer_identifier` or `aws_account_id`: what a record's customerId is for `batch_meter_usage`."
	case "metering_license_arn":
		return "License ARN for `batch_meter_usage`, or `dimension:<name>` to take it from a record dimension."
	case "metering_lateness":
		return "How long after an hour ends records may still arrive for it."
	case "metering_window":
		return "How long after its hour usage may still be reported: 6h, AWS's limit for both APIs."
	case "metering_report_on_stop":
		return "On exit, report every hour held, the one in progress included (turn off when buffer_dir is on a persistent volume)."
	case "metering_max_carry":
		return "Usage of an hour older than this when counted is recorded as unbilled, not billed now; 0: no limit."
	case "metering_catch_up_timeout":
		return "Not used by the plugin (how long the agent keeps hours open while its sources read their backlog)."
	case "metering_state_url":
		return "`batch_meter_usage` with several replicas: `s3://bucket/prefix` or `file:///dir` where they merge their hourly usage into one record per customer, dimension and hour."
	case "metering_merge_grace":
		return "How long a claim of an hour waits for live replicas' partials before merging without them (their usage is carried, not lost)."
	case "metering_report_zero":
		return "Report hours with zero usage."
	case "metering_dry_run":
		return "Validate reports without billing: MeterUsage is called with DryRun; in batch mode nothing is sent."
	case "server_listen":
		return "Not used by the plugin (the agent's HTTP endpoint); use Fluent Bit's own HTTP server for health."
	case "server_unready_after":
		return "Not used by the plugin (the agent's `/readyz`)."
	case "log_level":
		return "`debug`, `info`, `warn` or `error` (logs go to stderr)."
	case "log_format":
		return "`json` or `console`."
	}
	return ""
}

// PropertyTable renders the Markdown table of every property: name,
// default and meaning, from conf.Properties so it cannot drift.
func PropertyTable() string {
	var b strings.Builder
	b.WriteString("| Property | Default | Meaning |\n|---|---|---|\n")
	row := func(name, def, doc string) {
		if def == "" {
			def = " "
		} else {
			def = "`" + def + "`"
		}
		b.WriteString("| `" + name + "` | " + def + " | " + doc + " |\n")
	}
	row(conf.PropertyConfigFile, "", propertyDoc(conf.PropertyConfigFile))
	for _, p := range conf.Properties() {
		row(p.Name, p.Default, propertyDoc(p.Name))
	}
	return b.String()
}
