#!/usr/bin/env bash
# Reload a large config (10,000 routes, 1,000 servers) under wrk load: how long
# each reload takes (weir's own "configuration reloaded" duration_ms) and what
# it does to the latency tail, against runs without reloads (see benches/README.md).
#
#   bash benches/reload.sh [--rounds 3] [--duration 10] [--interval 1] [--conns 64]
#                          [--routes 10000] [--servers 1000] [--upstreams 10]
#                          [--no-install] [--no-build] [--keep]
#
#   --rounds N      rounds; each runs wrk once without and once with reloads (default 3)
#   --duration S    seconds per wrk run (default 10)
#   --interval S    seconds between SIGHUPs during a reload run (default 1)
#   --conns N       wrk connections (default 64)
#   --routes N, --servers N, --upstreams N   the generated config (examples/gen_config.rs)
#   --no-install    do not apt-get missing tools
#   --no-build      use the existing target/release binaries
#   --keep          keep the temp dir (configs, weir's log, raw wrk output)
#
# Three one-thread backends and a one-thread weir on cpu0, wrk alone on cpu1. The
# config's catch-all route sends wrk's requests to the three backends; the other
# routes and servers exist only to be parsed, validated and built on every reload.
# Each reload swaps between two variants of the config that differ in weights and
# timeouts, so nothing can be skipped as unchanged.

# shellcheck disable=SC2016 # awk expressions in single quotes, on purpose
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=3 DURATION=10 INTERVAL=1 CONNS=64 ROUTES=10000 SERVERS=1000 UPSTREAMS=10
parse_options "--rounds=ROUNDS --duration=DURATION --interval=INTERVAL --conns=CONNS \
    --routes=ROUTES --servers=SERVERS --upstreams=UPSTREAMS" "$@"
need_positive "$ROUNDS" "$DURATION" "$INTERVAL" "$CONNS" "$ROUTES" "$SERVERS" "$UPSTREAMS"

need_tools wrk taskset curl
build_release bench_backend gen_config
BACKEND="$TARGET_DIR/release/examples/bench_backend"
GEN="$TARGET_DIR/release/examples/gen_config"

cat >"$T/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %.1f %.1f %.1f %.1f %d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
LUA

start_backends 3 taskset -c "$SERVER_CPUS" "$BACKEND"

pick_port; WEIR_PORT=$REPLY
hot="127.0.0.1:${BACKEND_PORTS[0]},127.0.0.1:${BACKEND_PORTS[1]},127.0.0.1:${BACKEND_PORTS[2]}"
for v in 0 1; do
    "$GEN" --routes "$ROUTES" --servers "$SERVERS" --upstreams "$UPSTREAMS" \
        --listen "127.0.0.1:$WEIR_PORT" --hot "$hot" --threads 1 --variant "$v" >"$T/variant$v.toml"
done
cp "$T/variant0.toml" "$T/weir.toml"
echo "config: $(grep -c '^\[\[route\]\]' "$T/weir.toml") routes, $(grep -c 'addr = ' "$T/weir.toml") server entries," \
    "$(grep -c '^\[\[upstream\]\]' "$T/weir.toml") upstreams, $(wc -c <"$T/weir.toml") bytes" >&2

serve weir "$WEIR_PORT" taskset -c "$SERVER_CPUS" "$WEIR" run -c "$T/weir.toml"
WEIR_PID=$REPLY
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WEIR_PORT/" || true)"
[[ "$code" == 200 ]] || die "sanity request through weir got $code"

reloaded() { grep -c 'configuration reloaded' "$T/weir.log" || true; }
# reloader COUNT: one SIGHUP every INTERVAL s, alternating the config variant.
reloader() {
    local k
    for ((k = 1; k <= $1; k++)); do
        sleep "$INTERVAL"
        cp "$T/variant$((k % 2)).toml" "$T/next.toml" && mv "$T/next.toml" "$T/weir.toml"
        kill -HUP "$WEIR_PID" 2>/dev/null || return 0
    done
}

RESULTS="$T/results.tsv"; : >"$RESULTS"
run_wrk() { # run_wrk MODE ROUND
    local out="$T/wrk.$1.$2.txt" before after line
    before="$(reloaded)"
    local hups=0 rpid=""
    if [[ $1 == reload ]]; then
        hups=$(((DURATION - 1) / INTERVAL))
        reloader "$hups" &
        rpid=$!; ALL_PIDS+=("$rpid")
    fi
    taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$T/report.lua" \
        "http://127.0.0.1:$WEIR_PORT/" >"$out" 2>&1 || true
    [[ -n "$rpid" ]] && wait "$rpid"
    # The last reload may still be running: give it up to 5 s.
    for _ in $(seq 50); do (($(reloaded) - before >= hups)) && break; sleep 0.1; done
    after="$(reloaded)"
    kill -0 "$WEIR_PID" 2>/dev/null || die "weir died during $1 round $2"
    line="$(grep '^WRKRESULT ' "$out" | tail -1)" || die "no wrk result: $(cat "$out")"
    read -r _ req dur p50 p99 p999 max err <<<"$line"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" \
        "$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')" \
        "$p50" "$p99" "$p999" "$max" "$err" "$((after - before))" >>"$RESULTS"
    printf '  round %d %-6s %7.0f req/s  p99 %6.0f us  p99.9 %6.0f us  max %7.0f us  errors %d  reloads %d\n' \
        "$2" "$1" "$(awk -v r="$req" -v d="$dur" 'BEGIN { print r / (d / 1e6) }')" \
        "$p99" "$p999" "$max" "$err" "$((after - before))" >&2
}

echo "## weir reload under load"
header
echo "config: $ROUTES routes, $SERVERS servers (one upstream holds all, weights 1..256), $UPSTREAMS upstreams + hot;" \
    "wrk -t1 -c$CONNS -d${DURATION}s on cpu$CLIENT_CPUS; weir (1 thread) and 3 backends on cpu$SERVER_CPUS"
taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$WEIR_PORT/" >/dev/null 2>&1 || true
for round in $(seq "$ROUNDS"); do
    if ((round % 2)); then run_wrk quiet "$round"; run_wrk reload "$round"
    else run_wrk reload "$round"; run_wrk quiet "$round"; fi
done

col() { awk -F'\t' -v m="$1" '$1 == m { print '"$2"' }' "$RESULTS"; }
echo
echo "| mode | req/s median (min-max) | p50 ms | p99 ms | p99.9 ms | max ms | errors | reloads |"
echo "|---|---|---|---|---|---|---|---|"
for mode in quiet reload; do
    rps="$(col "$mode" '$3' | stats | awk '{ printf "%.0f (%.0f-%.0f)", $1, $2, $3 }')"
    p50="$(col "$mode" '$4 / 1000' | stats | awk '{ printf "%.2f", $1 }')"
    p99="$(col "$mode" '$5 / 1000' | stats | awk '{ printf "%.2f (%.2f-%.2f)", $1, $2, $3 }')"
    p999="$(col "$mode" '$6 / 1000' | stats | awk '{ printf "%.2f (%.2f-%.2f)", $1, $2, $3 }')"
    max="$(col "$mode" '$7 / 1000' | stats | awk '{ printf "%.1f (%.1f-%.1f)", $1, $2, $3 }')"
    err="$(col "$mode" '$8' | awk '{ s += $1 } END { print s + 0 }')"
    rl="$(col "$mode" '$9' | awk '{ s += $1 } END { print s + 0 }')"
    echo "| $mode | $rps | $p50 | $p99 | $p999 | $max | $err | $rl |"
done
echo
durations="$(grep 'configuration reloaded' "$T/weir.log" | sed -n 's/.*duration_ms=\([0-9.]*\).*/\1/p')"
n="$(grep -c . <<<"$durations" || true)"
failed="$(grep -c 'reload failed' "$T/weir.log" || true)"
read -r med lo hi <<<"$(stats <<<"$durations")"
# nearest rank: the smallest value with at least 90% of them at or below it
p90="$(sort -g <<<"$durations" | awk '{ a[NR] = $1 } END { i = int(NR * 0.9); if (i < NR * 0.9) i++; print (NR ? a[i] : "nan") }')"
echo "reload duration_ms over $n reloads ($failed failed): median $med, p90 $p90, min $lo, max $hi (target < 100)"
