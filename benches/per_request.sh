#!/usr/bin/env bash
# What one proxied request costs weir in user space, counted rather than timed, so it
# repeats on a noisy shared machine: instructions per request by crate, and allocations
# per request (both from callgrind).
#
#   bash benches/per_request.sh [--seconds 10] [--conns 64] [--no-install] [--no-build] [--keep]
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
SECONDS_PER_RUN=10 CONNS=64
parse_options "--seconds=SECONDS_PER_RUN --conns=CONNS" "$@"
need_positive "$SECONDS_PER_RUN" "$CONNS"
need_tools wrk valgrind
build_release bench_backend
start_backends 1 "$TARGET_DIR/release/examples/bench_backend"

pick_port; PORT=$REPLY
cat >"$T/weir.toml" <<TOML
$(weir_head "$PORT")
$(weir_upstream "keepalive = $CONNS")
TOML

echo "## what one request costs weir in user space"
header
callgrind_weir weir "$PORT"
cg_reqs=$REQS total=$INSTR
callgrind_annotate --inclusive=no --threshold=100 --auto=no "$T/weir.cg" 2>/dev/null >"$T/annotate.txt"
echo
echo "callgrind: $cg_reqs requests; $(awk -v t="$total" -v n="$cg_reqs" 'BEGIN {printf "%.0f", t / n}') instructions per request"
echo
echo "| crate | instructions per request | share |"
echo "|---|---|---|"
# Lines look like "1,234,567 (12.3%)  /path/to/file.rs:function [object]".
awk -v n="$cg_reqs" -v total="$total" '
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
        else if (f ~ /^src\//) crate = "weir"
        else if (f ~ /libc\.so/) crate = "libc"
        sum[crate] += ir
    }
    END {
        for (c in sum) if (c != "other" && sum[c] < total / 200) { sum["other"] += sum[c]; delete sum[c] }
        for (c in sum) printf "%s\t%.0f\t%.1f\n", c, sum[c] / n, 100 * sum[c] / total
    }' "$T/annotate.txt" | sort -t$'\t' -k2 -nr | awk -F'\t' '{ printf "| %s | %s | %s%% |\n", $1, $2, $3 }'

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
