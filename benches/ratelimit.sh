#!/usr/bin/env bash
# What a rate limit costs: weir without a limit (N), with a local limit (L) and with a
# global limit in Redis (G), interleaved round by round (the order turning each round).
# The limits are never reached (a bucket of 10^9), so every request is forwarded and
# the figures are the cost of the check alone.
#
#   bash benches/ratelimit.sh [--rounds 5] [--duration 5] [--conns 64]
#                             [--no-install] [--no-build] [--keep]
#
# Pinned as in benches/README.md: wrk alone on cpu1; the backend, redis-server and the
# one-thread proxies on cpu0. Prints, per variant, the median requests/s, the proxy's
# CPU time per request (µs, utime+stime from /proc/PID/stat over the run) and its ratio
# to N's in the same round; for G also Redis round trips per request, from
# `INFO commandstats` (EVALSHA + EVAL calls) before and after the run.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=5 DURATION=5 CONNS=64
parse_options "--rounds=ROUNDS --duration=DURATION --conns=CONNS" "$@"
need_positive "$ROUNDS" "$DURATION" "$CONNS"

need_tools wrk taskset redis-server redis-cli
build_release bench_backend

start_backends 1 taskset -c "$SERVER_CPUS" "$TARGET_DIR/release/examples/bench_backend"
pick_port
REDIS_PORT=$REPLY
serve redis "$REDIS_PORT" taskset -c "$SERVER_CPUS" redis-server --port "$REDIS_PORT" \
    --bind 127.0.0.1 --save '' --appendonly no
declare -A PORT=() PID=()
for name in n l g; do pick_port; PORT[$name]=$REPLY; done

write_config() { # name limit-line redis-table
    cat >"$T/$1.toml" <<TOML
$(weir_head "${PORT[$1]}")
$3
$(weir_upstream 'keepalive = 256')
$2
TOML
}
NEVER='requests = 1000000000, per = "1s", burst = 1000000000'
write_config n '' ''
write_config l "rate_limit = { $NEVER, scope = \"local\" }" ''
write_config g "rate_limit = { $NEVER, scope = \"global\" }" "[redis]
url = \"redis://127.0.0.1:$REDIS_PORT\""

for name in n l g; do
    serve "weir-$name" "${PORT[$name]}" taskset -c "$SERVER_CPUS" "$WEIR" run -c "$T/$name.toml"
    PID[$name]=$REPLY
done

redis_calls() { # EVALSHA + EVAL calls so far
    redis-cli -p "$REDIS_PORT" info commandstats |
        awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ { n += $3 } END { print n + 0 }'
}
run() { # name -> "requests/s µs-per-request redis-calls-per-request"
    local p0 p1 c0 c1 out rps reqs url="http://127.0.0.1:${PORT[$1]}/"
    taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d1s "$url" >/dev/null
    read -r p0 _ <<<"$(cpu_ticks "${PID[$1]}")"
    c0=$(redis_calls)
    out=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url")
    c1=$(redis_calls)
    read -r p1 _ <<<"$(cpu_ticks "${PID[$1]}")"
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    grep -q "Non-2xx" <<<"$out" && die "$1: non-2xx answers: $out"
    awk -v r="$rps" -v n="$reqs" -v p=$((p1 - p0)) -v t="$CLK_TCK" -v c=$((c1 - c0)) \
        'BEGIN { printf "%s %.3f %.3f", r, p / t / n * 1e6, c / n }'
}

echo "## weir rate limit overhead"
header
declare -a RN=() RL=() RG=() UN=() UL=() UG=() QL=() QG=() CG=()
for r in $(seq "$ROUNDS"); do
    order=(n l g n l)
    for v in "${order[@]:$(((r - 1) % 3)):3}"; do
        read -r rps us calls <<<"$(run "$v")"
        case "$v" in
            n) n=$rps un=$us ;;
            l) l=$rps ul=$us ;;
            g) g=$rps ug=$us cg=$calls ;;
        esac
    done
    RN+=("$n") RL+=("$l") RG+=("$g") UN+=("$un") UL+=("$ul") UG+=("$ug") CG+=("$cg")
    QL+=("$(awk -v x="$ul" -v y="$un" 'BEGIN {printf "%.4f", x / y}')")
    QG+=("$(awk -v x="$ug" -v y="$un" 'BEGIN {printf "%.4f", x / y}')")
    echo "round $r: req/s N $n, L $l, G $g; proxy µs/request N $un, L $ul, G $ug; Redis calls/request G $cg"
done

med() { printf '%s\n' "$@" | stats_fmt '%.3f (%.3f-%.3f)'; }
rps() { printf '%s\n' "$@" | stats_fmt '%.0f (%.0f–%.0f)'; }
echo
echo "| weir (1 thread, wrk -t1 -c$CONNS, ${ROUNDS}x${DURATION}s) | req/s | proxy CPU µs/request | ÷ N's, same round | Redis calls/request |"
echo "|---|---|---|---|---|"
echo "| N: no limit | $(rps "${RN[@]}") | $(med "${UN[@]}") | 1 | – |"
echo "| L: local limit | $(rps "${RL[@]}") | $(med "${UL[@]}") | $(med "${QL[@]}") | – |"
echo "| G: global limit (Redis on 127.0.0.1) | $(rps "${RG[@]}") | $(med "${UG[@]}") | $(med "${QG[@]}") | $(med "${CG[@]}") |"
