#!/usr/bin/env bash
# `make demo`: build everything, generate a taxi-trip sample and run
# pipelines/taxi-local.toml on it; output goes under out/.
#   DEMO_ROWS (default 1000000), DEMO_BAD_FRACTION (0.02), DEMO_SEED (42).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

ROWS="${DEMO_ROWS:-1000000}"
BAD="${DEMO_BAD_FRACTION:-0.02}"
SEED="${DEMO_SEED:-42}"
OUT="out"
SLUICE="target/release/sluice"

tests/scripts/build.sh

mkdir -p "$OUT"
log "generating $ROWS taxi trips ($BAD corrupt) into $OUT/taxi.csv"
"$SLUICE" gen taxi --rows "$ROWS" --seed "$SEED" --bad-fraction "$BAD" --out "$OUT/taxi.csv"

# A fresh demo each time: a kept checkpoint would resume at the end of the
# file and write nothing new.
rm -rf "$OUT/trips" "$OUT/checkpoint" "$OUT/dlq.ndjson" "$OUT/summary.json"

log "running pipelines/taxi-local.toml"
SLUICE_INPUT="$OUT/taxi.csv" SLUICE_OUT="$OUT" \
    "$SLUICE" run pipelines/taxi-local.toml --summary-json "$OUT/summary.json"

files=$(find "$OUT/trips" -name '*.parquet' -not -name '.*' 2>/dev/null | wc -l)
rejected=$(wc -l <"$OUT/dlq.ndjson" 2>/dev/null || echo 0)
echo
echo "Input:     $OUT/taxi.csv ($ROWS rows)"
echo "Parquet:   $OUT/trips/ ($files files, Hive partitions year=/month=/day=/hour=/vendorId=)"
echo "Rejected:  $OUT/dlq.ndjson ($rejected records)"
echo "Summary:   $OUT/summary.json"
echo
echo "Query it, e.g. with DuckDB:"
echo "  SELECT vendorId, count(*) FROM read_parquet('$OUT/trips/**/*.parquet', hive_partitioning=1) GROUP BY 1;"
