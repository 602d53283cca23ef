#!/usr/bin/env bash
# Instructions per request that the admin listener and a file access log add,
# counted by callgrind: repeatable on a noisy shared machine, where requests/s
# (benches/overhead.sh) swings by tens of percent between runs.
#
#   bash benches/overhead_cg.sh [--seconds 10] [--conns 16]
#
# Runs weir (one thread) under valgrind twice against one bench backend:
# A = admin off, access log off; B = admin on, access log to a file. Prints
# instructions per request for each and B/A.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=10 CONNS=16
while (($#)); do
    case "$1" in
        --seconds) SECONDS_PER_RUN="${2:?}"; shift 2 ;;
        --conns) CONNS="${2:?}"; shift 2 ;;
        *) echo "usage: $0 [--seconds N] [--conns N]" >&2; exit 2 ;;
    esac
done
for tool in wrk valgrind; do
    command -v "$tool" >/dev/null || { apt-get update -q && apt-get install -y -q wrk valgrind; break; }
done
cargo build -q --release --bin weir --example bench_backend

T=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n "${KEEP:-}" ]] && echo "kept $T" >&2 || rm -rf "$T"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

BACKEND_PORT=$(free_port)
target/release/examples/bench_backend "$BACKEND_PORT" & PIDS+=($!)
wait_port "$BACKEND_PORT"

# Prints "instructions requests" for one variant.
measure() {
    local name=$1 extra=$2 port admin_port
    port=$(free_port)
    admin_port=$(free_port)
    extra=${extra//ADMIN_PORT/$admin_port}
    cat >"$T/$name.toml" <<TOML
[server]
listen = ["127.0.0.1:$port"]
threads = 1
$extra
[[upstream]]
name = "app"
servers = ["127.0.0.1:$BACKEND_PORT"]
keepalive = 64
[[route]]
upstream = "app"
TOML
    valgrind --tool=callgrind --callgrind-out-file="$T/$name.cg" \
        target/release/weir run -c "$T/$name.toml" 2>"$T/$name.log" &
    local pid=$!
    wait_port "$port"
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:$port/" >"$T/$name.wrk"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    local instructions requests
    instructions=$(awk '/^summary:/ {print $2}' "$T/$name.cg")
    requests=$(awk '/requests in/ {print $1}' "$T/$name.wrk")
    echo "$instructions $requests"
}

read -r a_instr a_req < <(measure A "[log]
level = \"warn\"
access = \"off\"")
read -r b_instr b_req < <(measure B "[admin]
listen = \"127.0.0.1:ADMIN_PORT\"
[log]
level = \"warn\"
access = \"$T/access.log\"")
awk -v ai="$a_instr" -v ar="$a_req" -v bi="$b_instr" -v br="$b_req" 'BEGIN {
    a = ai / ar; b = bi / br
    printf "| variant | requests | instructions per request |\n|---|---|---|\n"
    printf "| A: admin off, access log off | %d | %.0f |\n", ar, a
    printf "| B: admin on, access log to a file | %d | %.0f |\n", br, b
    printf "\nB/A instructions per request = %.3f (requests/s ratio at equal CPU ~ %.3f)\n", b / a, a / b
}'
echo "access log lines written in B: $(wc -l <"$T/access.log")"
