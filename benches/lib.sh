# Shared helpers for benches/reload.sh, idle_conns.sh and bulk.sh (sourced, not run).
# The same conventions as compare.sh: tools installed with apt-get when missing,
# release builds, free high ports on 127.0.0.1, everything started is stopped on exit.

die() { echo "${0##*/}: $*" >&2; exit 1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEIR="${WEIR:-$TARGET_DIR/release/weir}"   # override to compare builds

# need_tools TOOL...: installs the missing ones with apt-get (unless INSTALL=0).
need_tools() {
    local tool missing=() pkgs=()
    for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    ((${#missing[@]})) || return 0
    ((${INSTALL:-1})) || die "missing tools: ${missing[*]} (run without --no-install)"
    for tool in "${missing[@]}"; do
        case "$tool" in taskset) pkgs+=(util-linux) ;; ss) pkgs+=(iproute2) ;; *) pkgs+=("$tool") ;; esac
    done
    local sudo=""; [[ $EUID -eq 0 ]] || sudo="sudo"
    echo "installing: ${pkgs[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >&2
}

# build_release EXAMPLE...: weir and the named examples, release (unless BUILD=0).
build_release() {
    if ((${BUILD:-1})); then
        local args=(--bin weir) e
        for e in "$@"; do args+=(--example "$e"); done
        echo "building weir $* (release)..." >&2
        (cd "$ROOT" && cargo build --release --quiet "${args[@]}") >&2
    fi
    [[ -x "$WEIR" ]] || die "missing $WEIR"
    for e in "$@"; do [[ -x "$TARGET_DIR/release/examples/$e" ]] || die "missing example $e"; done
}

T="$(mktemp -d /tmp/weir-bench.XXXXXX)"
declare -a ALL_PIDS=()
cleanup() {
    local p
    for p in "${ALL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for p in "${ALL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    for p in "${ALL_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if ((${KEEP:-0})); then echo "kept: $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

USED_PORTS=" "
# Listening ports come from below the kernel's ephemeral range, so that the
# thousands of client connections a bench opens cannot take one before its
# proxy binds it.
EPHEMERAL_LOW="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
((EPHEMERAL_LOW > 11000)) || EPHEMERAL_LOW=60000
pick_port() { # sets REPLY to a free 127.0.0.1 port
    local p
    for _ in $(seq 200); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if [[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]]; then
            USED_PORTS+="$p "; REPLY=$p; return 0
        fi
    done
    die "no free port found"
}
wait_port() { # wait_port PORT PID: until something accepts on 127.0.0.1:PORT
    for _ in $(seq 300); do
        kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}
# rss_kb PID...: VmRSS summed, in KiB
rss_kb() {
    local total=0 p v
    for p in "$@"; do
        v="$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)" || v=0
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
# stats: numbers on stdin -> "median min max"
stats() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR == 0) { print "nan nan nan"; exit }
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        print m, a[1], a[NR] }'
}
NPROC="$(nproc)"
if ((NPROC >= 2)); then CLIENT_CPUS=1 SERVER_CPUS=0; else CLIENT_CPUS=0 SERVER_CPUS=0; fi
header() { # header COMMAND
    local rev dirty
    rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    dirty="$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | head -1)"
    [[ -n "$dirty" ]] && rev+="+dirty"
    echo "command: $1"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC') | nproc: $NPROC | kernel: $(uname -r) | loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg) | weir git $rev"
}
