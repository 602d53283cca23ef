#!/usr/bin/env bash
# HTTP/2 load against weir with h2load (Debian's nghttp2-client): over TLS
# (ALPN h2) and over cleartext h2c with prior knowledge, in front of three
# examples/bench_backend HTTP/1.1 backends.
#
#   bash benches/h2load.sh [-n REQUESTS] [-c CLIENTS] [-m STREAMS] [--no-install] [--no-build] [--keep]
#
#   -n REQUESTS   total requests per run (default 100000)
#   -c CLIENTS    h2 connections (default 16)
#   -m STREAMS    concurrent streams per connection (default 32)
#
# It makes a throwaway self-signed certificate with openssl, picks free ports
# below the ephemeral range on 127.0.0.1, runs each case once (unpinned) and
# prints h2load's summary. Everything it starts is stopped on exit (benches/lib.sh).
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REQUESTS=100000 CLIENTS=16 STREAMS=32
parse_options "-n=REQUESTS -c=CLIENTS -m=STREAMS" "$@"
need_positive "$REQUESTS" "$CLIENTS" "$STREAMS"

need_tools h2load
build_release bench_backend

self_signed_cert

start_backends 3 "$TARGET_DIR/release/examples/bench_backend"
pick_port; PLAIN=$REPLY
pick_port; TLS=$REPLY
# shellcheck disable=SC2119 # weir_upstream's arguments are optional extra lines
cat >"$T/weir.toml" <<TOML
[server]
listen = ["127.0.0.1:$PLAIN", $(tls_listener "$TLS")]

[log]
level = "warn"
access = "off"

$(weir_upstream)
TOML
serve weir "$PLAIN" "$WEIR" run -c "$T/weir.toml"
wait_port "$TLS" "$REPLY" || die "weir does not listen on 127.0.0.1:$TLS"

echo "## weir over HTTP/2"
header
echo "h2load -n $REQUESTS -c $CLIENTS -m $STREAMS; three bench_backends over HTTP/1.1"
for url in "https://127.0.0.1:$TLS/" "http://127.0.0.1:$PLAIN/"; do
    echo
    echo "== $url ($( [[ "${url%%:*}" == https ]] && echo 'TLS, ALPN h2' || echo 'h2c, prior knowledge'))"
    h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" "$url" \
        | grep -E '^(finished in|requests:|status codes:|traffic:|time for request:|time to 1st byte:|req/s|TLS Protocol|Application protocol)'
done
