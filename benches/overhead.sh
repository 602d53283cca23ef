#!/usr/bin/env bash
# What observability costs: weir with the admin listener and a file access log
# off (A) vs on (B), interleaved round by round (the order turning each round) on this machine. M (admin and metrics on,
# access log off) separates the cost of the metrics from that of the access log.
#
#   bash benches/overhead.sh [--rounds 5] [--duration 5] [--conns 64] [--log-dir DIR] [--no-build]
#
#   --log-dir DIR   where B writes its access log (default: a temp dir); e.g.
#                   /dev/shm to leave the disk's writeback out of the comparison
#
# Pinned as /work/shared/BENCHMARKING.md says: wrk alone on cpu1; the backend and
# both one-thread proxies on cpu0. In B, /metrics and /status.json are also scraped
# once a second, as Prometheus and an open status page would. Prints the median
# requests/s of each, min–max, the median of the per-round ratios M/A and B/A
# (the target is B/A >= 0.97), and the same ratios computed from CPU time:
# requests/s swing by tens of percent between runs here, but proxy CPU per
# request over backend CPU per request in the same run holds within a few
# percent (see /work/shared/BENCHMARKING.md), and with proxy and backend
# sharing cpu0, requests/s go as 1 / (proxy + backend CPU per request).
set -euo pipefail

ROUNDS=5 DURATION=5 CONNS=64 BUILD=1 LOG_DIR=""
while (($#)); do
    case "$1" in
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --duration) DURATION="${2:?}"; shift 2 ;;
        --conns) CONNS="${2:?}"; shift 2 ;;
        --log-dir) LOG_DIR="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "usage: $0 [--rounds N] [--duration S] [--conns N] [--log-dir DIR] [--no-build]" >&2; exit 2 ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
for tool in wrk taskset curl; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk util-linux curl; break; }
done
if ((BUILD)); then
    cargo build --release --quiet --bin weir --example bench_backend
fi

TMP="$(mktemp -d)"
LOG_DIR="${LOG_DIR:-$TMP}"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; rm -f "${ACCESS_LOG:-}"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND_PORT=$(free_port) A_PORT=$(free_port) B_PORT=$(free_port) ADMIN_PORT=$(free_port)
M_PORT=$(free_port) M_ADMIN_PORT=$(free_port)

taskset -c 0 "$TARGET_DIR/release/examples/bench_backend" "$BACKEND_PORT" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)

write_config() { # name port access extra
    cat >"$TMP/$1.toml" <<TOML
[server]
listen = ["127.0.0.1:$2"]
threads = 1
[log]
level = "warn"
access = $3
$4
[[upstream]]
name = "bench"
servers = ["127.0.0.1:$BACKEND_PORT"]
keepalive = 256
[[route]]
path = "/"
upstream = "bench"
TOML
}
write_config a "$A_PORT" '"off"' ''
ACCESS_LOG="$(mktemp "$LOG_DIR/weir-overhead-access.XXXXXX")"
write_config b "$B_PORT" "\"$ACCESS_LOG\"" "[admin]
listen = \"127.0.0.1:$ADMIN_PORT\""
write_config m "$M_PORT" '"off"' "[admin]
listen = \"127.0.0.1:$M_ADMIN_PORT\""

BACKEND_PID=${PIDS[0]}
declare -A PID
for name in a m b; do
    taskset -c 0 "$TARGET_DIR/release/weir" run -c "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
done
for port in "$A_PORT" "$M_PORT" "$B_PORT" "$ADMIN_PORT" "$M_ADMIN_PORT"; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of PID, all threads
run() { # name port -> "requests/s proxy-CPU/backend-CPU"
    local p0 b0 p1 b1 rps
    taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$2/" >/dev/null
    p0=$(cpu_ticks "${PID[$1]}") b0=$(cpu_ticks "$BACKEND_PID")
    rps=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$2/" | awk '/^Requests\/sec/ {print $2}')
    p1=$(cpu_ticks "${PID[$1]}") b1=$(cpu_ticks "$BACKEND_PID")
    echo "$rps $(awk -v p=$((p1 - p0)) -v b=$((b1 - b0)) 'BEGIN {printf "%.4f", p / b}')"
}
scrape() { # admin port: scrapes the admin endpoints once a second until killed
    # On cpu1 beside wrk, which has CPU to spare: the proxy's share of the scrape
    # lands on cpu0 where it belongs, curl's own start-up does not.
    while :; do
        taskset -c 1 curl -s -o /dev/null "http://127.0.0.1:$1/metrics" -o /dev/null "http://127.0.0.1:$1/status.json"
        sleep 1
    done
}
measure() { # variant -> sets RPS and CPU; b and m run while their admin listener is scraped
    local scraper=""
    case "$1" in
        m) scrape "$M_ADMIN_PORT" & scraper=$! ;;
        b) scrape "$ADMIN_PORT" & scraper=$! ;;
    esac
    read -r RPS CPU <<<"$(run "$1" "${PORT[$1]}")"
    if [[ -n "$scraper" ]]; then kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; fi
}
declare -A PORT=([a]="$A_PORT" [m]="$M_PORT" [b]="$B_PORT")

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

stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%.0f %.0f %.0f", v[int((NR+1)/2)], v[1], v[NR]}'; }
ratios() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%.3f (%.3f-%.3f)", v[int((NR+1)/2)], v[1], v[NR]}'; }
read -r AM AMIN AMAX <<<"$(stats "${A[@]}")"
read -r MM MMIN MMAX <<<"$(stats "${M[@]}")"
read -r BM BMIN BMAX <<<"$(stats "${B[@]}")"
echo
echo "| weir (1 thread, wrk -t1 -c$CONNS, ${ROUNDS}x${DURATION}s) | median req/s | min–max |"
echo "|---|---|---|"
echo "| A: admin off, access log off | $AM | $AMIN–$AMAX |"
echo "| M: admin on (scraped 1/s), access log off | $MM | $MMIN–$MMAX |"
echo "| B: admin on (scraped 1/s), access log to a file | $BM | $BMIN–$BMAX |"
echo
echo "| ratio to A, median of rounds (min-max) | requests/s | equal-CPU requests/s, from proxy/backend CPU |"
echo "|---|---|---|"
echo "| M/A (metrics alone) | $(ratios "${RM[@]}") | $(ratios "${QM[@]}") |"
echo "| B/A (target >= 0.97) | $(ratios "${RB[@]}") | $(ratios "${QB[@]}") |"
echo "proxy/backend CPU, median: A $(ratios "${CA[@]}"), M $(ratios "${CM[@]}"), B $(ratios "${CB[@]}")"
echo "access log lines written in B: $(wc -l <"$ACCESS_LOG") (to $LOG_DIR, $(df --output=fstype "$LOG_DIR" | tail -1))"
