#!/usr/bin/env bash
# `make run`: the main job on embedded defaults. Starts the AWS Marketplace
# Metering emulator, copies the bundled sample log into ./demo/logs, keeps
# appending fresh records to it like an application would, and runs the
# agent in the foreground. Ctrl-C stops the agent (it seals, uploads and
# reports before exiting) and then the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./bin/metership
EMU_ADDR=${EMU_ADDR:-127.0.0.1:8787}
export METERSHIP_METERING_ENDPOINT="http://$EMU_ADDR"
# The emulator accepts any credentials; the SDK just needs some to sign.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-demo} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-demo}
export AWS_EC2_METADATA_DISABLED=true

mkdir -p demo/logs
# The sample's records are from June 2022: moved to end a minute ago, their
# spacing (a little over 5 hours) squeezed into the last 3 hours, so the
# demo bills current usage in its own hours, all still inside AWS's 6-hour
# window with metering's safety margin. Usage that old would otherwise be
# recorded as unbilled (metering.max_carry), not billed today.
if [ ! -f demo/logs/app.log ]; then
  now_ms=$(($(date +%s) * 1000))
  awk -v now="$now_ms" '
    { lines[NR] = $0
      if (match($0, /"meterTimeInMillis":[0-9]+/)) {
        t = substr($0, RSTART + 20, RLENGTH - 20) + 0
        if (max == "" || t > max) max = t
        if (min == "" || t < min) min = t
      } }
    END {
      span = 3 * 3600000
      scale = (max > min && max - min > span) ? span / (max - min) : 1
      for (i = 1; i <= NR; i++) {
        l = lines[i]
        if (match(l, /"meterTimeInMillis":[0-9]+/)) {
          t = now - 60000 - (max - (substr(l, RSTART + 20, RLENGTH - 20) + 0)) * scale
          l = substr(l, 1, RSTART + 19) sprintf("%.0f", t) substr(l, RSTART + RLENGTH)
        }
        print l
      } }' examples/sample/app.log >demo/logs/app.log.tmp
  mv demo/logs/app.log.tmp demo/logs/app.log
fi

# The emulator runs in its own session so that Ctrl-C reaches only the
# agent: the agent reports its last closed hours while shutting down, and
# the emulator must still be there to take them.
if command -v setsid >/dev/null; then
  setsid "$BIN" emulate-metering --listen "$EMU_ADDR" >demo/emulator.log 2>&1 &
else
  "$BIN" emulate-metering --listen "$EMU_ADDR" >demo/emulator.log 2>&1 &
fi
EMU=$!
(
  # A stand-in application: a usage record every second, current time.
  i=0
  while sleep 1; do
    i=$((i + 1))
    printf '{"customerId":"customer-%03d","meterApiName":"api-calls","meterValue":%d,"meterTimeInMillis":%s,"dimensions":{"team":"demo"}}\n' \
      $((i % 3)) $((i % 10 + 1)) "$(date +%s%3N)" >>demo/logs/app.log
  done
) &
APP=$!
cleanup() { kill "$APP" "$EMU" 2>/dev/null || true; wait "$EMU" 2>/dev/null || true; }
trap cleanup EXIT
# Ctrl-C stops the agent, which drains and exits 0; bash then carries on
# and prints what was shipped and reported.

echo "metering emulator: http://$EMU_ADDR/_state   agent: http://127.0.0.1:9464/metrics"
echo "objects appear under ./out/ingest/amberdata, dead letters under ./out/failed-requests (Ctrl-C to stop)"
set +e
"$BIN" run -c examples/demo.yaml
code=$?
set -e
echo "--- objects written:"
find out -type f | sort | head -20
echo "--- metering emulator accepted:"
if command -v curl >/dev/null; then
  curl -fsS "http://$EMU_ADDR/_state" | head -c 2000 || true
else
  echo "(curl not installed; the emulator's state was at http://$EMU_ADDR/_state)"
fi
echo
exit $code
