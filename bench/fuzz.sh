#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer via cargo-fuzz, nightly toolchain) of every decoder that
# takes outside bytes. Runs each target for SECONDS (default 60), starting from the seeds and
# kept regressions in crates/fuzz/, and prints executions, exec/s, coverage and crashes per
# target. A crash's input lands in fuzz/artifacts/<target>/: fix it, then copy the input to
# crates/fuzz/regressions/<target>/ so the regression test (run by CI) keeps it fixed.
#
#   bench/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
all=(otlp_protobuf otlp_json http_body traceql collector_config admission_review wal_segment block_files)
targets=("${@:-${all[@]}}")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# The same dependency versions as the main workspace.
cp Cargo.lock fuzz/Cargo.lock
(cd fuzz && nice cargo +nightly fuzz build -O --debug-assertions "${targets[@]/#/}" 2>&1 | tail -3) ||
    (cd fuzz && for t in "${targets[@]}"; do nice cargo +nightly fuzz build -O --debug-assertions "$t"; done)

printf '%-18s %12s %9s %7s %7s %6s %8s\n' target executions exec/s cov ft corpus crashes
status=0
for t in "${targets[@]}"; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    for kept in crates/fuzz/seeds/"$t" crates/fuzz/regressions/"$t"; do
        [ -d "$kept" ] && cp -n "$kept"/* "$corpus"/ 2>/dev/null || true
    done
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    log="fuzz/artifacts/$t.log"
    # -rss_limit_mb: a decoder that allocates without bound is a crash, not a slow run.
    (cd fuzz && cargo +nightly fuzz run -O --debug-assertions "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"../$log" 2>&1) || status=1
    after=$(ls "fuzz/artifacts/$t" | wc -l)
    done_line=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 || true)
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+' || echo "?")
    ft=$(grep -oE 'ft: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+' || echo "?")
    corp=$(ls "$corpus" | wc -l)
    printf '%-18s %12s %9s %7s %7s %6s %8s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$corp" "$((after - before))"
    if [ "$after" -gt "$before" ]; then
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5 | sed 's/^/    /'
    fi
done
exit $status
