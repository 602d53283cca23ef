#!/usr/bin/env bash
# The response cache against nginx's proxy_cache: one hot URL micro-cached for 1 s, the
# way README's caching example does it, so nearly every request is a cache hit.
#
#   bash benches/cache.sh [--rounds 5] [--duration 5] [--conns 64]
#                         [--no-install] [--no-build] [--keep]
#
# Targets, interleaved round by round (the order turning each round):
#   weir      weir without a cache (every request reaches the backend)
#   weir-c    weir with `cache = { ttl = "1s", stale_while_revalidate = "10s" }` and a
#             64 MiB memory tier
#   nginx-c   nginx's micro-caching recipe: proxy_cache (files under the temp dir),
#             proxy_cache_valid 200 1s, proxy_cache_lock on, proxy_cache_use_stale
#             updating, proxy_cache_background_update on
#   nginx     the same nginx, its cache bypassed (a request header turns it off)
# Pinned as in benches/README.md: wrk -t1 alone on cpu1; the backend (bench_backend) and
# the one-thread proxies on cpu0. Per target: requests/s, proxy CPU µs per request
# (utime+stime from /proc/PID/stat over the run), and backend requests per second during
# the run (the backend's own counter, GET /backend-requests). Ratios weir-c ÷ nginx-c
# are taken per round; medians and min–max.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=5 DURATION=5 CONNS=64
parse_options "--rounds=ROUNDS --duration=DURATION --conns=CONNS" "$@"
need_positive "$ROUNDS" "$DURATION" "$CONNS"

need_tools wrk nginx taskset curl
build_release bench_backend
ON_CLIENT=(taskset -c "$CLIENT_CPUS") ON_SERVER=(taskset -c "$SERVER_CPUS")
start_backends 1 "${ON_SERVER[@]}" "$TARGET_DIR/release/examples/bench_backend"
BACKEND="http://127.0.0.1:${BACKEND_PORTS[0]}"

declare -A PORT=() PIDS=()
write_weir() { # name extra-route-line extra-top-level
    pick_port; PORT[$1]=$REPLY
    cat >"$T/$1.toml" <<TOML
$(weir_head "${PORT[$1]}")
$3

$(weir_upstream "keepalive = $((CONNS * 2))")
$2
TOML
    serve "$1" "${PORT[$1]}" "${ON_SERVER[@]}" "$WEIR" run -c "$T/$1.toml"
    PIDS[$1]=$REPLY
}
write_weir weir '' ''
write_weir weir-c 'cache = { ttl = "1s", stale_while_revalidate = "10s" }' '[cache]
memory = "64MiB"'

pick_port; PORT[nginx-c]=$REPLY
mkdir -p "$T/nginx/cache"
NGINX_HTTP=("proxy_cache_path $T/nginx/cache levels=1:2 keys_zone=hot:10m max_size=64m inactive=60s use_temp_path=off;")
nginx_conf 1 4096 $((CONNS * 2)) "${PORT[nginx-c]}" "proxy_cache hot;" "proxy_cache_valid 200 1s;" \
    "proxy_cache_lock on;" "proxy_cache_use_stale updating;" "proxy_cache_background_update on;" \
    "proxy_cache_bypass \$http_x_no_cache;" "proxy_no_cache \$http_x_no_cache;" \
    "add_header X-Cache \$upstream_cache_status;"
serve nginx-c "${PORT[nginx-c]}" "${ON_SERVER[@]}" "${NGINX_CMD[@]}"
PIDS[nginx-c]="$(nginx_pids "$REPLY" 1)"
PORT[nginx]=${PORT[nginx-c]} PIDS[nginx]=${PIDS[nginx-c]}
declare -A HDR=([nginx]="X-No-Cache: 1")

URL_PATH=/api/trending
# check: the cached targets answer the second request from their cache.
for t in weir-c nginx-c; do
    url="http://127.0.0.1:${PORT[$t]}$URL_PATH"
    curl -sf -o /dev/null "$url" || die "$t: no answer"
    got="$(curl -sf -D - -o /dev/null "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-cache" { print $2 }')"
    [[ $got == HIT ]] || die "$t: second request was not a hit (X-Cache: ${got:-none})"
done

backend_count() { curl -sf "$BACKEND/backend-requests"; }
run() { # target -> "requests/s µs-per-request backend-requests-per-second"
    local t0 t1 b0 b1 out rps reqs url="http://127.0.0.1:${PORT[$1]}$URL_PATH"
    local -a hdr=()
    [[ -n ${HDR[$1]:-} ]] && hdr=(-H "${HDR[$1]}")
    "${ON_CLIENT[@]}" wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "$url" >/dev/null
    # shellcheck disable=SC2086 # PIDS holds nginx's master and worker
    read -r t0 _ <<<"$(cpu_ticks ${PIDS[$1]})"
    b0=$(backend_count)
    out=$("${ON_CLIENT[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "$url")
    b1=$(backend_count)
    # shellcheck disable=SC2086
    read -r t1 _ <<<"$(cpu_ticks ${PIDS[$1]})"
    grep -q "Non-2xx" <<<"$out" && die "$1: non-2xx answers: $out"
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v r="$rps" -v n="$reqs" -v p=$((t1 - t0)) -v t="$CLK_TCK" -v b=$((b1 - b0)) -v d="$DURATION" \
        'BEGIN { printf "%s %.3f %.1f", r, p / t / n * 1e6, b / d }'
}

echo "## weir's cache against nginx's proxy_cache, one hot URL cached for 1 s"
header
targets=(weir weir-c nginx nginx-c)
declare -A RPS=() US=() BACK=()
declare -a QR=() QU=()
for r in $(seq "$ROUNDS"); do
    line="round $r:"
    for ((i = 0; i < ${#targets[@]}; i++)); do
        t=${targets[$(((i + r) % ${#targets[@]}))]}
        read -r rps us back <<<"$(run "$t")"
        RPS[$t]+="$rps " US[$t]+="$us " BACK[$t]+="$back "
        declare "last_rps_${t//-/_}=$rps" "last_us_${t//-/_}=$us"
        line+=" $t $rps req/s ${us} µs/req backend ${back}/s;"
    done
    QR+=("$(awk -v x="$last_rps_weir_c" -v y="$last_rps_nginx_c" 'BEGIN {printf "%.4f", x / y}')")
    QU+=("$(awk -v x="$last_us_weir_c" -v y="$last_us_nginx_c" 'BEGIN {printf "%.4f", x / y}')")
    echo "$line"
done

fmt() { tr ' ' '\n' <<<"$1" | grep . | stats_fmt "$2"; }
echo
echo "| wrk -t1 -c$CONNS, ${ROUNDS}x${DURATION}s, 1 thread/worker | req/s | proxy CPU µs/request | backend requests/s |"
echo "|---|---|---|---|"
for t in "${targets[@]}"; do
    echo "| $t | $(fmt "${RPS[$t]}" '%.0f (%.0f–%.0f)') | $(fmt "${US[$t]}" '%.2f (%.2f–%.2f)') | $(fmt "${BACK[$t]}" '%.1f (%.1f–%.1f)') |"
done
echo
echo "weir-c ÷ nginx-c, same round: req/s $(printf '%s\n' "${QR[@]}" | stats_fmt '%.3f (%.3f–%.3f)'), proxy CPU per request $(printf '%s\n' "${QU[@]}" | stats_fmt '%.3f (%.3f–%.3f)')"
