#!/usr/bin/env bash
# Compares Threadline's collector with Rotel under the same OTLP trace load, in one run, against
# the same counting sink. See bench/README.md for what is measured and how.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]

  --only NAME              run only "threadline" or only "rotel" (default: both)
  --saturation-seconds N   length of the as-fast-as-possible phase (default 20)
  --fixed-rate SPANS       spans per second of the fixed-rate phase (default 50000)
  --fixed-seconds N        length of the fixed-rate phase (default 20)
  --warmup-seconds N       unmeasured load before the phases (default 3)
  --concurrency N          load generator requests in flight (default 8)
  --connections N          load generator gRPC connections (default 2)
  --driver NAME            binary providing `loadgen` and `sink`: "threadline"
                           (target/release/threadline, default) or "example"
                           (the threadline-loadgen example binary)
  --port-base N            first of the 127.0.0.1 ports used (default 24300)
  --skip-build             use the binaries already built
  --out DIR                where logs and results.json go (default bench/out/<time>)

Environment: THREADLINE_EXTRA_ARGS is appended to the threadline collector command line.
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ONLY="both"
SATURATION_SECONDS=20
FIXED_RATE=50000
FIXED_SECONDS=20
WARMUP_SECONDS=3
CONCURRENCY=8
CONNECTIONS=2
DRIVER="threadline"
PORT_BASE=24300
SKIP_BUILD=0
OUT=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) ONLY="$2"; shift 2 ;;
        --saturation-seconds) SATURATION_SECONDS="$2"; shift 2 ;;
        --fixed-rate) FIXED_RATE="$2"; shift 2 ;;
        --fixed-seconds) FIXED_SECONDS="$2"; shift 2 ;;
        --warmup-seconds) WARMUP_SECONDS="$2"; shift 2 ;;
        --concurrency) CONCURRENCY="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --driver) DRIVER="$2"; shift 2 ;;
        --port-base) PORT_BASE="$2"; shift 2 ;;
        --skip-build) SKIP_BUILD=1; shift ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$ONLY" in
    both) COLLECTORS=(threadline rotel) ;;
    threadline|rotel) COLLECTORS=("$ONLY") ;;
    *) echo "--only must be threadline or rotel" >&2; exit 2 ;;
esac

OUT="${OUT:-$ROOT/bench/out/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
VENV="$ROOT/bench/.venv"
# The seed agent config as the repository keeps it; $THREADLINE_SEED_DIR points elsewhere.
SEED_CONFIG="${THREADLINE_SEED_DIR:-$ROOT/examples/seed}/agent-config.yaml"
CLK_TCK="$(getconf CLK_TCK)"

# Ports, all on 127.0.0.1.
SINK_GRPC_PORT=$((PORT_BASE + 17))
SINK_STATS_PORT=$((PORT_BASE + 19))
COLLECTOR_GRPC_PORT=$((PORT_BASE + 117))
COLLECTOR_HTTP_PORT=$((PORT_BASE + 118))

log() { printf '[compare] %s\n' "$*" >&2; }

# Every process this script starts, stopped on exit whatever happens.
STARTED_PIDS=()
stop_pid() {
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Build and install.

if [[ "$SKIP_BUILD" == 0 ]]; then
    if [[ " ${COLLECTORS[*]} " == *" threadline "* || "$DRIVER" == "threadline" ]]; then
        log "building threadline (release)"
        (cd "$ROOT" && cargo build --release -p threadline)
    fi
    if [[ "$DRIVER" == "example" ]]; then
        log "building the threadline-loadgen example (release)"
        (cd "$ROOT" && cargo build --release -p threadline-loadgen --example loadgen)
    fi
fi

case "$DRIVER" in
    threadline) DRIVER_BIN="$ROOT/target/release/threadline" ;;
    example) DRIVER_BIN="$ROOT/target/release/examples/loadgen" ;;
    *) echo "--driver must be threadline or example" >&2; exit 2 ;;
esac
THREADLINE_BIN="$ROOT/target/release/threadline"
[[ -x "$DRIVER_BIN" ]] || { echo "missing $DRIVER_BIN (build it or drop --skip-build)" >&2; exit 1; }

ROTEL_BIN=""
if [[ " ${COLLECTORS[*]} " == *" rotel "* ]]; then
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    if ! "$VENV/bin/python" -c 'import rotel' 2>/dev/null; then
        log "installing rotel from PyPI"
        "$VENV/bin/pip" install --quiet rotel
    fi
    # The wheel ships the agent binary inside the package directory.
    ROTEL_BIN="$("$VENV/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
    [[ -x "$ROTEL_BIN" ]] || { echo "rotel-agent not found at $ROTEL_BIN" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------------------------
# Helpers.

wait_for_port() {
    local port="$1" name="$2" pid="$3"
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "$name exited during startup (see $OUT)" >&2; exit 1; }
        sleep 0.1
    done
    echo "$name did not listen on 127.0.0.1:$port within 10 s" >&2
    exit 1
}

# utime + stime of a process (all threads), in clock ticks. Fields counted after the ")" that
# closes the command name, which may itself contain spaces.
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

peak_rss_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

# Resets VmHWM so each phase reports its own peak (Linux clear_refs value 5).
reset_peak_rss() {
    echo 5 > "/proc/$1/clear_refs" 2>/dev/null || true
}

sink_spans() {
    "$PYTHON" - "$SINK_STATS_PORT" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/stats", timeout=5) as response:
    print(json.load(response)["spans"])
EOF
}

# Waits until the sink count has not moved for 3 consecutive seconds (the seed config batches
# for up to 2 s), at most 60 s; prints the count.
drain() {
    local last=-1 stable=0 now
    for _ in $(seq 1 60); do
        now="$(sink_spans)"
        if [[ "$now" == "$last" ]]; then
            stable=$((stable + 1))
            [[ "$stable" -ge 3 ]] && break
        else
            stable=0
        fi
        last="$now"
        sleep 1
    done
    echo "$now"
}

json_field() {
    "$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# Runs the load generator against the collector; prints its JSON summary line.
run_load() {
    local name="$1" rate="$2" seconds="$3"
    "$DRIVER_BIN" loadgen \
        --endpoint "127.0.0.1:$COLLECTOR_GRPC_PORT" \
        --rate "$rate" --duration "$seconds" \
        --concurrency "$CONCURRENCY" --connections "$CONNECTIONS" \
        --spans-per-request 500 --seed 1 \
        2>>"$OUT/$name.loadgen.log" | tail -n 1
}

PYTHON="$(command -v python3)"

# ---------------------------------------------------------------------------------------------
# The sink, shared by every collector.

log "starting the sink on 127.0.0.1:$SINK_GRPC_PORT"
"$DRIVER_BIN" sink \
    --grpc-endpoint "127.0.0.1:$SINK_GRPC_PORT" \
    --stats-endpoint "127.0.0.1:$SINK_STATS_PORT" \
    --quiet >"$OUT/sink.log" 2>&1 &
SINK_PID=$!
STARTED_PIDS+=("$SINK_PID")
wait_for_port "$SINK_STATS_PORT" sink "$SINK_PID"
wait_for_port "$SINK_GRPC_PORT" sink "$SINK_PID"

RESULTS=()

measure() {
    local name="$1"
    local pid

    case "$name" in
        threadline)
            # shellcheck disable=SC2086 # THREADLINE_EXTRA_ARGS is a list of arguments.
            "$THREADLINE_BIN" collector --config "$SEED_CONFIG" \
                --set "exporters::otlp::endpoint=127.0.0.1:$SINK_GRPC_PORT" \
                --set "receivers::otlp::protocols::grpc::endpoint=127.0.0.1:$COLLECTOR_GRPC_PORT" \
                --set "receivers::otlp::protocols::http::endpoint=127.0.0.1:$COLLECTOR_HTTP_PORT" \
                ${THREADLINE_EXTRA_ARGS:-} \
                >"$OUT/threadline.log" 2>&1 &
            ;;
        rotel)
            # Rotel's OTLP exporter compresses with gzip by default, like the collector's.
            "$ROTEL_BIN" start \
                --otlp-grpc-endpoint "127.0.0.1:$COLLECTOR_GRPC_PORT" \
                --otlp-http-endpoint "127.0.0.1:$COLLECTOR_HTTP_PORT" \
                --exporter otlp \
                --otlp-exporter-endpoint "http://127.0.0.1:$SINK_GRPC_PORT" \
                --pid-file "$OUT/rotel.pid" --log-file "$OUT/rotel-agent.log" \
                >"$OUT/rotel.log" 2>&1 &
            ;;
    esac
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_for_port "$COLLECTOR_GRPC_PORT" "$name" "$pid"

    log "$name: warm-up (${WARMUP_SECONDS}s)"
    run_load "$name" 0 "$WARMUP_SECONDS" >/dev/null
    drain >/dev/null

    # Fixed rate first, so its peak RSS is not inherited from the saturation phase. CPU is
    # counted over the load generator's run only (steady state).
    log "$name: fixed rate ${FIXED_RATE} spans/s (${FIXED_SECONDS}s)"
    local fix_json fix_ticks_before fix_ticks_after fix_sink_before fix_sink_after
    local sink_ticks_before sink_ticks_after
    fix_sink_before="$(sink_spans)"
    reset_peak_rss "$pid"
    fix_ticks_before="$(cpu_ticks "$pid")"
    sink_ticks_before="$(cpu_ticks "$SINK_PID")"
    fix_json="$(run_load "$name" "$FIXED_RATE" "$FIXED_SECONDS")"
    fix_ticks_after="$(cpu_ticks "$pid")"
    sink_ticks_after="$(cpu_ticks "$SINK_PID")"
    local fix_sink_cpu
    fix_sink_cpu="$(awk -v t=$((sink_ticks_after - sink_ticks_before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')"
    fix_sink_after="$(drain)"
    local fix_rss fix_seconds fix_cpu fix_delivered
    fix_rss="$(peak_rss_kib "$pid")"
    fix_seconds="$(json_field "$fix_json" seconds)"
    fix_cpu="$(awk -v t=$((fix_ticks_after - fix_ticks_before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')"
    fix_delivered=$((fix_sink_after - fix_sink_before))

    # Saturation: as fast as it accepts. CPU counted until the sink has everything.
    log "$name: saturation (${SATURATION_SECONDS}s)"
    local sink_before ticks_before sat_json sink_after ticks_after
    sink_before="$(sink_spans)"
    reset_peak_rss "$pid"
    ticks_before="$(cpu_ticks "$pid")"
    sink_ticks_before="$(cpu_ticks "$SINK_PID")"
    sat_json="$(run_load "$name" 0 "$SATURATION_SECONDS")"
    sink_after="$(drain)"
    ticks_after="$(cpu_ticks "$pid")"
    sink_ticks_after="$(cpu_ticks "$SINK_PID")"
    local sat_rss sat_sink_cpu sat_delivered sat_cpu
    sat_sink_cpu="$(awk -v t=$((sink_ticks_after - sink_ticks_before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')"
    sat_rss="$(peak_rss_kib "$pid")"
    sat_delivered=$((sink_after - sink_before))
    sat_cpu="$(awk -v t=$((ticks_after - ticks_before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t / hz}')"

    stop_pid "$pid"

    RESULTS+=("$("$PYTHON" - "$name" "$sat_json" "$sat_delivered" "$sat_cpu" "$sat_rss" \
        "$fix_json" "$fix_delivered" "$fix_cpu" "$fix_seconds" "$fix_rss" "$sat_sink_cpu" "$fix_sink_cpu" <<'EOF'
import json, sys
(name, sat_json, sat_delivered, sat_cpu, sat_rss,
 fix_json, fix_delivered, fix_cpu, fix_seconds, fix_rss, sat_sink_cpu, fix_sink_cpu) = sys.argv[1:]
sat, fix = json.loads(sat_json), json.loads(fix_json)
sat_cpu, fix_cpu = float(sat_cpu), float(fix_cpu)
print(json.dumps({
    "collector": name,
    "saturation": {
        "acknowledged_spans": sat["sent_spans"],
        "delivered_spans": int(sat_delivered),
        "spans_lost": sat["sent_spans"] - int(sat_delivered),
        "spans_per_sec": round(sat["spans_per_sec"]),
        "cpu_seconds": sat_cpu,
        "spans_per_cpu_second": round(int(sat_delivered) / sat_cpu) if sat_cpu else None,
        "peak_rss_mib": round(int(sat_rss) / 1024, 1),
        "loadgen_failed_spans": sat["failed_spans"],
        "loadgen_retryable_errors": sat["retryable_errors"],
        "loadgen_cpu_cores": round(sat["cpu_seconds"] / sat["seconds"], 3),
        "sink_cpu_seconds": float(sat_sink_cpu),
    },
    "fixed_rate": {
        "achieved_spans_per_sec": round(fix["spans_per_sec"]),
        "acknowledged_spans": fix["sent_spans"],
        "delivered_spans": int(fix_delivered),
        "spans_lost": fix["sent_spans"] - int(fix_delivered),
        "cpu_cores": round(fix_cpu / float(fix_seconds), 3),
        "peak_rss_mib": round(int(fix_rss) / 1024, 1),
        "loadgen_failed_spans": fix["failed_spans"],
        "loadgen_retryable_errors": fix["retryable_errors"],
        "loadgen_cpu_cores": round(fix["cpu_seconds"] / float(fix_seconds), 3),
        "sink_cpu_cores": round(float(fix_sink_cpu) / float(fix_seconds), 3),
    },
}))
EOF
)")
    log "$name: done"
}

for collector in "${COLLECTORS[@]}"; do
    measure "$collector"
done

# ---------------------------------------------------------------------------------------------
# Report: a table, then the JSON on one line (also written to results.json).

printf '%s\n' "${RESULTS[@]}" >"$OUT/results.jsonl"
"$PYTHON" - "$OUT/results.jsonl" "$OUT/results.json" "$FIXED_RATE" "$SATURATION_SECONDS" \
    "$FIXED_SECONDS" "$CONCURRENCY" "$CONNECTIONS" <<'EOF'
import json, sys
lines, out, fixed_rate, sat_s, fix_s, concurrency, connections = sys.argv[1:]
with open(lines) as f:
    results = [json.loads(line) for line in f if line.strip()]
for r in results:
    r["fixed_rate"]["target_spans_per_sec"] = int(fixed_rate)
report = {
    "load": {
        "spans_per_request": 500, "spans_per_trace": 10, "concurrency": int(concurrency),
        "connections": int(connections), "saturation_seconds": float(sat_s),
        "fixed_rate_spans_per_sec": int(fixed_rate), "fixed_rate_seconds": float(fix_s),
        "export_compression": "gzip",
    },
    "results": results,
}
rows = [
    ("spans/s at saturation", lambda r: f'{r["saturation"]["spans_per_sec"]:,}'),
    ("spans per CPU-second", lambda r: f'{r["saturation"]["spans_per_cpu_second"]:,}'),
    ("peak RSS at saturation (MiB)", lambda r: f'{r["saturation"]["peak_rss_mib"]}'),
    ("spans lost at saturation", lambda r: f'{r["saturation"]["spans_lost"]:,}'),
    ("refusals at saturation", lambda r: f'{r["saturation"]["loadgen_retryable_errors"]:,}'),
    (f"cores at {int(fixed_rate):,} spans/s", lambda r: f'{r["fixed_rate"]["cpu_cores"]}'),
    (f"achieved rate (target {int(fixed_rate):,})", lambda r: f'{r["fixed_rate"]["achieved_spans_per_sec"]:,}'),
    ("peak RSS at fixed rate (MiB)", lambda r: f'{r["fixed_rate"]["peak_rss_mib"]}'),
    ("spans lost at fixed rate", lambda r: f'{r["fixed_rate"]["spans_lost"]:,}'),
    ("loadgen cores at saturation", lambda r: f'{r["saturation"]["loadgen_cpu_cores"]}'),
    ("loadgen cores at fixed rate", lambda r: f'{r["fixed_rate"]["loadgen_cpu_cores"]}'),
]
width = max(len(label) for label, _ in rows)
print(f'{"":<{width}}  ' + "  ".join(f'{r["collector"]:>12}' for r in results))
for label, value in rows:
    print(f"{label:<{width}}  " + "  ".join(f"{value(r):>12}" for r in results))
with open(out, "w") as f:
    json.dump(report, f, indent=2)
print(json.dumps(report))
EOF
log "results written to $OUT/results.json"
