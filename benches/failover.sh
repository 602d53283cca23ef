#!/usr/bin/env bash
# Failover under load: wrk for 10 s through weir in front of three backends;
# one backend is killed after 3 s and restarted after 6 s. Prints requests/s and
# the count of non-2xx responses and socket errors, which must both be 0 (the exit
# status says so too).
#
#   bash benches/failover.sh [--duration 10] [--kill-at 3] [--restart-at 6] [--conns 64]
#                            [--no-install] [--no-build] [--keep]
#
# Traffic stays on 127.0.0.1 (free ports below the ephemeral range); nothing is pinned.
# Everything it starts is stopped on exit (benches/lib.sh).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DURATION=10 KILL_AT=3 RESTART_AT=6 CONNS=64
parse_options "--duration=DURATION --kill-at=KILL_AT --restart-at=RESTART_AT --conns=CONNS" "$@"
need_positive "$DURATION" "$KILL_AT" "$RESTART_AT" "$CONNS"
((KILL_AT < RESTART_AT && RESTART_AT < DURATION)) || die "want --kill-at < --restart-at < --duration"

need_tools wrk
build_release bench_backend
BACKEND="$TARGET_DIR/release/examples/bench_backend"

start_backends 3 "$BACKEND"
VICTIM_PORT=${BACKEND_PORTS[1]}
pick_port; PROXY=$REPLY
cat >"$T/weir.toml" <<TOML
[server]
listen = ["127.0.0.1:$PROXY"]
[log]
level = "info"
access = "off"
$(weir_upstream 'keepalive = 256' 'fail_timeout = "2s"' '[upstream.health_check]' 'path = "/"' 'interval = "500ms"')
TOML
serve weir "$PROXY" "$WEIR" run -c "$T/weir.toml"

wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PROXY/" >"$T/wrk.txt" 2>&1 &
WRK_PID=$!; ALL_PIDS+=("$WRK_PID")
sleep "$KILL_AT"
kill "${BACKEND_PIDS[1]}"
echo "t=${KILL_AT}s: killed the backend on 127.0.0.1:$VICTIM_PORT" >&2
sleep $((RESTART_AT - KILL_AT))
spawn backend2-restarted "$BACKEND" "$VICTIM_PORT"
echo "t=${RESTART_AT}s: restarted it" >&2
wait "$WRK_PID" || die "wrk failed: $(cat "$T/wrk.txt")"

cat "$T/wrk.txt"
rps=$(awk '/^Requests\/sec/ {print $2}' "$T/wrk.txt")
non2xx=$(awk '/Non-2xx or 3xx responses/ {print $NF}' "$T/wrk.txt")
sockerr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$T/wrk.txt")
echo
echo "## weir failover"
header
echo "wrk -t1 -c$CONNS -d${DURATION}s, kill at ${KILL_AT}s, restart at ${RESTART_AT}s"
echo "requests/s: $rps | non-2xx: ${non2xx:-0} | socket errors: ${sockerr:-0}"
echo "weir's log (server down/up):"
grep -E ": server (down|up) " "$T/weir.log" | sed 's/^/  /' || true
[[ "${non2xx:-0}" == 0 && "${sockerr:-0}" == 0 ]]
