#!/usr/bin/env bash
# HTTP/2 load against weir with h2load (Debian's nghttp2-client): over TLS
# (ALPN h2) and over cleartext h2c with prior knowledge, in front of three
# examples/bench_backend HTTP/1.1 backends.
#
#   bash benches/h2load.sh [-n REQUESTS] [-c CLIENTS] [-m STREAMS] [--no-build] [--no-install]
#
#   -n REQUESTS   total requests per run (default 100000)
#   -c CLIENTS    h2 connections (default 16)
#   -m STREAMS    concurrent streams per connection (default 32)
#
# It makes a throwaway self-signed certificate with openssl, picks free
# high ports on 127.0.0.1, runs each case once and prints h2load's summary.
# Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=100000 CLIENTS=16 STREAMS=32 BUILD=1 INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        -n) REQUESTS="$2"; shift 2 ;;
        -c) CLIENTS="$2"; shift 2 ;;
        -m) STREAMS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if ! command -v h2load >/dev/null 2>&1; then
    if [ "$INSTALL" = 1 ]; then
        apt-get update -q >&2 && apt-get install -y -q nghttp2-client >&2
    else
        echo "h2load not found (apt-get install nghttp2-client)" >&2; exit 1
    fi
fi
command -v openssl >/dev/null 2>&1 || { echo "openssl not found" >&2; exit 1; }

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ "$BUILD" = 1 ]; then
    echo "building weir and bench_backend (release)..." >&2
    cargo build --release --quiet --bin weir --example bench_backend >&2
fi

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2; exit 1
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
    -keyout "$TMP/site.key" -out "$TMP/site.pem" 2>/dev/null

BACKEND_PORTS=()
for _ in 1 2 3; do
    port="$(free_port)"
    "$TARGET_DIR/release/examples/bench_backend" "$port" &
    PIDS+=("$!")
    BACKEND_PORTS+=("\"127.0.0.1:$port\"")
done
PLAIN="$(free_port)" TLS="$(free_port)"
cat > "$TMP/weir.toml" <<TOML
[server]
listen = ["127.0.0.1:$PLAIN", { addr = "127.0.0.1:$TLS", tls = { cert = "$TMP/site.pem", key = "$TMP/site.key" } }]

[log]
level = "warn"
access = "off"

[[upstream]]
name = "bench"
servers = [$(IFS=,; echo "${BACKEND_PORTS[*]}")]

[[route]]
upstream = "bench"
TOML
"$TARGET_DIR/release/weir" run -c "$TMP/weir.toml" &
PIDS+=("$!")
wait_port "$PLAIN"
wait_port "$TLS"

echo "h2load -n $REQUESTS -c $CLIENTS -m $STREAMS; weir $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores"
for url in "https://127.0.0.1:$TLS/" "http://127.0.0.1:$PLAIN/"; do
    echo
    echo "== $url ($( [ "${url%%:*}" = https ] && echo 'TLS, ALPN h2' || echo 'h2c, prior knowledge'))"
    h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" "$url" \
        | grep -E '^(finished in|requests:|status codes:|traffic:|time for request:|time to 1st byte:|req/s|TLS Protocol|Application protocol)'
done
