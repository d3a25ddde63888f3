#!/usr/bin/env bash
# `make bench`: the benchmarks behind the README's performance section.
# Stage benchmarks report records/s, MB/s and allocs/op; the end-to-end
# ones run the real binary against a real versitygw and report wall time,
# CPU seconds and the process's peak RSS (from rusage).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
run() { echo "== $*"; "$GO" test -run XXX -benchmem "$@" | grep -E '^(Benchmark|ok|FAIL|---)' ; }

run -bench 'BenchmarkParse' ./record
run -bench 'BenchmarkWrite|BenchmarkFrames' ./buffer
run -bench 'BenchmarkEncode' ./ship
run -bench 'BenchmarkCount$' -benchtime 3x ./metering
run -bench 'BenchmarkScan|BenchmarkCountAtIngest' ./metering
run -bench 'BenchmarkFlush' ./fluentbit
run -bench 'BenchmarkHarnessFlush' -benchtime 300x ./plugin
run -bench 'BenchmarkTail' ./agent/tail
# #12's target: an export over 10,000,000 shipped records (~1.4 GB of
# gzipped NDJSON) read back and aggregated: records/s per core and peak
# RSS (METERSHIP_BENCH_RECORDS changes the count).
run -bench 'BenchmarkExport' -benchtime 1x -timeout 30m ./export
# 1,000,000 records (~140 MB) end to end; METERSHIP_BENCH_RECORDS changes
# the count, METERSHIP_BENCH_SYNC=never shows what fsync costs.
run -bench 'BenchmarkShipEndToEnd' -benchtime 1x -count 3 -timeout 30m ./agent
# A backfill: 90,000 records over 9,000 days (~4,500 key partitions per
# 8 MiB segment) in one ship; the encoder's memory must not grow with the
# partitions (peak RSS < 64 MB).
run -bench 'BenchmarkShipBackfill' -benchtime 1x -count 3 -timeout 30m ./agent
# #5's target: plain and metered ships alternated, the median of what
# metering adds within each pair
# (METERSHIP_BENCH_ROUNDS pairs, default 21; each run after a sync).
run -bench 'BenchmarkMeteringOverhead' -benchtime 1x -count 3 -timeout 30m ./agent
run -bench 'BenchmarkRun' -benchtime 1x -timeout 30m ./agent
