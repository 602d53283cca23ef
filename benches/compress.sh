#!/usr/bin/env bash
# Compression cost: proxy CPU per MiB of response body, weir with `compress = true`
# against nginx with `gzip on` at the same gzip level, both in front of one backend
# serving the same JSON payload; see benches/README.md.
#
#   bash benches/compress.sh [--rounds 5] [--duration 5] [--conns 8] [--size-kb 128]
#                            [--no-install] [--no-build] [--keep]
#
#   --rounds N     rounds; each runs every target once, in turn (default 5)
#   --duration S   seconds per measured wrk run, after a 1 s warm-up (default 5)
#   --conns N      wrk connections (default 8)
#   --size-kb N    payload size in KiB (default 128): an API's large JSON answer
#   --no-install   do not apt-get missing tools
#   --no-build     use the existing target/release binaries
#   --keep         keep the temp dir
#
# Targets per round: weir and nginx with no Accept-Encoding (plain proxying), weir and
# nginx with `Accept-Encoding: gzip` (both at level 5, weir's fixed gzip level), and weir
# with br and with zstd (nginx has neither built in). wrk -t1 runs alone on cpu1; the
# backend (examples/payload_backend) and the one-thread proxy share cpu0. For each target:
# requests/s, proxy CPU per MiB of (uncompressed) body, the marginal cost over plain
# proxying of the same proxy in the same round, and that marginal cost as MiB/s per core.
# The ratio weir ÷ nginx (gzip, CPU per MiB) is taken per round; medians and min–max.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=5 DURATION=5 CONNS=8 SIZE_KB=128
parse_options "--rounds=ROUNDS --duration=DURATION --conns=CONNS --size-kb=SIZE_KB" "$@"
need_positive "$ROUNDS" "$DURATION" "$CONNS" "$SIZE_KB"
LEVEL=5   # weir's gzip level (src/compress.rs GZIP_LEVEL); nginx is set to match

need_tools wrk nginx taskset curl
build_release payload_backend
BACKEND="$TARGET_DIR/release/examples/payload_backend"
ON_CLIENT=(taskset -c "$CLIENT_CPUS") ON_SERVER=(taskset -c "$SERVER_CPUS")

# The payload: user records as an API sends them, about SIZE_KB KiB.
awk -v size=$((SIZE_KB * 1024)) 'BEGIN {
    s = "["; i = 0
    while (length(s) < size) {
        s = s sprintf("{\"id\":%d,\"name\":\"user %d\",\"email\":\"user%d@example.com\",\"active\":%s,\"created\":\"2026-11-%02dT10:%02d:00Z\",\"score\":%d,\"tags\":[\"t%d\",\"t%d\"]},", i, i, i, (i % 3 == 0) ? "true" : "false", 1 + i % 28, i % 60, (i * 7919) % 1000, i % 17, i % 5)
        i++
    }
    printf "%s{}]", s
}' >"$T/payload.json"
SIZE=$(stat -c %s "$T/payload.json")
start_backends 1 "${ON_SERVER[@]}" "$BACKEND" "$T/payload.json" application/json

pick_port; WEIR_PORT=$REPLY
cat >"$T/weir.toml" <<TOML
$(weir_head "$WEIR_PORT")

$(weir_upstream "keepalive = $((CONNS * 2))")
compress = true
TOML
serve weir "$WEIR_PORT" "${ON_SERVER[@]}" "$WEIR" run -c "$T/weir.toml"
WEIR_PIDS="$REPLY"

pick_port; NGINX_PORT=$REPLY
nginx_conf 1 1024 $((CONNS * 2)) "$NGINX_PORT" "gzip on;" "gzip_comp_level $LEVEL;" \
    "gzip_types application/json;" "gzip_proxied any;" "gzip_min_length 1024;" "gzip_vary on;"
serve nginx "$NGINX_PORT" "${ON_SERVER[@]}" "${NGINX_CMD[@]}"
NGINX_PIDS="$(nginx_pids "$REPLY" 1)"

# Each target: "proxy accept-encoding".
targets=("weir -" "weir gzip" "weir br" "weir zstd" "nginx -" "nginx gzip")

# check: each target answers with the coding asked for, and the sizes it sends.
for t in "${targets[@]}"; do
    read -r proxy coding <<<"$t"
    port=$WEIR_PORT; [[ $proxy == nginx ]] && port=$NGINX_PORT
    hdr=(); [[ $coding != - ]] && hdr=(-H "Accept-Encoding: $coding")
    got="$(curl -s -o "$T/check.out" -D - "${hdr[@]}" "http://127.0.0.1:$port/" |
        awk -F': ' 'tolower($1) == "content-encoding" { sub(/\r$/, "", $2); print $2 }')"
    [[ "${got:--}" == "$coding" ]] || die "$proxy with $coding answered Content-Encoding: ${got:-none}"
    echo "$proxy $coding: $(stat -c %s "$T/check.out") bytes for $SIZE" >>"$T/sizes"
done

# run TARGET ROUND: one warm-up and one measured wrk run; appends to results.tsv
# "round proxy coding requests cpu_ticks".
run() {
    local proxy coding port hdr before after out requests
    local -a pids
    read -r proxy coding <<<"$1"
    if [[ $proxy == weir ]]; then port=$WEIR_PORT; read -ra pids <<<"$WEIR_PIDS"
    else port=$NGINX_PORT; read -ra pids <<<"$NGINX_PIDS"; fi
    hdr=(); [[ $coding != - ]] && hdr=(-H "Accept-Encoding: $coding")
    "${ON_CLIENT[@]}" wrk -t1 -c"$CONNS" -d1s "${hdr[@]}" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
    read -r before _ <<<"$(cpu_ticks "${pids[@]}")"
    out="$("${ON_CLIENT[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "http://127.0.0.1:$port/" 2>&1)" || true
    read -r after _ <<<"$(cpu_ticks "${pids[@]}")"
    grep -q "Non-2xx\|Socket errors" <<<"$out" && die "$proxy $coding: errors in round $2: $out"
    requests="$(awk '/requests in/ { print $1 }' <<<"$out")"
    [[ -n "$requests" ]] || die "$proxy $coding: no wrk result: $out"
    printf '%s\t%s\t%s\t%s\t%s\n' "$2" "$proxy" "$coding" "$requests" $((after - before)) >>"$T/results.tsv"
}

header
echo "payload: $SIZE bytes of JSON; wrk -t1 -c$CONNS -d${DURATION}s on cpu$CLIENT_CPUS; backend and one-thread proxy on cpu$SERVER_CPUS; gzip level $LEVEL"
cat "$T/sizes"
: >"$T/results.tsv"
for ((round = 1; round <= ROUNDS; round++)); do
    for t in "${targets[@]}"; do run "$t" "$round"; done
done

# Per round: CPU ms per MiB of body for each target, the marginal cost over the same
# proxy's plain run, and weir ÷ nginx for gzip.
awk -F'\t' -v size="$SIZE" -v tck="$CLK_TCK" -v dur="$DURATION" '
    { k = $2 " " $3; mib = $4 * size / 1048576; ms[$1, k] = $5 / tck * 1000 / mib; rps[$1, k] = $4 / dur
      keys[k] = 1; rounds[$1] = 1 }
    END {
        for (r in rounds) for (k in keys) {
            split(k, p, " "); base = ms[r, p[1] " -"]
            printf "%s\trps\t%f\n", k, rps[r, k]
            printf "%s\tms_per_mib\t%f\n", k, ms[r, k]
            if (p[2] != "-") {
                printf "%s\tmarginal_ms_per_mib\t%f\n", k, ms[r, k] - base
                if (ms[r, k] - base > 0) printf "%s\tmarginal_mib_per_s\t%f\n", k, 1000 / (ms[r, k] - base)
            }
        }
        for (r in rounds) printf "weir/nginx gzip\tms_per_mib ratio\t%f\n", ms[r, "weir gzip"] / ms[r, "nginx gzip"]
        for (r in rounds) if (ms[r, "nginx gzip"] - ms[r, "nginx -"] > 0) printf "weir/nginx gzip\tmarginal ratio\t%f\n", (ms[r, "weir gzip"] - ms[r, "weir -"]) / (ms[r, "nginx gzip"] - ms[r, "nginx -"])
    }' "$T/results.tsv" >"$T/derived.tsv"

echo
echo "| target | requests/s | proxy CPU ms per MiB | marginal ms per MiB (over plain) | marginal MiB/s per core |"
echo "|---|---|---|---|---|"
for t in "${targets[@]}"; do
    cell() { awk -F'\t' -v k="$t" -v m="$1" '$1 == k && $2 == m { print $3 }' "$T/derived.tsv" | stats_fmt "$2"; }
    rps="$(cell rps '%.0f (%.0f–%.0f)')"
    ms="$(cell ms_per_mib '%.2f (%.2f–%.2f)')"
    if [[ $t == *" -" ]]; then marg="–" mibs="–"; else
        marg="$(cell marginal_ms_per_mib '%.2f (%.2f–%.2f)')"
        mibs="$(cell marginal_mib_per_s '%.0f (%.0f–%.0f)')"
    fi
    echo "| $t | $rps | $ms | $marg | $mibs |"
done
echo
for m in "ms_per_mib ratio" "marginal ratio"; do
    echo "weir ÷ nginx, gzip, $m: $(awk -F'\t' -v m="$m" '$1 == "weir/nginx gzip" && $2 == m { print $3 }' "$T/derived.tsv" | stats_fmt '%.2f (%.2f–%.2f)') (median, min–max over $ROUNDS rounds)"
done
