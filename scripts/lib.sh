# Shared shell helpers for scripts/test, scripts/dockerd and .ci/run. Source it; do not run it.
# Everything here is bounded and idempotent, so it is safe on a fresh machine, in CI (no stdin)
# and on a developer's workstation that has its own Docker daemon (which we never touch).

say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Run a command as root: directly when we are root, else through sudo (non-interactive in CI).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [ -n "${CI:-}" ] || [ ! -t 0 ]; then sudo -n "$@"; else sudo "$@"; fi
    else
        die "need root to run '$*' (not root, and sudo is not installed); run as root or install the packages yourself"
    fi
}

# True when `busybox` is a statically linked binary (the test image has no libc to link against).
have_static_busybox() {
    local bb
    bb=$(command -v busybox 2>/dev/null) || return 1
    # `ldd` fails on static executables; without ldd, trust Debian's busybox-static package.
    if command -v ldd >/dev/null 2>&1; then
        ! ldd "$bb" >/dev/null 2>&1
    else
        dpkg -s busybox-static >/dev/null 2>&1
    fi
}

APT_UPDATED=${APT_UPDATED:-}

# Install the Debian packages whose binaries are missing: docker.io (dockerd), busybox-static
# (the test image) and prometheus (promtool, for the alert-rule tests).
ensure_packages() {
    local missing=()
    PATH="$PATH:/usr/sbin:/sbin"
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    have_static_busybox || missing+=(busybox-static)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # The schemathesis run (tests/api_abuse.rs) makes a venv; Debian splits venv support out.
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
    [ ${#missing[@]} -eq 0 ] && return 0
    # Deduplicate (docker.io may be listed twice).
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    command -v apt-get >/dev/null 2>&1 \
        || die "missing ${missing[*]} and apt-get is not available; install them by hand"
    say "installing ${missing[*]} with apt-get"
    if [ -z "$APT_UPDATED" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null \
            || die "apt-get update failed"
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" </dev/null || die "apt-get install ${missing[*]} failed"
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
    have_static_busybox || die "a static busybox is still missing after installing busybox-static"
    command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
}
