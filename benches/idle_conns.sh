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

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CONNS=10000 NGINX=1 SOAK=0 SAMPLE=10 LOAD_CONNS=64
parse_options "--conns=CONNS --no-nginx=NGINX:0 --soak=SOAK --sample=SAMPLE \
    --load-conns=LOAD_CONNS" "$@"
need_positive "$CONNS" "$SAMPLE" "$LOAD_CONNS"
[[ "$SOAK" =~ ^[0-9]+$ ]] || { echo "--soak takes seconds" >&2; exit 2; }

tools=(taskset curl)
((SOAK)) && tools+=(wrk)
((NGINX && !SOAK)) && tools+=(nginx)
need_tools "${tools[@]}"
build_release bench_backend idle_clients
BACKEND="$TARGET_DIR/release/examples/bench_backend"
CLIENT="$TARGET_DIR/release/examples/idle_clients"
LIMIT="$(ulimit -n)"
((SOAK || CONNS + 100 <= LIMIT)) || die "ulimit -n is $LIMIT; $CONNS connections need more (raise the hard limit)"

start_backends 1 taskset -c "$SERVER_CPUS" "$BACKEND"

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

$(weir_upstream 'keepalive = 64')
TOML
nginx_conf 1 "$MAXC" 64 "${PORT[nginx]}" "keepalive_timeout 3600s;"

start_proxy() { # start_proxy NAME
    local name=$1 i
    case "$name" in
        weir) serve weir "${PORT[weir]}" taskset -c "$SERVER_CPUS" "$WEIR" run -c "$T/weir.toml" ;;
        nginx) serve nginx "${PORT[nginx]}" taskset -c "$SERVER_CPUS" "${NGINX_CMD[@]}" ;;
    esac
    PIDS[$name]="$REPLY"
    [[ $name == nginx ]] && PIDS[$name]="$(nginx_pids "$REPLY" 1)" # master + worker
    # Warm: the first proxied request allocates the upstream connection and buffers.
    for i in 1 2 3; do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/")" == 200 ]] ||
            die "$name: sanity request $i failed"
    done
}
stop_proxy() { # stop_proxy NAME
    # shellcheck disable=SC2086 # a space-separated list
    stop_pids ${PIDS[$1]}
}

echo "## weir memory"
header

if ((SOAK)); then
    start_proxy weir
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
        rss="$(rss_kb "${PIDS[weir]}")"
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
