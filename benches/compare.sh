#!/usr/bin/env bash
# Compare weir with nginx and HAProxy on this machine, fairly: interleaved rounds, pinned,
# compared by proxy CPU over backend CPU in the same run (benches/README.md has the method).
#
#   bash benches/compare.sh [--rounds 5] [--duration 5] [--warmup 1] [--conns 64[,256,1000]]
#                           [--threads 1[,2]] [--quick] [--proxies weir,nginx,haproxy[,weir-pgo]]
#                           [--no-install] [--no-build] [--keep]
#
#   --rounds N      measured rounds; each round runs every target once (default 5)
#   --duration S    seconds per measured wrk run (default 5)
#   --warmup S      seconds of unmeasured wrk just before each measured run (default 1)
#   --conns LIST    wrk connections, comma-separated; one table per value (default 64)
#   --threads LIST  proxy threads/workers, 1 and/or 2, comma-separated (default 1)
#   --quick         3 rounds x 3 s (explicit --rounds/--duration still win)
#   --proxies LIST  subset of weir,nginx,haproxy,weir-pgo (default the first three);
#                   weir-pgo is weir built with profile-guided optimisation by
#                   benches/pgo.sh (target/pgo/release/weir), in the same rounds
#   --no-install    do not apt-get missing tools
#   --no-build      use the existing target/release binaries
#   --keep          keep the temp dir (configs, logs, raw wrk output, results.tsv)
#
# It installs wrk/nginx/haproxy with apt-get when missing, builds weir and
# examples/bench_backend in release, starts three one-thread backends and the proxies on
# 127.0.0.1 (free ports below the ephemeral range), runs them interleaved round by round
# with taskset pinning, reads utime+stime from /proc/PID/stat around every run, and
# prints markdown tables. Everything it starts is stopped on exit (benches/lib.sh).

# shellcheck disable=SC2016 # awk programs and expressions in single quotes, on purpose
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS="" DURATION="" WARMUP=1 CONNS_LIST=64 THREADS_LIST=1 QUICK=0
PROXIES="weir,nginx,haproxy"
parse_options "--rounds=ROUNDS --duration=DURATION --warmup=WARMUP --conns=CONNS_LIST \
    --threads=THREADS_LIST --proxies=PROXIES --quick=QUICK:1" "$@"
if ((QUICK)); then ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-3}"; fi
ROUNDS="${ROUNDS:-5}"; DURATION="${DURATION:-5}"
IFS=, read -ra CONNS_ARR <<<"$CONNS_LIST"
IFS=, read -ra THREADS_ARR <<<"$THREADS_LIST"
IFS=, read -ra PROXY_ARR <<<"$PROXIES"
need_positive "$ROUNDS" "$DURATION" "$WARMUP" "${CONNS_ARR[@]}"
for t in "${THREADS_ARR[@]}"; do [[ "$t" == 1 || "$t" == 2 ]] || die "--threads takes 1 and/or 2"; done
for p in "${PROXY_ARR[@]}"; do [[ "$p" =~ ^(weir|nginx|haproxy|weir-pgo)$ ]] || die "unknown proxy: $p"; done

need_tools wrk nginx haproxy taskset curl
build_release bench_backend
WEIR_PGO="$TARGET_DIR/pgo/release/weir"
if [[ ",$PROXIES," == *",weir-pgo,"* ]]; then
    if ((BUILD)); then bash "$ROOT/benches/pgo.sh" >/dev/null; fi
    [[ -x "$WEIR_PGO" ]] || die "missing $WEIR_PGO (run benches/pgo.sh, or drop --no-build)"
fi
BACKEND="$TARGET_DIR/release/examples/bench_backend"
HAPROXY_BIN="$(command -v haproxy || echo /usr/sbin/haproxy)"

# ---------------------------------------------------------------- pinning
proxy_cpus() { # proxy_cpus THREADS
    if (($1 == 1 || NPROC < 2)); then echo 0; else echo 0,1; fi
}
pinning_note() {
    if (($1 == 1)); then
        echo "wrk alone on cpu$CLIENT_CPUS; the three backends and the one-thread proxy on cpu$SERVER_CPUS"
    else
        echo "wrk on cpu$CLIENT_CPUS; backends on cpu$SERVER_CPUS; the two-thread proxy may use cpu0+cpu1" \
            "(a 2-core machine has no third core: the proxy shares cpu1 with wrk and cpu0 with the" \
            "backends, so compare proxies by the CPU ratio and by their 1->2 scaling, not absolute req/s)"
    fi
}

# ---------------------------------------------------------------- backends
cat >"$T/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %.1f %.1f %d %d %d %d %d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
LUA

start_backends 3 taskset -c "$SERVER_CPUS" "$BACKEND"

# ---------------------------------------------------------------- proxies
declare -A PORT=() PIDS=()

write_configs() { # write_configs THREADS CONNS
    local threads=$1 conns=$2
    local wc=$((conns * 4 + 1024))
    pick_port; PORT[weir]=$REPLY
    pick_port; PORT[weir-pgo]=$REPLY
    pick_port; PORT[nginx]=$REPLY
    pick_port; PORT[haproxy]=$REPLY

    cat >"$T/weir.toml" <<TOML
[server]
listen = ["127.0.0.1:${PORT[weir]}"]
threads = $threads
max_connections = $wc

[log]
level = "warn"
access = "off"

$(weir_upstream 'balance = "round_robin"' "keepalive = $conns   # idle pooled connections per server, >= client concurrency")
TOML
    sed "s/:${PORT[weir]}\"/:${PORT[weir-pgo]}\"/" "$T/weir.toml" >"$T/weir-pgo.toml"
    # keepalive: idle upstream connections per worker, >= client concurrency
    nginx_conf "$threads" "$wc" "$conns" "${PORT[nginx]}"

    {
        echo "global"
        echo "    nbthread $threads"
        echo "    maxconn $wc"
        echo "defaults"
        echo "    mode http"
        echo "    timeout connect 2s"
        echo "    timeout client 60s"
        echo "    timeout server 60s"
        echo "    timeout http-keep-alive 60s"
        echo "    option http-keep-alive"
        echo "    option forwardfor"
        echo "    http-reuse always"
        echo "frontend fe"
        echo "    bind 127.0.0.1:${PORT[haproxy]}"
        echo "    http-request set-header X-Real-IP %[src]"
        echo "    http-request set-header X-Forwarded-Proto http"
        echo "    http-request set-header X-Forwarded-Host %[req.hdr(host)]"
        echo "    default_backend be"
        echo "backend be"
        echo "    balance roundrobin"
        for i in 0 1 2; do echo "    server s$((i + 1)) 127.0.0.1:${BACKEND_PORTS[$i]}"; done
    } >"$T/haproxy.cfg"
}

start_proxy() { # start_proxy NAME THREADS
    local name=$1 cpus code body_len
    cpus="$(proxy_cpus "$2")"
    case "$name" in
        weir) serve weir "${PORT[weir]}" taskset -c "$cpus" "$WEIR" run -c "$T/weir.toml" ;;
        weir-pgo) serve weir-pgo "${PORT[weir-pgo]}" taskset -c "$cpus" "$WEIR_PGO" run -c "$T/weir-pgo.toml" ;;
        nginx) serve nginx "${PORT[nginx]}" taskset -c "$cpus" "${NGINX_CMD[@]}" ;;
        haproxy) serve haproxy "${PORT[haproxy]}" taskset -c "$cpus" "$HAPROXY_BIN" -db -f "$T/haproxy.cfg" ;;
    esac
    PIDS[$name]="$REPLY"
    [[ $name == nginx ]] && PIDS[$name]="$(nginx_pids "$REPLY" "$2")" # master + workers
    # sanity: 200 and the backend's 94-byte body through the proxy
    code="$(curl -s -o "$T/sanity.body" -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/" || true)"
    body_len="$(wc -c <"$T/sanity.body" 2>/dev/null || echo 0)"
    if [[ "$code" != 200 || "$body_len" != 94 ]]; then
        echo "WARNING: $name sanity request got status $code, ${body_len}-byte body (want 200, 94)" >&2
    fi
}

stop_proxies() {
    # shellcheck disable=SC2048,SC2086 # PIDS holds space-separated lists
    stop_pids ${PIDS[*]}
    PIDS=()
}

# ---------------------------------------------------------------- runs
RESULTS="$T/results.tsv"
: >"$RESULTS"
mkdir -p "$T/runs"

# run_target VARIANT ROUND NAME PORT CONNS PROXY_PIDS...
run_target() {
    local variant=$1 round=$2 name=$3 port=$4 conns=$5
    shift 5
    local -a ppids=("$@")
    local out="$T/runs/$variant.r$round.$name.txt"
    taskset -c "$CLIENT_CPUS" wrk -t1 -c"$conns" -d"${WARMUP}s" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    local b0 p0 b1 p1 pu0 pu1
    read -r b0 _ <<<"$(cpu_ticks "${BACKEND_PIDS[@]}")"
    read -r p0 pu0 <<<"$(cpu_ticks "${ppids[@]}")"
    taskset -c "$CLIENT_CPUS" wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$T/report.lua" \
        "http://127.0.0.1:$port/" >"$out" 2>&1 || true
    read -r b1 _ <<<"$(cpu_ticks "${BACKEND_PIDS[@]}")"
    read -r p1 pu1 <<<"$(cpu_ticks "${ppids[@]}")"
    local p
    for p in "${ppids[@]}" "${BACKEND_PIDS[@]}"; do
        if ! kill -0 "$p" 2>/dev/null; then
            tail -20 "$T/$name.log" >&2 2>/dev/null || true
            die "$name (or a backend) died during round $round of $variant; wrk said: $(tail -5 "$out")"
        fi
    done
    local line
    line="$(grep '^WRKRESULT ' "$out" | tail -1)" || die "no wrk result for $name; wrk said: $(cat "$out")"
    # requests duration_us p50_us p99_us connect read write status timeout
    read -r _ req dur p50 p99 ec er ew es et <<<"$line"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$round" "$name" \
        "$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.1f", r / (d / 1e6) }')" \
        "$p50" "$p99" "$req" "$((p1 - p0))" "$((b1 - b0))" "$es" "$((ec + er + ew + et))" "$((pu1 - pu0))" >>"$RESULTS"
    printf '  round %d %-8s %8.0f req/s  p99 %6.0f us  errors %d/%d\n' "$round" "$name" \
        "$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.1f", r / (d / 1e6) }')" "$p99" \
        "$es" "$((ec + er + ew + et))" >&2
}

# col VARIANT NAME EXPR: one awk expression per matching row ($4 rps, $5 p50, $6 p99,
# $7 requests, $8 proxy ticks, $9 backend ticks, $10 non-2xx, $11 socket errors,
# $12 proxy user-space ticks)
col() {
    awk -F'\t' -v v="$1" -v n="$2" -v tck="$CLK_TCK" '$1 == v && $3 == n { print '"$3"' }' "$RESULTS"
}
# ratio VARIANT A B EXPR: per-round EXPR(A) / EXPR(B)
ratio() {
    awk -F'\t' -v v="$1" -v a="$2" -v b="$3" -v tck="$CLK_TCK" '
        $1 == v && ($3 == a || $3 == b) { x[$3, $2] = '"$4"'; r[$2] = 1 }
        END { for (k in r) if (((a, k) in x) && ((b, k) in x) && x[b, k] > 0) print x[a, k] / x[b, k] }' "$RESULTS"
}

PROXY_CPU_US='($8 * 1e6 / tck) / $7'
PROXY_USER_US='($12 * 1e6 / tck) / $7'
PROXY_SYS_US='(($8 - $12) * 1e6 / tck) / $7'
BACKEND_CPU_US='($9 * 1e6 / tck) / $7'
CPU_RATIO='($9 > 0 ? $8 / $9 : 0)'

report_variant() { # report_variant VARIANT THREADS CONNS
    local v=$1 threads=$2 conns=$3 name label
    echo
    echo "### ${threads} thread(s)/worker(s), wrk -t1 -c$conns -d${DURATION}s, $ROUNDS rounds (+${WARMUP}s warm-up each)"
    echo "pinning: $(pinning_note "$threads")"
    echo
    echo "| target | req/s median (min-max) | p50 ms | p99 ms | proxy CPU us/req | of which user / kernel | backend CPU us/req | proxy/backend CPU median (min-max) | non-2xx | socket errors |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for name in direct "${PROXY_ARR[@]}"; do
        [[ -n "$(col "$v" "$name" '$4')" ]] || continue
        local rps p50 p99 pcpu split bcpu cr e2 es
        read -r rps_m rps_lo rps_hi <<<"$(col "$v" "$name" '$4' | stats)"
        rps="$(printf '%.0f (%.0f-%.0f)' "$rps_m" "$rps_lo" "$rps_hi")"
        p50="$(col "$v" "$name" '$5 / 1000' | stats | awk '{ printf "%.2f", $1 }')"
        p99="$(col "$v" "$name" '$6 / 1000' | stats | awk '{ printf "%.2f", $1 }')"
        bcpu="$(col "$v" "$name" "$BACKEND_CPU_US" | stats | awk '{ printf "%.2f", $1 }')"
        e2="$(col "$v" "$name" '$10' | awk '{ s += $1 } END { print s + 0 }')"
        es="$(col "$v" "$name" '$11' | awk '{ s += $1 } END { print s + 0 }')"
        if [[ $name == direct ]]; then
            label="direct to one backend (ceiling)"; pcpu="-"; split="-"; cr="-"
        else
            label="$name"
            pcpu="$(col "$v" "$name" "$PROXY_CPU_US" | stats | awk '{ printf "%.2f", $1 }')"
            split="$(col "$v" "$name" "$PROXY_USER_US" | stats | awk '{ printf "%.2f", $1 }') / $(col "$v" "$name" "$PROXY_SYS_US" | stats | awk '{ printf "%.2f", $1 }')"
            cr="$(col "$v" "$name" "$CPU_RATIO" | stats | awk '{ printf "%.2f (%.2f-%.2f)", $1, $2, $3 }')"
        fi
        echo "| $label | $rps | $p50 | $p99 | $pcpu | $split | $bcpu | $cr | $e2 | $es |"
    done
    local ours other rr raw_r cpu_r p99_r
    for ours in weir weir-pgo; do
        [[ ",$PROXIES," == *",$ours,"* ]] || continue
        for other in nginx haproxy weir; do
            [[ ",$PROXIES," == *",$other,"* && $other != "$ours" ]] || continue
            rr="$(ratio "$v" "$ours" "$other" '$4' | stats_fmt '%.2f (%.2f-%.2f)')"
            raw_r="$(ratio "$v" "$ours" "$other" "$PROXY_CPU_US" | stats_fmt '%.2f (%.2f-%.2f)')"
            cpu_r="$(ratio "$v" "$ours" "$other" "$CPU_RATIO" | stats_fmt '%.2f (%.2f-%.2f)')"
            p99_r="$(ratio "$v" "$ours" "$other" '$6' | stats_fmt '%.2f (%.2f-%.2f)')"
            echo
            echo "$ours / $other, per-round ratios, median (min-max): req/s $rr | proxy CPU $raw_r | proxy/backend CPU $cpu_r | p99 $p99_r"
        done
    done
}

# ---------------------------------------------------------------- header
ver_wrk="$(wrk --version 2>&1 | head -1 | awk '{ print $2 }')" || true
ver_nginx="$("$NGINX_BIN" -v 2>&1 | sed 's/.*nginx\///')" || true
ver_haproxy="$("$HAPROXY_BIN" -v 2>&1 | head -1 | awk '{ print $3 }')" || true
ver_weir="$("$WEIR" --version 2>&1 | head -1)" || true
ver_rustc="$(cd "$ROOT" && rustc --version 2>/dev/null)" || ver_rustc="rustc ?"
echo "## weir comparison"
header
echo "versions: $ver_weir | nginx $ver_nginx | HAProxy $ver_haproxy | wrk $ver_wrk | $ver_rustc"
echo "backends: 3 x examples/bench_backend (hyper, current-thread tokio, 94-byte body) on cpu$SERVER_CPUS"

declare -a VARIANTS=()
for threads in "${THREADS_ARR[@]}"; do
    for conns in "${CONNS_ARR[@]}"; do
        v="t${threads}c${conns}"
        VARIANTS+=("$v:$threads:$conns")
        echo "running $v: $(pinning_note "$threads")" >&2
        write_configs "$threads" "$conns"
        for name in "${PROXY_ARR[@]}"; do start_proxy "$name" "$threads"; done
        sleep 0.5
        for round in $(seq "$ROUNDS"); do
            run_target "$v" "$round" direct "${BACKEND_PORTS[0]}" "$conns" "${BACKEND_PIDS[0]}"
            for name in "${PROXY_ARR[@]}"; do
                # shellcheck disable=SC2086 # PIDS holds a space-separated list
                run_target "$v" "$round" "$name" "${PORT[$name]}" "$conns" ${PIDS[$name]}
            done
        done
        for name in "${PROXY_ARR[@]}"; do
            if [[ -s "$T/$name.log" ]] && grep -qiE 'error|warn|panic' "$T/$name.log"; then
                echo "note: $name logged during $v:" >&2
                grep -iE 'error|warn|panic' "$T/$name.log" | sort | uniq -c | sort -rn | head -5 >&2
            fi
        done
        stop_proxies
        report_variant "$v" "$threads" "$conns"
    done
done

# 1 -> 2 threads scaling, when both were run
if [[ " ${THREADS_ARR[*]} " == *" 1 "* && " ${THREADS_ARR[*]} " == *" 2 "* ]]; then
    echo
    echo "### scaling, 1 -> 2 threads/workers (median req/s with 2 / median req/s with 1)"
    for conns in "${CONNS_ARR[@]}"; do
        line="-c$conns:"
        for name in "${PROXY_ARR[@]}"; do
            a="$(col "t1c$conns" "$name" '$4' | stats | cut -d' ' -f1)"
            b="$(col "t2c$conns" "$name" '$4' | stats | cut -d' ' -f1)"
            line+=" $name $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", (a > 0 ? b / a : 0) }')"
        done
        echo "$line"
    done
fi
