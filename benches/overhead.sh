#!/usr/bin/env bash
# What observability costs: weir with the admin listener and a file access log
# off (A) vs on (B), interleaved A M B A M B … on this machine. M (admin and metrics on,
# access log off) separates the cost of the metrics from that of the access log.
#
#   bash benches/overhead.sh [--rounds 5] [--duration 5] [--conns 64] [--no-build]
#
# Pinned as /work/shared/BENCHMARKING.md says: wrk alone on cpu1; the backend and
# both one-thread proxies on cpu0. In B, /metrics and /status.json are also scraped
# once a second, as Prometheus and an open status page would. Prints the median
# requests/s of each, min–max, and B/A (the target is >= 0.97).
set -euo pipefail

ROUNDS=5 DURATION=5 CONNS=64 BUILD=1
while (($#)); do
    case "$1" in
        --rounds) ROUNDS="${2:?}"; shift 2 ;;
        --duration) DURATION="${2:?}"; shift 2 ;;
        --conns) CONNS="${2:?}"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "usage: $0 [--rounds N] [--duration S] [--conns N] [--no-build]" >&2; exit 2 ;;
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
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
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
write_config b "$B_PORT" "\"$TMP/access.log\"" "[admin]
listen = \"127.0.0.1:$ADMIN_PORT\""
write_config m "$M_PORT" '"off"' "[admin]
listen = \"127.0.0.1:$M_ADMIN_PORT\""

for name in a m b; do
    taskset -c 0 "$TARGET_DIR/release/weir" run -c "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
done
for port in "$A_PORT" "$M_PORT" "$B_PORT" "$ADMIN_PORT" "$M_ADMIN_PORT"; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

run() { # port -> requests/s
    taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$1/" >/dev/null
    taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$1/" | awk '/^Requests\/sec/ {print $2}'
}
scrape() { # admin port: scrapes the admin endpoints once a second until killed
    while :; do
        curl -s -o /dev/null "http://127.0.0.1:$1/metrics"
        curl -s -o /dev/null "http://127.0.0.1:$1/status.json"
        sleep 1
    done
}

A=() M=() B=()
for r in $(seq "$ROUNDS"); do
    A+=("$(run "$A_PORT")")
    scrape "$M_ADMIN_PORT" & SCRAPER=$!
    M+=("$(run "$M_PORT")")
    kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true
    scrape "$ADMIN_PORT" & SCRAPER=$!
    B+=("$(run "$B_PORT")")
    kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true
    echo "round $r: A (off) ${A[-1]}, M (admin) ${M[-1]}, B (admin + access log) ${B[-1]} req/s"
done

stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%.0f %.0f %.0f", v[int((NR+1)/2)], v[1], v[NR]}'; }
read -r AM AMIN AMAX <<<"$(stats "${A[@]}")"
read -r MM MMIN MMAX <<<"$(stats "${M[@]}")"
read -r BM BMIN BMAX <<<"$(stats "${B[@]}")"
echo
echo "| weir (1 thread, wrk -t1 -c$CONNS, ${ROUNDS}x${DURATION}s) | median req/s | min–max |"
echo "|---|---|---|"
echo "| A: admin off, access log off | $AM | $AMIN–$AMAX |"
echo "| M: admin on (scraped 1/s), access log off | $MM | $MMIN–$MMAX |"
echo "| B: admin on (scraped 1/s), access log to a file | $BM | $BMIN–$BMAX |"
awk -v a="$AM" -v m="$MM" -v b="$BM" 'BEGIN {printf "\nM/A = %.3f (metrics alone)  B/A = %.3f (target >= 0.97)\n", m / a, b / a}'
echo "access log lines written in B: $(wc -l <"$TMP/access.log")"
