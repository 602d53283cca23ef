#!/usr/bin/env bash
# What observability costs: weir with the admin listener and a file access log
# off (A) vs on (B), interleaved round by round (the order turning each round) on this machine. M (admin and metrics on,
# access log off) separates the cost of the metrics from that of the access log.
#
#   bash benches/overhead.sh [--rounds 5] [--duration 5] [--conns 64] [--log-dir DIR]
#                            [--no-install] [--no-build] [--keep]
#
#   --log-dir DIR   where B writes its access log (default: the temp dir); e.g.
#                   /dev/shm to leave the disk's writeback out of the comparison
#
# Pinned as in benches/README.md: wrk alone on cpu1; the backend and the
# one-thread proxies on cpu0. In B, /metrics and /status.json are also scraped
# once a second, as Prometheus and an open status page would. Prints the median
# requests/s of each, min–max, the median of the per-round ratios M/A and B/A
# (the target is B/A >= 0.97), and the same ratios computed from CPU time:
# requests/s swing by tens of percent between runs here, but proxy CPU per
# request over backend CPU per request in the same run holds within a few
# percent (a slow host slows proxy and backend alike), and with proxy and backend
# sharing cpu0, requests/s go as 1 / (proxy + backend CPU per request).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=5 DURATION=5 CONNS=64 LOG_DIR=""
parse_options "--rounds=ROUNDS --duration=DURATION --conns=CONNS --log-dir=LOG_DIR" "$@"
need_positive "$ROUNDS" "$DURATION" "$CONNS"

need_tools wrk taskset curl
build_release bench_backend
LOG_DIR="${LOG_DIR:-$T}"

start_backends 1 taskset -c "$SERVER_CPUS" "$TARGET_DIR/release/examples/bench_backend"
BACKEND_PID=${BACKEND_PIDS[0]}
declare -A PORT=() ADMIN_PORT=() PID=()
for name in a m b; do pick_port; PORT[$name]=$REPLY; done
for name in m b; do pick_port; ADMIN_PORT[$name]=$REPLY; done

write_config() { # name access extra
    cat >"$T/$1.toml" <<TOML
$(weir_head "${PORT[$1]}" "$2")
$3
$(weir_upstream 'keepalive = 256')
TOML
}
write_config a '"off"' ''
ACCESS_LOG="$(mktemp "$LOG_DIR/weir-overhead-access.XXXXXX")"
TEMP_FILES+=("$ACCESS_LOG")
write_config b "\"$ACCESS_LOG\"" "[admin]
listen = \"127.0.0.1:${ADMIN_PORT[b]}\""
write_config m '"off"' "[admin]
listen = \"127.0.0.1:${ADMIN_PORT[m]}\""

for name in a m b; do
    serve "weir-$name" "${PORT[$name]}" taskset -c "$SERVER_CPUS" "$WEIR" run -c "$T/$name.toml"
    PID[$name]=$REPLY
done
for name in m b; do
    wait_port "${ADMIN_PORT[$name]}" "${PID[$name]}" || die "weir-$name's admin listener did not start"
done

run() { # name -> "requests/s proxy-CPU/backend-CPU"
    local p0 b0 p1 b1 rps url="http://127.0.0.1:${PORT[$1]}/"
    taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d1s "$url" >/dev/null
    read -r p0 _ <<<"$(cpu_ticks "${PID[$1]}")"
    read -r b0 _ <<<"$(cpu_ticks "$BACKEND_PID")"
    rps=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" | awk '/^Requests\/sec/ {print $2}')
    read -r p1 _ <<<"$(cpu_ticks "${PID[$1]}")"
    read -r b1 _ <<<"$(cpu_ticks "$BACKEND_PID")"
    echo "$rps $(awk -v p=$((p1 - p0)) -v b=$((b1 - b0)) 'BEGIN {printf "%.4f", p / b}')"
}
scrape() { # admin port: scrapes the admin endpoints once a second until killed
    # On cpu1 beside wrk, which has CPU to spare: the proxy's share of the scrape
    # lands on cpu0 where it belongs, curl's own start-up does not.
    while :; do
        taskset -c "$CLIENT_CPUS" curl -s -o /dev/null "http://127.0.0.1:$1/metrics" -o /dev/null "http://127.0.0.1:$1/status.json"
        sleep 1
    done
}
measure() { # variant -> sets RPS and CPU; b and m run while their admin listener is scraped
    local scraper=""
    if [[ -n "${ADMIN_PORT[$1]:-}" ]]; then
        scrape "${ADMIN_PORT[$1]}" &
        scraper=$!; ALL_PIDS+=("$scraper")
    fi
    read -r RPS CPU <<<"$(run "$1")"
    if [[ -n "$scraper" ]]; then kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; fi
}

echo "## weir observability overhead"
header
A=() M=() B=() RM=() RB=() CA=() CM=() CB=() QM=() QB=()
for r in $(seq "$ROUNDS"); do
    # The order turns each round (a m b, m b a, b a m, ...) so drift in the
    # machine's speed within a round favours no variant.
    order=(a m b a m)
    for v in "${order[@]:$(((r - 1) % 3)):3}"; do
        measure "$v"
        case "$v" in a) a=$RPS ca=$CPU ;; m) m=$RPS cm=$CPU ;; b) b=$RPS cb=$CPU ;; esac
    done
    A+=("$a") M+=("$m") B+=("$b") CA+=("$ca") CM+=("$cm") CB+=("$cb")
    RM+=("$(awk -v x="$m" -v y="$a" 'BEGIN {printf "%.4f", x / y}')")
    RB+=("$(awk -v x="$b" -v y="$a" 'BEGIN {printf "%.4f", x / y}')")
    # Equal-CPU requests/s ratio: (1 + proxy/backend of A) / (1 + proxy/backend of X).
    QM+=("$(awk -v x="$cm" -v y="$ca" 'BEGIN {printf "%.4f", (1 + y) / (1 + x)}')")
    QB+=("$(awk -v x="$cb" -v y="$ca" 'BEGIN {printf "%.4f", (1 + y) / (1 + x)}')")
    echo "round $r: A (off) $a, M (admin) $m, B (admin + access log) $b req/s;" \
        "proxy/backend CPU A $ca, M $cm, B $cb"
done

ratios() { printf '%s\n' "$@" | stats_fmt '%.3f (%.3f-%.3f)'; }
rps() { printf '%s\n' "$@" | stats_fmt '%.0f | %.0f–%.0f'; }
echo
echo "| weir (1 thread, wrk -t1 -c$CONNS, ${ROUNDS}x${DURATION}s) | median req/s | min–max |"
echo "|---|---|---|"
echo "| A: admin off, access log off | $(rps "${A[@]}") |"
echo "| M: admin on (scraped 1/s), access log off | $(rps "${M[@]}") |"
echo "| B: admin on (scraped 1/s), access log to a file | $(rps "${B[@]}") |"
echo
echo "| ratio to A, median of rounds (min-max) | requests/s | equal-CPU requests/s, from proxy/backend CPU |"
echo "|---|---|---|"
echo "| M/A (metrics alone) | $(ratios "${RM[@]}") | $(ratios "${QM[@]}") |"
echo "| B/A (target >= 0.97) | $(ratios "${RB[@]}") | $(ratios "${QB[@]}") |"
echo "proxy/backend CPU, median: A $(ratios "${CA[@]}"), M $(ratios "${CM[@]}"), B $(ratios "${CB[@]}")"
echo "access log lines written in B: $(wc -l <"$ACCESS_LOG") (to $LOG_DIR, $(df --output=fstype "$LOG_DIR" | tail -1))"
