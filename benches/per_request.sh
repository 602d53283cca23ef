#!/usr/bin/env bash
# What one proxied request costs weir in user space, counted rather than timed, so it
# repeats on a noisy shared machine: instructions per request by crate (callgrind) and
# allocations per request (heaptrack).
#
#   bash benches/per_request.sh [--seconds 10] [--conns 64] [--no-install] [--no-build] [--keep]
#
# weir (one thread) runs in front of one bench_backend twice, once under callgrind and
# once under heaptrack, each while wrk -t1 -cCONNS sends requests for SECONDS; the counts
# are divided by the requests wrk completed. Start-up and shutdown are included: with
# tens of thousands of requests they are a fraction of a percent.
# Instructions are attributed to the crate of the function that executes them (its
# source path, from the line tables of the release build): hyper, h2, tokio, weir, std
# (core, alloc and std), jemalloc, and the rest.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SECONDS_PER_RUN=10 CONNS=64
parse_options "--seconds=SECONDS_PER_RUN --conns=CONNS" "$@"
need_positive "$SECONDS_PER_RUN" "$CONNS"
need_tools wrk valgrind heaptrack
build_release bench_backend
start_backends 1 "$TARGET_DIR/release/examples/bench_backend"

pick_port; PORT=$REPLY
cat >"$T/weir.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
threads = 1
[log]
level = "warn"
access = "off"
$(weir_upstream "keepalive = $CONNS")
TOML

# run NAME CMD...: weir under CMD while wrk runs; sets REQS.
run() {
    local name=$1 pid
    shift
    serve "$name" "$PORT" "$@" "$WEIR" run -c "$T/weir.toml"
    pid=$REPLY
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:$PORT/" >"$T/$name.wrk"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    grep -q "Non-2xx" "$T/$name.wrk" && die "$name: non-2xx answers: $(cat "$T/$name.wrk")"
    REQS=$(awk '/requests in/ {print $1}' "$T/$name.wrk")
}

echo "## what one request costs weir in user space"
header
run callgrind valgrind --tool=callgrind --callgrind-out-file="$T/weir.cg"
cg_reqs=$REQS
callgrind_annotate --inclusive=no --threshold=100 "$T/weir.cg" 2>/dev/null >"$T/annotate.txt"
total=$(awk '/^summary:/ {print $2}' "$T/weir.cg")
echo
echo "callgrind: $cg_reqs requests; $(awk -v t="$total" -v n="$cg_reqs" 'BEGIN {printf "%.0f", t / n}') instructions per request"
echo
echo "| crate | instructions per request | share |"
echo "|---|---|---|"
# Lines look like "1,234,567 (12.3%)  /path/to/file.rs:function [object]".
awk -v n="$cg_reqs" -v total="$total" '
    $2 ~ /^\(/ && $3 ~ /:/ {
        ir = $1; gsub(",", "", ir)
        f = $3; crate = "other"
        if (f ~ /(^|\/)vendor\/hyper\//) crate = "hyper"
        else if (match(f, /\/registry\/src\/[^\/]+\/[^\/]+\//)) {
            crate = substr(f, RSTART, RLENGTH - 1); sub(/.*\//, "", crate); sub(/-[0-9]+\.[0-9]+.*/, "", crate)
        }
        else if (f ~ /\/(core|alloc|std)\/src\//) crate = "std"
        else if (f ~ /jemalloc/) crate = "jemalloc"
        else if (f ~ /^src\/|^\.\/src\/|\/src\/(proxy|pass|forward|exchange|headers|server|upstream|routing)/) crate = "weir"
        sum[crate] += ir
    }
    END { for (c in sum) printf "%s %.0f %.1f\n", c, sum[c] / n, 100 * sum[c] / total }' "$T/annotate.txt" | sort -k2 -nr | awk '{ printf "| %s | %s | %s%% |\n", $1, $2, $3 }'

run heaptrack heaptrack -o "$T/weir.heaptrack"
ht_reqs=$REQS
calls=$(heaptrack_print -f "$T"/weir.heaptrack.* 2>/dev/null | awk -F': ' '/^calls to allocation functions/ { split($2, a, " "); print a[1] }')
echo
echo "heaptrack: $ht_reqs requests; $(awk -v c="$calls" -v n="$ht_reqs" 'BEGIN {printf "%.2f", c / n}') allocations per request ($calls calls to allocation functions)"
