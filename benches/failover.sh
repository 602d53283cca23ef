#!/usr/bin/env bash
# Failover under load: wrk for 10 s through weir in front of three backends;
# one backend is killed after 3 s and restarted after 6 s. Prints requests/s and
# the count of non-2xx responses and socket errors, which must both be 0.
#
#   bash benches/failover.sh [--duration 10] [--kill-at 3] [--restart-at 6] [--conns 64]
#
# Traffic stays on 127.0.0.1. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10 KILL_AT=3 RESTART_AT=6 CONNS=64
while (($#)); do
    case "$1" in
        --duration) DURATION="${2:?}"; shift 2 ;;
        --kill-at) KILL_AT="${2:?}"; shift 2 ;;
        --restart-at) RESTART_AT="${2:?}"; shift 2 ;;
        --conns) CONNS="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build -q --release --bin weir --example bench_backend

T=$(mktemp -d)
PIDS=()
cleanup() {
    [[ -f "$T/restarted.pid" ]] && PIDS+=("$(cat "$T/restarted.pid")")
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

BACKEND=target/release/examples/bench_backend
P1=$(free_port) P2=$(free_port) P3=$(free_port) PROXY=$(free_port)
"$BACKEND" "$P1" & PIDS+=($!)
"$BACKEND" "$P2" & VICTIM=$!; PIDS+=($VICTIM)
"$BACKEND" "$P3" & PIDS+=($!)
for p in "$P1" "$P2" "$P3"; do wait_port "$p"; done

cat >"$T/weir.toml" <<TOML
[server]
listen = ["127.0.0.1:$PROXY"]
[log]
level = "info"
access = "off"
[[upstream]]
name = "app"
servers = ["127.0.0.1:$P1", "127.0.0.1:$P2", "127.0.0.1:$P3"]
keepalive = 256
fail_timeout = "2s"
[upstream.health_check]
path = "/"
interval = "500ms"
[[route]]
upstream = "app"
TOML
target/release/weir run -c "$T/weir.toml" 2>"$T/weir.log" & PIDS+=($!)
wait_port "$PROXY"

(
    sleep "$KILL_AT"
    kill "$VICTIM"
    echo "t=${KILL_AT}s: killed the backend on 127.0.0.1:$P2" >&2
    sleep $((RESTART_AT - KILL_AT))
    "$BACKEND" "$P2" >/dev/null 2>&1 &
    echo $! >"$T/restarted.pid"
    echo "t=${RESTART_AT}s: restarted it" >&2
) & PIDS+=($!)

wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PROXY/" >"$T/wrk.txt"
cat "$T/wrk.txt"
rps=$(awk '/^Requests\/sec/ {print $2}' "$T/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$T/wrk.txt")
sockerr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$T/wrk.txt")
echo
echo "## failover: $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), wrk -t1 -c$CONNS -d${DURATION}s, kill at ${KILL_AT}s, restart at ${RESTART_AT}s"
echo "requests/s: $rps | non-2xx: ${non2xx:-0} | socket errors: ${sockerr:-0}"
echo "weir's log (server down/up):"
grep -E ": server (down|up) " "$T/weir.log" | sed 's/^/  /' || true
[[ "${non2xx:-0}" == 0 && "${sockerr:-0}" == 0 ]]
