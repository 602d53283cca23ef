#!/usr/bin/env bash
# Memory per idle keep-alive client connection, weir beside nginx; or a soak
# under steady load that samples weir's RSS (see benches/README.md).
#
#   bash benches/idle_conns.sh [--conns 10000] [--no-nginx] [--no-install] [--no-build] [--keep]
#   bash benches/idle_conns.sh --soak 600 [--sample 10] [--load-conns 64]
#
#   --conns N       idle client connections per proxy (default 10000)
#   --no-nginx      measure weir only
#   --soak S        instead: wrk against weir for S seconds, sampling its RSS
#   --sample S      seconds between RSS samples in a soak (default 10)
#   --load-conns N  wrk connections during a soak (default 64)
#   --no-install    do not apt-get missing tools
#   --no-build      use the existing target/release binaries
#   --keep          keep the temp dir (configs, logs)
#
# One bench_backend and the proxy (one thread / one worker) on cpu0; the client
# (examples/idle_clients, or wrk) on cpu1; all on 127.0.0.1. Each idle connection
# has sent one request and read its answer, then stays open and silent. RSS is
# VmRSS from /proc/PID/status (nginx: master + worker), read before the clients
# connect, 3 s after all of them are set up, and once it has settled (allocators
# hand freed pages back lazily: sampled every second until it stops falling, at
# most 20 s); KB per connection is the difference
# over the number of connections. weir's idle_timeout and nginx's keepalive_timeout
# are set to an hour so nothing is closed during the measurement.
set -euo pipefail

CMDLINE="bash benches/idle_conns.sh${*:+ $*}"
CONNS=10000 NGINX=1 SOAK=0 SAMPLE=10 LOAD_CONNS=64 INSTALL=1 BUILD=1 KEEP=0
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case "$1" in
        --conns) CONNS="${2:?}"; shift 2 ;;
        --no-nginx) NGINX=0; shift ;;
        --soak) SOAK="${2:?}"; shift 2 ;;
        --sample) SAMPLE="${2:?}"; shift 2 ;;
        --load-conns) LOAD_CONNS="${2:?}"; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
done
for n in "$CONNS" "$SAMPLE" "$LOAD_CONNS"; do
    [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "not a positive integer: $n" >&2; exit 2; }
done
[[ "$SOAK" =~ ^[0-9]+$ ]] || { echo "--soak takes seconds" >&2; exit 2; }

# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
tools=(taskset curl ss)
((SOAK)) && tools+=(wrk)
((NGINX && !SOAK)) && tools+=(nginx)
need_tools "${tools[@]}"
build_release bench_backend idle_clients
BACKEND="$TARGET_DIR/release/examples/bench_backend"
CLIENT="$TARGET_DIR/release/examples/idle_clients"
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
LIMIT="$(ulimit -n)"
((SOAK || CONNS + 100 <= LIMIT)) || die "ulimit -n is $LIMIT; $CONNS connections need more (raise the hard limit)"

pick_port; BACKEND_PORT=$REPLY
taskset -c "$SERVER_CPUS" "$BACKEND" "$BACKEND_PORT" >"$T/backend.log" 2>&1 &
BACKEND_PID=$!; ALL_PIDS+=("$BACKEND_PID")
wait_port "$BACKEND_PORT" "$BACKEND_PID" || die "backend did not start"

declare -A PORT=() PIDS=()
pick_port; PORT[weir]=$REPLY
pick_port; PORT[nginx]=$REPLY
MAXC=$((CONNS * 2 + 1024))
cat >"$T/weir.toml" <<TOML
[server]
listen = ["127.0.0.1:${PORT[weir]}"]
threads = 1
max_connections = $MAXC
idle_timeout = "1h"

[log]
level = "warn"
access = "off"

[[upstream]]
name = "bench"
servers = ["127.0.0.1:$BACKEND_PORT"]
keepalive = 64

[[route]]
path = "/"
upstream = "bench"
TOML
mkdir -p "$T/nginx/logs" "$T/nginx/tmp"
{
    [[ $EUID -eq 0 ]] && echo "user root;"
    echo "worker_processes 1;"
    echo "worker_rlimit_nofile $((MAXC * 2));"
    echo "daemon off;"
    echo "pid $T/nginx/nginx.pid;"
    echo "error_log $T/nginx/logs/error.log warn;"
    echo "events { worker_connections $MAXC; }"
    echo "http {"
    echo "    access_log off;"
    echo "    keepalive_timeout 3600s;"
    echo "    keepalive_requests 1000000000;"
    echo "    client_body_temp_path $T/nginx/tmp/body;"
    echo "    proxy_temp_path $T/nginx/tmp/proxy;"
    echo "    fastcgi_temp_path $T/nginx/tmp/fastcgi;"
    echo "    uwsgi_temp_path $T/nginx/tmp/uwsgi;"
    echo "    scgi_temp_path $T/nginx/tmp/scgi;"
    echo "    upstream bench { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }"
    echo "    server {"
    echo "        listen 127.0.0.1:${PORT[nginx]} backlog=4096;"
    echo "        location / {"
    echo "            proxy_pass http://bench;"
    echo "            proxy_http_version 1.1;"
    echo "            proxy_set_header Connection \"\";"
    echo "            proxy_set_header Host \$http_host;"
    echo "            proxy_set_header X-Real-IP \$remote_addr;"
    echo "            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
    echo "        }"
    echo "    }"
    echo "}"
} >"$T/nginx.conf"

start_proxy() { # start_proxy NAME
    local name=$1 pid workers=""
    case "$name" in
        weir) taskset -c "$SERVER_CPUS" "$WEIR" run -c "$T/weir.toml" >"$T/weir.log" 2>&1 & ;;
        nginx) taskset -c "$SERVER_CPUS" "$NGINX_BIN" -p "$T/nginx" -c "$T/nginx.conf" \
            -e "$T/nginx/logs/error.log" >"$T/nginx.log" 2>&1 & ;;
    esac
    pid=$!; ALL_PIDS+=("$pid")
    wait_port "${PORT[$name]}" "$pid" || { tail -20 "$T/$name.log" >&2; die "$name did not start"; }
    if [[ $name == nginx ]]; then
        for _ in $(seq 100); do
            workers="$(pgrep -P "$pid" | tr '\n' ' ')"
            [[ -n "$workers" ]] && break
            sleep 0.05
        done
    fi
    PIDS[$name]="$pid $workers"
    # Warm: the first proxied request allocates the upstream connection and buffers.
    local i
    for i in 1 2 3; do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/")" == 200 ]] ||
            die "$name: sanity request $i failed"
    done
}
stop_proxy() { # stop_proxy NAME
    local p
    for p in ${PIDS[$1]}; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for p in ${PIDS[$1]}; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in ${PIDS[$1]}; do kill -KILL "$p" 2>/dev/null || true; done
}

echo "## weir memory"
header "$CMDLINE"

if ((SOAK)); then
    start_proxy weir
    # shellcheck disable=SC2086
    echo "soak: wrk -t1 -c$LOAD_CONNS -d${SOAK}s on cpu$CLIENT_CPUS against weir (1 thread) on cpu$SERVER_CPUS; RSS every ${SAMPLE}s"
    taskset -c "$CLIENT_CPUS" wrk -t1 -c"$LOAD_CONNS" -d"${SOAK}s" "http://127.0.0.1:${PORT[weir]}/" >"$T/wrk.txt" 2>&1 &
    WRK_PID=$!; ALL_PIDS+=("$WRK_PID")
    echo
    echo "| t s | weir RSS KiB |"
    echo "|---|---|"
    : >"$T/samples"
    start=$SECONDS
    while kill -0 "$WRK_PID" 2>/dev/null && ((SECONDS - start < SOAK + 30)); do
        sleep "$SAMPLE"
        kill -0 "$WRK_PID" 2>/dev/null || break
        rss="$(rss_kb ${PIDS[weir]})"
        echo "$((SECONDS - start)) $rss" >>"$T/samples"
        echo "| $((SECONDS - start)) | $rss |"
    done
    wait "$WRK_PID" || true
    kill -0 "${PIDS[weir]%% *}" 2>/dev/null || die "weir died during the soak"
    echo
    grep -E 'Requests/sec|requests in|Socket errors|Non-2xx' "$T/wrk.txt" | sed 's/^ */wrk: /'
    awk 'NR == 1 { first = $2; t0 = $1 } { last = $2; if ($2 > max) max = $2; n = NR; t[NR] = $1; r[NR] = $2 }
        END {
            if (n < 2) { print "too few samples"; exit }
            h = int(n / 2) + 1
            printf "RSS: first sample %d KiB (t=%ds), last %d KiB, max %d KiB; growth first->last %+d KiB (%+.1f%%); second half %d -> %d KiB (%+d KiB)\n",
                first, t0, last, max, last - first, (last - first) * 100 / first, r[h], last, last - r[h]
        }' "$T/samples"
    exit 0
fi

targets=(weir)
((NGINX)) && targets+=(nginx)
echo "$CONNS idle keep-alive connections per proxy (one request each, then silent); client on cpu$CLIENT_CPUS, proxy (1 thread/worker) + backend on cpu$SERVER_CPUS"
echo
echo "| proxy | RSS before KiB | RSS with $CONNS idle KiB, 3 s / settled | KiB per connection, 3 s / settled (after) | connections set up / failed | still open after hold | RSS after clients closed KiB |"
echo "|---|---|---|---|---|---|---|"
for name in "${targets[@]}"; do
    start_proxy "$name"
    sleep 1
    # shellcheck disable=SC2086
    before="$(rss_kb ${PIDS[$name]})"
    taskset -c "$CLIENT_CPUS" "$CLIENT" "127.0.0.1:${PORT[$name]}" "$CONNS" --hold 28 >"$T/client.$name.out" 2>"$T/client.$name.err" &
    cpid=$!; ALL_PIDS+=("$cpid")
    ready=""
    for _ in $(seq 1200); do
        ready="$(grep '^READY ' "$T/client.$name.out" || true)"
        [[ -n "$ready" ]] && break
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$ready" ]] || die "$name: the client did not finish setting up: $(cat "$T/client.$name.err")"
    sleep 3
    # shellcheck disable=SC2086
    during="$(rss_kb ${PIDS[$name]})"
    settled="$during" waited=3
    while ((waited < 23)); do
        sleep 1
        waited=$((waited + 1))
        # shellcheck disable=SC2086
        now="$(rss_kb ${PIDS[$name]})"
        ((now * 100 >= settled * 99)) && { settled="$now"; break; }
        settled="$now"
    done
    wait "$cpid" || true
    still="$(awk '/^STILL_OPEN/ { print $2 }' "$T/client.$name.out")"
    sleep 2
    # shellcheck disable=SC2086
    after="$(rss_kb ${PIDS[$name]})"
    read -r _ ok failed <<<"$ready"
    per() { awk -v a="$1" -v b="$before" -v n="$ok" 'BEGIN { printf "%.2f", (n > 0 ? (a - b) / n : 0) }'; }
    echo "| $name | $before | $during / $settled | $(per "$during") / $(per "$settled") (${waited} s) | $ok / $failed | ${still:-?} | $after |"
    [[ -s "$T/client.$name.err" ]] && sed "s/^/  $name client: /" "$T/client.$name.err" >&2
    stop_proxy "$name"
done
