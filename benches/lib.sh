# shellcheck shell=bash
# Shared helpers for every script in benches/ (sourced, not run): option parsing (with
# --no-install, --no-build, --keep and --help for all), tools installed with apt-get when
# missing, release builds, free ports on 127.0.0.1 below the ephemeral range, backends,
# weir and nginx configs, and everything started (by PID) stopped and the temp dir
# removed on exit.

die() { echo "${0##*/}: $*" >&2; exit 1; }

CMDLINE="bash benches/${0##*/}"   # with the options, once parse_options has seen them
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WEIR="${WEIR:-$TARGET_DIR/release/weir}"   # override to compare builds
INSTALL="${INSTALL:-1}" BUILD="${BUILD:-1}" KEEP="${KEEP:-0}"

# usage [STATUS]: prints the script's header comment (line 2 to the first non-comment
# line), to stderr unless STATUS is 0, and exits.
usage() {
    local status=${1:-0}
    if ((status)); then exec >&2; fi
    awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$0"
    exit "$status"
}
# parse_options SPEC "$@": SPEC lists the script's own options, space-separated, each
# --name=VAR (takes a value, stored in VAR) or --name=VAR:VALUE (a flag: sets VAR to VALUE).
# Every script also takes --no-install, --no-build, --keep and -h/--help.
parse_options() {
    local -A opt=()
    local s
    for s in $1 --no-install=INSTALL:0 --no-build=BUILD:0 --keep=KEEP:1; do opt[${s%%=*}]=${s#*=}; done
    shift
    CMDLINE+="${*:+ $*}"
    while (($#)); do
        [[ $1 == -h || $1 == --help ]] && usage 0
        s="${opt[$1]:-}"
        if [[ -z "$s" ]]; then
            echo "unknown option: $1" >&2; usage 2
        elif [[ "$s" == *:* ]]; then
            printf -v "${s%%:*}" '%s' "${s#*:}"; shift
        else
            (($# >= 2)) || { echo "$1 takes a value" >&2; usage 2; }
            printf -v "$s" '%s' "$2"; shift 2
        fi
    done
}
# need_positive N...: each must be a positive integer.
need_positive() {
    local n
    for n in "$@"; do
        [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { echo "not a positive integer: $n" >&2; exit 2; }
    done
}

# need_tools TOOL...: installs the missing ones with apt-get (unless INSTALL=0). ss is
# always needed (pick_port).
need_tools() {
    local tool missing=() pkgs=()
    for tool in ss "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    ((${#missing[@]})) || return 0
    ((INSTALL)) || die "missing tools: ${missing[*]} (run without --no-install)"
    for tool in "${missing[@]}"; do
        case "$tool" in
            taskset) pkgs+=(util-linux) ;;
            ss) pkgs+=(iproute2) ;;
            h2load) pkgs+=(nghttp2-client) ;;
            *) pkgs+=("$tool") ;;
        esac
    done
    local sudo=""; [[ $EUID -eq 0 ]] || sudo="sudo"
    echo "installing: ${pkgs[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >&2
}

# build_release EXAMPLE...: weir and the named examples, release (unless BUILD=0).
build_release() {
    if ((BUILD)); then
        local args=(--bin weir) e
        for e in "$@"; do args+=(--example "$e"); done
        echo "building weir $* (release)..." >&2
        (cd "$ROOT" && cargo build --release --quiet "${args[@]}") >&2
    fi
    [[ -x "$WEIR" ]] || die "missing $WEIR (build it, or drop --no-build)"
    for e in "$@"; do [[ -x "$TARGET_DIR/release/examples/$e" ]] || die "missing example $e"; done
}

# ---------------------------------------------------------------- processes and cleanup
T="$(mktemp -d /tmp/weir-bench.XXXXXX)"
declare -a ALL_PIDS=()    # stopped on exit
declare -a TEMP_FILES=()  # removed on exit (with $T), unless --keep
# stop_pids PID...: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pids() {
    local p alive
    (($#)) || return 0
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
    stop_pids "${ALL_PIDS[@]}"
    if ((KEEP)); then echo "kept: $T ${TEMP_FILES[*]}" >&2; else rm -rf "$T" "${TEMP_FILES[@]}"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# spawn NAME CMD...: starts CMD in the background, output to $T/NAME.log, stopped on exit.
# Sets REPLY to its PID. CMD must be a program (taskset ... is fine), not a function: a
# backgrounded function is a subshell, and its PID is not the server's.
spawn() {
    local name=$1
    shift
    "$@" >"$T/$name.log" 2>&1 &
    REPLY=$!
    ALL_PIDS+=("$REPLY")
}
# callgrind_weir NAME PORT: runs weir with $T/NAME.toml (listening on PORT) under callgrind
# while wrk -t1 -cCONNS sends requests for SECONDS_PER_RUN, into $T/NAME.cg and $T/NAME.wrk;
# dies on a non-2xx answer. Sets INSTR (instructions, start-up and shutdown included) and
# REQS (the requests wrk completed).
callgrind_weir() {
    callgrind_serve "$1" "$2" "$WEIR" run -c "$T/$1.toml"
}
# callgrind_serve NAME PORT CMD...: the same for any server CMD listening on PORT, with
# callgrind's options CALLGRIND_OPTS (an array, empty unless the script sets it).
CALLGRIND_OPTS=()
# shellcheck disable=SC2034,SC2153 # INSTR and REQS are for the script; CONNS is the script's
callgrind_serve() {
    local name=$1 port=$2 pid
    shift 2
    serve "$name" "$port" valgrind --tool=callgrind "${CALLGRIND_OPTS[@]}" \
        --callgrind-out-file="$T/$name.cg" "$@"
    pid=$REPLY
    wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:$port/" >"$T/$name.wrk"
    # TERM: a background job of a script starts with SIGINT ignored, and a
    # server without a handler of its own (bench_backend) would not stop.
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    if grep -q "Non-2xx" "$T/$name.wrk"; then die "non-2xx answers: $(cat "$T/$name.wrk")"; fi
    INSTR=$(awk '/^summary:/ {print $2}' "$T/$name.cg")
    REQS=$(awk '/requests in/ {print $1}' "$T/$name.wrk")
}
# serve NAME PORT CMD...: spawn, then wait until something accepts on 127.0.0.1:PORT; dies
# with the end of its log if it exits or does not listen in time. Sets REPLY to its PID.
serve() {
    local name=$1 port=$2 pid
    shift 2
    spawn "$name" "$@"
    pid=$REPLY
    wait_port "$port" "$pid" || { tail -20 "$T/$name.log" >&2; die "$name did not start on 127.0.0.1:$port"; }
    REPLY=$pid
}

# start_backends COUNT CMD...: COUNT servers, each `CMD PORT` on a free port (CMD may start
# with taskset ...), logs $T/backendN.log; sets BACKEND_PORTS and BACKEND_PIDS.
declare -a BACKEND_PORTS=() BACKEND_PIDS=()
start_backends() {
    local n=$1 i
    shift
    for ((i = 1; i <= n; i++)); do
        pick_port
        BACKEND_PORTS+=("$REPLY")
        serve "backend$i" "$REPLY" "$@" "$REPLY"
        BACKEND_PIDS+=("$REPLY")
    done
}

# self_signed_cert: a throwaway certificate and key for bench.test (P-256, one day) in
# $T/site.pem and $T/site.key, for TLS listeners; clients do not verify it.
self_signed_cert() {
    need_tools openssl
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
        -keyout "$T/site.key" -out "$T/site.pem" 2>/dev/null
}
# tls_listener PORT: weir's listener table for 127.0.0.1:PORT with self_signed_cert's files.
tls_listener() {
    printf '{ addr = "127.0.0.1:%s", tls = { cert = "%s", key = "%s" } }' "$1" "$T/site.pem" "$T/site.key"
}

# ---------------------------------------------------------------- ports
USED_PORTS=" "
# Listening ports come from below the kernel's ephemeral range, so that the
# thousands of client connections a bench opens cannot take one before its
# proxy binds it.
EPHEMERAL_LOW="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
((EPHEMERAL_LOW > 11000)) || EPHEMERAL_LOW=60000
pick_port() { # sets REPLY to a free 127.0.0.1 port in 10000..EPHEMERAL_LOW-1
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
wait_port() { # wait_port PORT [PID]: until something accepts on 127.0.0.1:PORT (15 s; fails if PID exits)
    for _ in $(seq 300); do
        [[ -z "${2:-}" ]] || kill -0 "$2" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

# ---------------------------------------------------------------- configs
# weir_head LISTEN [ACCESS [SERVER-LINE...]]: the [server] and [log] tables of a one-thread
# weir logging warnings, listening on 127.0.0.1:LISTEN when LISTEN is a port, else on the
# TOML listen entries LISTEN is (tls_listener's, say), with ACCESS as its access log
# (default "off", as TOML) and the extra SERVER-LINEs in [server].
weir_head() {
    local listen=$1 access=${2:-'"off"'}
    [[ $listen =~ ^[0-9]+$ ]] && listen="\"127.0.0.1:$listen\""
    printf '%s\n' '[server]' "listen = [$listen]" 'threads = 1' "${@:3}" \
        '[log]' 'level = "warn"' "access = $access"
}

# weir_upstream [LINE...]: TOML for one upstream "bench" over BACKEND_PORTS, with the extra
# LINEs in its table, and a catch-all route to it.
weir_upstream() {
    local servers
    servers="$(printf '"127.0.0.1:%s", ' "${BACKEND_PORTS[@]}")"
    printf '%s\n' '[[upstream]]' 'name = "bench"' "servers = [${servers%, }]" "$@" \
        '' '[[route]]' 'path = "/"' 'upstream = "bench"'
}

NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
# shellcheck disable=SC2034 # used by the scripts: spawn/serve NAME PORT "${NGINX_CMD[@]}"
NGINX_CMD=("$NGINX_BIN" -p "$T/nginx/" -e stderr -c "$T/nginx.conf")
# nginx_conf WORKERS CONNECTIONS KEEPALIVE PORT [DIRECTIVE...]: writes $T/nginx.conf for
# NGINX_CMD, the nginx equivalent of weir_upstream: in the foreground, errors to stderr (its
# log), no access log, files under $T/nginx; an upstream over BACKEND_PORTS keeping up to
# KEEPALIVE idle connections per worker; 127.0.0.1:PORT proxying everything to it over
# HTTP/1.1 with the forwarding headers weir sets, plus the DIRECTIVEs in its location.
# NGINX_HTTP holds directives for the http block (a proxy_cache_path, say).
declare -a NGINX_HTTP=()
nginx_conf() {
    local workers=$1 conns=$2 keepalive=$3 port=$4 d
    shift 4
    mkdir -p "$T/nginx/tmp"
    {
        [[ $EUID -eq 0 ]] && echo "user root;"
        echo "worker_processes $workers;"
        echo "worker_rlimit_nofile $((conns * 2));"
        echo "daemon off;"
        echo "pid $T/nginx/nginx.pid;"
        echo "error_log stderr warn;"
        echo "events { worker_connections $conns; }"
        echo "http {"
        echo "    access_log off;"
        echo "    keepalive_requests 1000000000;   # no client reconnect churn (default 1000)"
        for d in client_body proxy fastcgi uwsgi scgi; do echo "    ${d}_temp_path $T/nginx/tmp/$d;"; done
        for d in "${NGINX_HTTP[@]}"; do echo "    $d"; done
        echo "    upstream bench {"
        for d in "${BACKEND_PORTS[@]}"; do echo "        server 127.0.0.1:$d;"; done
        echo "        keepalive $keepalive;"
        echo "        keepalive_requests 1000000000;"
        echo "    }"
        echo "    server {"
        echo "        listen 127.0.0.1:$port backlog=4096;"
        echo "        location / {"
        echo "            proxy_pass http://bench;"
        echo "            proxy_http_version 1.1;"
        echo "            proxy_set_header Connection \"\";"
        echo "            proxy_set_header Host \$http_host;"
        echo "            proxy_set_header X-Real-IP \$remote_addr;"
        echo "            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;"
        echo "            proxy_set_header X-Forwarded-Proto \$scheme;"
        echo "            proxy_set_header X-Forwarded-Host \$http_host;"
        for d in "$@"; do echo "            $d"; done
        echo "        }"
        echo "    }"
        echo "}"
    } >"$T/nginx.conf"
}
# nginx_pids PID WORKERS: prints the master PID and its workers, once WORKERS have started.
nginx_pids() {
    local workers=""
    for _ in $(seq 100); do
        workers="$(pgrep -P "$1" | tr '\n' ' ')"
        (($(wc -w <<<"$workers") >= $2)) && break
        sleep 0.05
    done
    echo "$1 $workers"
}

# ---------------------------------------------------------------- measuring
# shellcheck disable=SC2034 # used by the scripts
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { # cpu_ticks PID...: "total user" ticks, utime+stime and utime (whole thread group per PID)
    local total=0 user=0 p s
    local -a f
    for p in "$@"; do
        s="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
        s="${s##*) }"            # the command name may contain spaces and parens
        read -ra f <<<"$s"       # f[0] is field 3 (state): utime is field 14, stime 15
        total=$((total + f[11] + f[12]))
        user=$((user + f[11]))
    done
    echo "$total $user"
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
# stats_fmt FORMAT: numbers on stdin -> printf FORMAT with median, min, max
stats_fmt() { stats | awk -v f="$1" '{ printf f, $1, $2, $3 }'; }

# ---------------------------------------------------------------- pinning and header
# Clients alone on cpu1; backends and one-thread proxies on cpu0 (when the host slows, proxy
# and backends slow together, so their CPU ratio in the same run stays comparable).
NPROC="$(nproc)"
# shellcheck disable=SC2034 # used by the scripts
if ((NPROC >= 2)); then
    CLIENT_CPUS=1 SERVER_CPUS=0
else
    CLIENT_CPUS=0 SERVER_CPUS=0
    echo "warning: one CPU only; nothing can be pinned apart, figures are not comparable" >&2
fi
header() { # the command line, date, host, load and weir's git revision
    local rev dirty
    rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    dirty="$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | head -1)"
    [[ -n "$dirty" ]] && rev+="+dirty"
    echo "command: $CMDLINE"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC') | nproc: $NPROC | kernel: $(uname -r) | loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg) | weir git $rev"
}
