#!/usr/bin/env bash
# Builds weir with profile-guided optimisation (PGO), its fastest build on x86-64 Linux.
# An instrumented build of weir proxies requests to bench_backend: wrk's HTTP/1.1
# keep-alive at 64 and 1000 connections, and h2load's HTTP/2, each in clear and over
# TLS (a throwaway self-signed certificate), with one thread and with two.
# llvm-profdata merges the profile, and the release build is made again with it. The binary is target/pgo/release/weir (under CARGO_TARGET_DIR, if set):
# install it in place of target/release/weir, or compare the two with
#
#   bash benches/compare.sh --proxies weir,weir-pgo,nginx --no-build
#
#   bash benches/pgo.sh [--seconds 5] [--no-install] [--keep]
#
#   --seconds  how long each of the twelve training loads runs
#
# llvm-profdata comes from rustup's llvm-tools component (installed when missing), so
# its LLVM is rustc's. Code the training does not reach (the cache, compression, rate
# limits, ...) is laid out as cold: as correct as in the plain build, and perhaps slower.
set -euo pipefail

# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SECONDS_PER_RUN=5
parse_options "--seconds=SECONDS_PER_RUN" "$@"
need_positive "$SECONDS_PER_RUN"
need_tools wrk h2load
((BUILD)) || die "--no-build: nothing to do"

sysroot="$(cd "$ROOT" && rustc --print sysroot)"   # the toolchain that builds weir
profdata="$(find "$sysroot/lib/rustlib" -name llvm-profdata -type f | head -1)"
if [[ -z "$profdata" ]]; then
    ((INSTALL)) || die "missing llvm-profdata (rustup component add llvm-tools, or run without --no-install)"
    command -v rustup >/dev/null || die "no llvm-profdata in $sysroot, and no rustup to add llvm-tools"
    (cd "$ROOT" && rustup component add llvm-tools) >&2
    profdata="$(find "$sysroot/lib/rustlib" -name llvm-profdata -type f | head -1)"
    [[ -n "$profdata" ]] || die "rustup's llvm-tools has no llvm-profdata"
fi

PGO_DIR="$TARGET_DIR/pgo"
raw="$PGO_DIR/profraw"   # fixed, so that RUSTFLAGS and the build's cache stay the same
echo "building an instrumented weir..." >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR="$PGO_DIR/gen" \
    cargo build --release --quiet --bin weir) >&2
rm -rf "$raw"   # what build scripts and proc macros wrote, built with the same flags
build_release bench_backend
start_backends 1 "$TARGET_DIR/release/examples/bench_backend"
self_signed_cert

for threads in 1 2; do
    pick_port; port=$REPLY
    pick_port; tls_port=$REPLY
    tls="$(tls_listener "$tls_port")"
    cat >"$T/weir.toml" <<TOML
$(weir_head "\"127.0.0.1:$port\", $tls" | sed "s/^threads = 1\$/threads = $threads/")
$(weir_upstream "keepalive = 1000")
TOML
    serve weir "$port" "$PGO_DIR/gen/release/weir" run -c "$T/weir.toml"
    pid=$REPLY
    wait_port "$tls_port" "$pid" || die "weir does not listen on 127.0.0.1:$tls_port"
    for scheme in http https; do
        [[ $scheme == http ]] && p=$port || p=$tls_port
        for conns in 64 1000; do
            echo "training: $threads thread(s), $scheme, $conns connections, ${SECONDS_PER_RUN}s" >&2
            wrk -t"$threads" -c"$conns" -d"${SECONDS_PER_RUN}s" "$scheme://127.0.0.1:$p/" >"$T/wrk.txt"
            if grep -q "Non-2xx" "$T/wrk.txt"; then die "non-2xx answers: $(cat "$T/wrk.txt")"; fi
        done
        echo "training: $threads thread(s), $scheme, HTTP/2, ${SECONDS_PER_RUN}s" >&2
        h2load -c16 -m10 -D"$SECONDS_PER_RUN" "$scheme://127.0.0.1:$p/" >"$T/h2load.txt"
        grep -q " 0 failed, 0 errored" "$T/h2load.txt" || die "HTTP/2 requests failed: $(cat "$T/h2load.txt")"
    done
    # The profile is written when weir exits: stop it gracefully and wait.
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
done

"$profdata" merge -o "$T/weir.profdata" "$raw"
# Named by its contents: cargo does not see a profile change, but does see RUSTFLAGS change.
profile="$PGO_DIR/weir-$(sha256sum "$T/weir.profdata" | cut -c1-12).profdata"
rm -f "$PGO_DIR"/weir-*.profdata
mv "$T/weir.profdata" "$profile"
echo "building weir with the profile..." >&2
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$profile" CARGO_TARGET_DIR="$PGO_DIR" \
    cargo build --release --quiet --bin weir) >&2
echo "$PGO_DIR/release/weir"
