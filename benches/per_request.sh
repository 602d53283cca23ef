#!/usr/bin/env bash
# What one proxied request costs weir in user space, counted rather than timed, so it
# repeats on a noisy shared machine: instructions per request by crate, and allocations
# per request (both from callgrind).
#
#   bash benches/per_request.sh [--seconds 10] [--conns 64] [--weir-only] [--cache-sim] [--no-install] [--no-build] [--keep]
#
#   --weir-only  skip the same count for nginx and for hyper's server alone (bench_backend)
#   --cache-sim  also simulate the caches (callgrind --cache-sim=yes, the host's cache sizes)
#                and count locked (atomic) instructions (--collect-bus=yes), and print
#                each server's instruction and data cache misses and atomics per request
#
# weir (one thread) runs under callgrind in front of one bench_backend while wrk -t1
# -cCONNS sends requests for SECONDS; the counts are divided by the requests wrk
# completed. Start-up and shutdown are included: with ten thousand requests and more
# they are under a percent. Allocations are the calls to jemalloc's malloc, mallocx,
# calloc, realloc and rallocx (weir's allocator; heaptrack does not see it).
# Instructions are attributed to the crate of the function that executes them (its
# source path, from the line tables of the release build): hyper, h2, tokio, weir, std
# (core, alloc and std), jemalloc, libc's memcpy, and the rest (crates under 0.5% among them).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SECONDS_PER_RUN=10 CONNS=64 OTHERS=1 CACHE_SIM=0
parse_options "--seconds=SECONDS_PER_RUN --conns=CONNS --weir-only=OTHERS:0 --cache-sim=CACHE_SIM:1" "$@"
((CACHE_SIM)) && CALLGRIND_OPTS=(--cache-sim=yes --collect-bus=yes)
need_positive "$SECONDS_PER_RUN" "$CONNS"
tools=(wrk valgrind)
((OTHERS)) && tools+=(nginx)
need_tools "${tools[@]}"
build_release bench_backend
start_backends 1 "$TARGET_DIR/release/examples/bench_backend"

pick_port; PORT=$REPLY
cat >"$T/weir.toml" <<TOML
$(weir_head "$PORT")
$(weir_upstream "keepalive = $CONNS")
TOML

# by_crate NAME REQS: the table of instructions per request by crate, from $T/NAME.cg.
by_crate() {
    local name=$1 reqs=$2 total
    total=$(awk '/^summary:/ {print $2}' "$T/$name.cg")
    callgrind_annotate --show=Ir --inclusive=no --threshold=100 --auto=no "$T/$name.cg" 2>/dev/null >"$T/$name.annotate.txt"
    echo
    echo "callgrind: $reqs requests; $(awk -v t="$total" -v n="$reqs" 'BEGIN {printf "%.0f", t / n}') instructions per request"
    echo
    echo "| crate | instructions per request | share |"
    echo "|---|---|---|"
    # Lines look like "1,234,567 (12.3%)  /path/to/file.rs:function [object]".
    awk -v n="$reqs" -v total="$total" -v root="$ROOT/" '
        /^ *[0-9,]+ \( *[0-9.]+%\) / && !/PROGRAM TOTALS/ {
            ir = $1; gsub(",", "", ir)
            f = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", f)
            crate = "other"
            if (f ~ /(^|\/)vendor\/hyper\//) crate = "hyper"
            else if (match(f, /\/registry\/src\/[^\/]+\/[^\/]+\//)) {
                crate = substr(f, RSTART, RLENGTH - 1); sub(/.*\//, "", crate); sub(/-[0-9]+\.[0-9]+.*/, "", crate)
            }
            else if (f ~ /(memmove|memcpy|memset)/) crate = "libc memcpy/memset"
            else if (f ~ /(^|\/)(core|alloc|std)\/src\//) crate = "std"
            else if (f ~ /jemalloc/) crate = "jemalloc"
            else if (f ~ /^(src|examples)\// || index(f, root "src/") == 1 || index(f, root "examples/") == 1) crate = "weir"
            else if (f ~ /libc\.so/) crate = "libc"
            sum[crate] += ir
        }
        END {
            for (c in sum) if (c != "other" && sum[c] < total / 200) { sum["other"] += sum[c]; delete sum[c] }
            for (c in sum) printf "%s\t%.0f\t%.1f\n", c, sum[c] / n, 100 * sum[c] / total
        }' "$T/$name.annotate.txt" | sort -t$'\t' -k2 -nr | awk -F'\t' '{ printf "| %s | %s | %s%% |\n", $1, $2, $3 }'
}

echo "## what one request costs weir in user space"
header
callgrind_weir weir "$PORT"
cg_reqs=$REQS weir_instr=$INSTR
by_crate weir "$cg_reqs"

# Calls to the allocator, from the call counts of the callgrind file. Function names
# are compressed there: "(id) name" the first time, "(id)" after, shared by fn= and cfn=.
allocs=$(awk '
    /^c?fn=/ {
        callee = ($0 ~ /^cfn=/); s = $0; sub(/^c?fn=/, "", s)
        if (match(s, /^\([0-9]+\)/)) {
            id = substr(s, RSTART, RLENGTH); rest = substr(s, RLENGTH + 2)
            if (rest != "") name[id] = rest
            s = name[id]
        }
        if (callee) cur = s
        next
    }
    /^calls=/ {
        split(substr($0, 7), a, " ")
        if (cur ~ /^_rjem_(malloc|mallocx|calloc|realloc|rallocx)$/) n += a[1]
    }
    END { print n + 0 }' "$T/weir.cg")
echo
echo "allocations: $(awk -v c="$allocs" -v n="$cg_reqs" 'BEGIN {printf "%.2f", c / n}') per request ($allocs in all)"

# For scale, the same count for nginx (one worker, in the foreground, the proxy setup of
# compare.sh), and for hyper's HTTP/1.1 server alone answering wrk itself (bench_backend:
# current-thread tokio, glibc's malloc, a fixed 94-byte body, no upstream): the floor under
# any proxy that serves its clients with hyper, which then adds its own upstream exchange.
if ((OTHERS)); then
    echo
    echo "## the same count for nginx, and for hyper's server alone"
    pick_port; port=$REPLY
    nginx_conf 1 $((CONNS * 2 + 1024)) "$CONNS" "$port"   # clients and upstream connections
    sed -i '1i master_process off;' "$T/nginx.conf"
    callgrind_serve nginx "$port" "${NGINX_CMD[@]}"
    nginx_instr=$INSTR nginx_reqs=$REQS
    pick_port; port=$REPLY
    callgrind_serve hyper "$port" "$TARGET_DIR/release/examples/bench_backend" "$port"
    echo
    echo "| server | requests | instructions per request | ÷ weir |"
    echo "|---|---|---|---|"
    awk -v wi="$weir_instr" -v wr="$cg_reqs" -v ni="$nginx_instr" -v nr="$nginx_reqs" \
        -v hi="$INSTR" -v hr="$REQS" 'BEGIN {
        w = wi / wr
        printf "| weir | %d | %.0f | 1.00 |\n", wr, w
        printf "| nginx | %d | %.0f | %.2f |\n", nr, ni / nr, ni / nr / w
        printf "| hyper server alone (no upstream) | %d | %.0f | %.2f |\n", hr, hi / hr, hi / hr / w
    }'
    by_crate hyper "$REQS"
fi

# misses NAME REQS: a table row of NAME's simulated cache misses per request: first-level
# instruction and data (reads and writes), and last-level (both); and its locked instructions.
misses() {
    awk -v name="$1" -v n="$2" '
        /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
        /^summary:/ {
            for (i = 2; i <= NF; i++) v[i - 1] = $i
            printf "| %s | %.0f | %.1f | %.1f | %.2f | %.1f |\n", name, v[col["Ir"]] / n,
                v[col["I1mr"]] / n, (v[col["D1mr"]] + v[col["D1mw"]]) / n,
                (v[col["ILmr"]] + v[col["DLmr"]] + v[col["DLmw"]]) / n, v[col["Ge"]] / n
        }' "$T/$1.cg"
}
if ((CACHE_SIM)); then
    echo
    echo "## simulated cache misses and locked instructions per request (callgrind --cache-sim=yes --collect-bus=yes)"
    echo
    echo "| server | instructions | L1 instruction misses | L1 data misses | last-level misses | locked instructions |"
    echo "|---|---|---|---|---|---|"
    misses weir "$cg_reqs"
    if ((OTHERS)); then
        misses nginx "$nginx_reqs"
        misses hyper "$REQS"
    fi
fi
