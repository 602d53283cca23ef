#!/usr/bin/env bash
# Two builds of weir against each other, interleaved round by round (the order turning
# each round), to measure a change on a noisy host: proxy CPU per request of the new
# build ÷ the old one's, raw and divided by the backends' CPU per request, and req/s.
#
#   bash benches/ab.sh --old PATH --new PATH [--rounds 6] [--duration 4] [--conns "64 1000"]
#                      [--tls] [--no-install] [--keep]
#
#   --tls   the clients speak HTTPS (TLS 1.3, a throwaway self-signed certificate),
#           keep-alive, so what is measured is TLS records rather than handshakes
#
# Build the old one from a worktree into the same target dir, and copy each binary
# away, e.g.:
#   cp target/release/weir /tmp/weir-new
#   git worktree add /tmp/old REV
#   (cd /tmp/old && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --bin weir)
#   cp target/release/weir /tmp/weir-old   # then rebuild the new one, or use the copy
# Pinned as compare.sh: three one-thread bench_backends and the one-thread weirs on
# cpu0, wrk -t1 alone on cpu1.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROUNDS=6 DURATION=4 CONNS="64 1000" OLD="" NEW="" TLS=0
parse_options "--old=OLD --new=NEW --rounds=ROUNDS --duration=DURATION --conns=CONNS --tls=TLS:1" "$@"
need_positive "$ROUNDS" "$DURATION"
[[ -x "$OLD" && -x "$NEW" ]] || die "--old and --new must name weir binaries"
need_tools wrk taskset
SCHEME=http
if ((TLS)); then
  SCHEME=https
  self_signed_cert
fi
build_release bench_backend
declare -A BIN=([old]="$OLD" [new]="$NEW")
start_backends 3 taskset -c "$SERVER_CPUS" "$TARGET_DIR/release/examples/bench_backend"
declare -A PORT=() PID=()
for v in old new; do
  pick_port; PORT[$v]=$REPLY
  listen=${PORT[$v]}
  if ((TLS)); then listen=$(tls_listener "${PORT[$v]}"); fi
  cat >"$T/$v.toml" <<TOML
$(weir_head "$listen" '"off"' 'max_connections = 5024')
$(weir_upstream 'balance = "round_robin"' "keepalive = 1000")
TOML
  serve "$v" "${PORT[$v]}" taskset -c "$SERVER_CPUS" "${BIN[$v]}" run -c "$T/$v.toml"
  PID[$v]=$REPLY
done
run() { # v conns -> "rps us_proxy us_backend"
  local p0 p1 b0 b1 out url="$SCHEME://127.0.0.1:${PORT[$1]}/"
  taskset -c "$CLIENT_CPUS" wrk -t1 -c"$2" -d1s "$url" >/dev/null
  read -r p0 _ <<<"$(cpu_ticks "${PID[$1]}")"; read -r b0 _ <<<"$(cpu_ticks "${BACKEND_PIDS[@]}")"
  out=$(taskset -c "$CLIENT_CPUS" wrk -t1 -c"$2" -d"${DURATION}s" "$url")
  read -r p1 _ <<<"$(cpu_ticks "${PID[$1]}")"; read -r b1 _ <<<"$(cpu_ticks "${BACKEND_PIDS[@]}")"
  local rps reqs; rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out"); reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v r="$rps" -v n="$reqs" -v p=$((p1-p0)) -v b=$((b1-b0)) -v t="$CLK_TCK" 'BEGIN {printf "%s %.3f %.3f", r, p/t/n*1e6, b/t/n*1e6}'
}
echo "## weir A/B: old $OLD, new $NEW ($SCHEME)"
header
for c in $CONNS; do
  need_positive "$c"
  Q=() QN=() RQ=()
  for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then order=(old new); else order=(new old); fi
    for v in "${order[@]}"; do read -r rps us bus <<<"$(run "$v" "$c")"; declare "rps_$v=$rps" "us_$v=$us" "bus_$v=$bus"; done
    Q+=("$(awk -v a="$us_new" -v b="$us_old" 'BEGIN {print a/b}')")
    QN+=("$(awk -v a="$us_new" -v b="$us_old" -v x="$bus_new" -v y="$bus_old" 'BEGIN {print (a/x)/(b/y)}')")
    RQ+=("$(awk -v a="$rps_new" -v b="$rps_old" 'BEGIN {print a/b}')")
    echo "c$c round $r: old $rps_old req/s ${us_old} µs (backend $bus_old); new $rps_new req/s ${us_new} µs (backend $bus_new)"
  done
  echo "c$c new/old: proxy CPU per request $(printf '%s\n' "${Q[@]}" | stats_fmt '%.3f (%.3f-%.3f)'); normalised by backend CPU $(printf '%s\n' "${QN[@]}" | stats_fmt '%.3f (%.3f-%.3f)'); req/s $(printf '%s\n' "${RQ[@]}" | stats_fmt '%.3f (%.3f-%.3f)')"
done
