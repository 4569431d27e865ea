# What scripts/bench and scripts/stress-exits share: source it from a script in scripts/, then
# `run_on_engine PROGRAM.py ARGS...`. Builds the release binary (or takes REAPER_BENCH_BIN),
# starts a PRIVATE dockerd (or takes REAPER_BENCH_DOCKER_HOST), always destroys the engine it
# started, even on failure, and runs scripts/bench.d/PROGRAM.py --binary B --docker-sock S
# [--dockerd-pidfile P] ARGS...; its exit status is the script's.
# shellcheck shell=bash

# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

run_on_engine() {
    local program=$1 repo bin version
    shift
    repo=$(cd "$here/.." && pwd)
    if [ -n "${REAPER_BENCH_BIN:-}" ]; then
        bin=$REAPER_BENCH_BIN
    else
        (cd "$repo" && cargo build --release --quiet) || die "cargo build --release failed"
        bin="$repo/target/release/reaper"
    fi
    [ -x "$bin" ] || die "no reaper binary at $bin"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed"

    D=
    cli_dir=$(mktemp -d /tmp/rbc.XXXX)
    trap _engine_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    if [ -n "${REAPER_BENCH_DOCKER_HOST:-}" ]; then
        case "$REAPER_BENCH_DOCKER_HOST" in
            unix://*) sock=${REAPER_BENCH_DOCKER_HOST#unix://} ;;
            *) die "REAPER_BENCH_DOCKER_HOST must be unix:///path, got $REAPER_BENCH_DOCKER_HOST" ;;
        esac
        pidfile=${REAPER_BENCH_DOCKERD_PIDFILE:-}
    else
        ensure_packages
        # Short path: containerd's unix sockets live below it.
        D=$(mktemp -d /tmp/rb.XXXX)
        "$here/dockerd" start "$D"
        "$here/dockerd" image "$D"
        sock="$D/docker.sock"
        pidfile="$D/pid"
    fi
    # The docker CLI never reads or writes the user's ~/.docker.
    export DOCKER_CONFIG=$cli_dir
    unset DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

    version=$(timeout 30 docker -H "unix://$sock" version \
        --format '{{.Server.Version}} (API {{.Server.APIVersion}})') || die "the engine at $sock does not answer"
    say "engine $version, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), binary $bin"
    python3 "$here/bench.d/$program" --binary "$bin" --docker-sock "$sock" \
        ${pidfile:+--dockerd-pidfile "$pidfile"} "$@"
}

_engine_cleanup() {
    local status=$?
    trap - EXIT INT TERM
    rm -rf "$cli_dir"
    if [ -n "$D" ]; then
        "$here/dockerd" destroy "$D" || say "could not fully clean up $D"
    fi
    exit "$status"
}
