#!/usr/bin/env bash
# Instructions per request that the admin listener and a file access log add,
# counted by callgrind: repeatable on a noisy shared machine, where requests/s
# (benches/overhead.sh) swings by tens of percent between runs.
#
#   bash benches/overhead_cg.sh [--seconds 10] [--conns 16] [--no-install] [--no-build] [--keep]
#
# Runs weir (one thread) under valgrind twice against one bench backend:
# A = admin off, access log off; B = admin on, access log to a file. Prints
# instructions per request for each and B/A.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SECONDS_PER_RUN=10 CONNS=16
parse_options "--seconds=SECONDS_PER_RUN --conns=CONNS" "$@"
need_positive "$SECONDS_PER_RUN" "$CONNS"
need_tools wrk valgrind
build_release bench_backend

start_backends 1 "$TARGET_DIR/release/examples/bench_backend"

# Sets INSTR and REQS for one variant: NAME, its access log (as TOML), and whether it has
# an admin listener.
measure() {
    local name=$1 access=$2 admin=$3 port
    pick_port; port=$REPLY
    {
        weir_head "$port" "$access"
        if ((admin)); then
            pick_port
            printf '[admin]\nlisten = "127.0.0.1:%s"\n' "$REPLY"
        fi
        weir_upstream 'keepalive = 64'
    } >"$T/$name.toml"
    callgrind_weir "$name" "$port"
}

echo "## weir observability overhead in instructions (callgrind)"
header
measure A '"off"' 0
a_instr=$INSTR a_req=$REQS
measure B "\"$T/access.log\"" 1
b_instr=$INSTR b_req=$REQS
awk -v ai="$a_instr" -v ar="$a_req" -v bi="$b_instr" -v br="$b_req" 'BEGIN {
    a = ai / ar; b = bi / br
    printf "| variant | requests | instructions per request |\n|---|---|---|\n"
    printf "| A: admin off, access log off | %d | %.0f |\n", ar, a
    printf "| B: admin on, access log to a file | %d | %.0f |\n", br, b
    printf "\nB/A instructions per request = %.3f (user space only: callgrind sees no kernel time,\n", b / a
    printf "which is most of the CPU of a proxy; overhead.sh gives the requests/s and equal-CPU ratios)\n"
}'
echo "access log lines written in B: $(wc -l <"$T/access.log")"
