#!/usr/bin/env bash
# Bulk transfer: a 1 GB download and a 1 GB upload through weir against the same
# transfer straight to the backend (and through nginx, for reference); see benches/README.md.
#
#   bash benches/bulk.sh [--rounds 3] [--size-mb 1024] [--no-nginx] [--no-pin]
#                        [--no-install] [--no-build] [--keep]
#
#   --rounds N     rounds; each runs every target once, download then upload (default 3)
#   --size-mb N    transfer size in MiB (default 1024)
#   --no-nginx     skip nginx
#   --no-pin       do not pin (by default curl on cpu1, backend and proxy on cpu0)
#   --no-install   do not apt-get missing tools
#   --no-build     use the existing target/release binaries
#   --keep         keep the temp dir
#
# The backend is examples/bulk_backend (GET /bytes/N streams N zero bytes in
# 64 KiB frames; PUT/POST counts and discards the body). The client is curl:
# `-o /dev/null` for downloads, `-T FILE` from a sparse file (Content-Length,
# no disk reads) for uploads. Throughput is curl's speed_download/speed_upload.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=3 SIZE_MB=1024 NGINX=1 PIN=1
parse_options "--rounds=ROUNDS --size-mb=SIZE_MB --no-nginx=NGINX:0 --no-pin=PIN:0" "$@"
need_positive "$ROUNDS" "$SIZE_MB"

tools=(taskset curl)
((NGINX)) && tools+=(nginx)
need_tools "${tools[@]}"
build_release bulk_backend
BACKEND="$TARGET_DIR/release/examples/bulk_backend"
SIZE=$((SIZE_MB * 1024 * 1024))
# Command prefixes, not functions: a backgrounded function runs in a subshell, and
# its $! would be that subshell rather than the server the cleanup must stop.
ON_CLIENT=() ON_SERVER=()
if ((PIN)); then ON_CLIENT=(taskset -c "$CLIENT_CPUS") ON_SERVER=(taskset -c "$SERVER_CPUS"); fi

start_backends 1 "${ON_SERVER[@]}" "$BACKEND"

declare -A PORT=([direct]=${BACKEND_PORTS[0]})
pick_port; PORT[weir]=$REPLY
cat >"$T/weir.toml" <<TOML
$(weir_head "${PORT[weir]}")

$(weir_upstream 'response_timeout = "5m"')
TOML
serve weir "${PORT[weir]}" "${ON_SERVER[@]}" "$WEIR" run -c "$T/weir.toml"
targets=(direct weir)
if ((NGINX)); then
    pick_port; PORT[nginx]=$REPLY
    # proxy_buffering off: stream, as weir does (no temp files)
    nginx_conf 1 1024 8 "${PORT[nginx]}" "client_max_body_size 0;" "proxy_buffering off;" \
        "proxy_request_buffering off;" "proxy_read_timeout 300s;"
    serve nginx "${PORT[nginx]}" "${ON_SERVER[@]}" "${NGINX_CMD[@]}"
    targets+=(nginx)
fi

truncate -s "$SIZE" "$T/upload.bin"
RESULTS="$T/results.tsv"; : >"$RESULTS"
# transfer NAME ROUND KIND: one curl run; appends "kind name round MB/s"
transfer() {
    local name=$1 round=$2 kind=$3 url="http://127.0.0.1:${PORT[$1]}" out speed code
    if [[ $kind == download ]]; then
        out="$("${ON_CLIENT[@]}" curl -sS -o /dev/null --max-time 300 -w '%{http_code} %{size_download} %{speed_download}' \
            "$url/bytes/$SIZE")" || die "$name download failed: $out"
    else
        out="$("${ON_CLIENT[@]}" curl -sS -o "$T/upload.answer" --max-time 300 -T "$T/upload.bin" \
            -w '%{http_code} %{size_upload} %{speed_upload}' "$url/upload")" || die "$name upload failed: $out"
        [[ "$(tr -d '\n' <"$T/upload.answer")" == "$SIZE" ]] || die "$name upload: backend counted $(cat "$T/upload.answer")"
    fi
    read -r code bytes speed <<<"$out"
    [[ "$code" == 200 && "$bytes" == "$SIZE" ]] || die "$name $kind: status $code, $bytes bytes"
    speed="$(awk -v s="$speed" 'BEGIN { printf "%.1f", s / 1048576 }')"
    printf '%s\t%s\t%s\t%s\n' "$kind" "$name" "$round" "$speed" >>"$RESULTS"
    printf '  round %d %-8s %-8s %8.1f MiB/s\n' "$round" "$kind" "$name" "$speed" >&2
}

echo "## weir bulk transfer"
header
pin_note="curl on cpu$CLIENT_CPUS; backend and proxy (1 thread/worker) on cpu$SERVER_CPUS"
((PIN)) || pin_note="not pinned"
echo "$SIZE_MB MiB per transfer, $ROUNDS rounds interleaved ($pin_note)"
for round in $(seq "$ROUNDS"); do
    for kind in download upload; do
        for name in "${targets[@]}"; do transfer "$name" "$round" "$kind"; done
    done
done
echo
echo "| transfer | target | MiB/s median (min-max) | ÷ direct, per-round median (min-max) |"
echo "|---|---|---|---|"
for kind in download upload; do
    for name in "${targets[@]}"; do
        s="$(awk -F'\t' -v k="$kind" -v n="$name" '$1 == k && $2 == n { print $4 }' "$RESULTS" | stats |
            awk '{ printf "%.0f (%.0f-%.0f)", $1, $2, $3 }')"
        r="-"
        if [[ $name != direct ]]; then
            r="$(awk -F'\t' -v k="$kind" -v n="$name" '$1 == k && ($2 == n || $2 == "direct") { x[$2, $3] = $4; r[$3] = 1 }
                END { for (i in r) if (x["direct", i] > 0) print x[n, i] / x["direct", i] }' "$RESULTS" | stats |
                awk '{ printf "%.2f (%.2f-%.2f)", $1, $2, $3 }')"
        fi
        echo "| $kind | $name | $s | $r |"
    done
done
echo
echo "target: weir ÷ direct ≥ 0.8 for both"
