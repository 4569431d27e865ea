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

# catatonit, the init Podman runs for `--init` (Debian installs it as a podman Recommends).
have_catatonit() {
    [ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null 2>&1
}

# Install the Debian packages whose binaries are missing: docker.io (dockerd), podman and
# catatonit (the Podman run), busybox-static (the test image), prometheus (promtool, for the
# alert-rule tests), etcd-server and etcd-client (the fleet store's tests), and
# protobuf-compiler with libprotobuf-dev (the etcd-client crate's build).
ensure_packages() {
    local missing=()
    PATH="$PATH:/usr/sbin:/sbin"
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    have_catatonit || missing+=(catatonit)
    have_static_busybox || missing+=(busybox-static)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # The fleet store's tests run a private etcd cluster (tests/common/etcd.rs); the
    # etcd-client crate's build compiles etcd's protobuf files with protoc and Google's
    # well-known types.
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
    [ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
    # The schemathesis run (tests/api_abuse.rs) and the Python client's tests
    # (tests/python_client.rs) make venvs; Debian splits venv support out.
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
    command -v podman >/dev/null 2>&1 || die "podman still missing after installing podman"
    have_catatonit || die "catatonit still missing after installing catatonit"
    have_static_busybox || die "a static busybox is still missing after installing busybox-static"
    command -v promtool >/dev/null 2>&1 || die "promtool still missing after installing prometheus"
    command -v etcd >/dev/null 2>&1 || die "etcd still missing after installing etcd-server"
    command -v protoc >/dev/null 2>&1 || die "protoc still missing after installing protobuf-compiler"
}

# Alive and not a zombie (a zombie whose parent does not reap it still answers kill -0).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

wait_gone() { # pid seconds
    local i=0
    while alive "$1"; do
        [ "$i" -ge $(($2 * 10)) ] && return 1
        sleep 0.1
        i=$((i + 1))
    done
}

# Unmounts every mount below DIR, deepest first; lazy, so a busy mount cannot hang us.
unmount_below() { # dir
    local m
    awk '{print $5}' /proc/self/mountinfo | { grep -F "$1/" || true; } | sort -r | while IFS= read -r m; do
        umount -l "$m" 2>/dev/null || as_root umount -l "$m" 2>/dev/null || say "could not unmount $m"
    done
}

# Removes DIR, never following a mount we failed to remove out of it.
remove_tree() { # dir
    rm -rf --one-file-system "$1" 2>/dev/null || as_root rm -rf --one-file-system "$1" \
        || say "could not remove $1 completely"
}

# Builds the test image IMAGE on the engine at HOST (a unix:// address) with the docker CLI
# (config in CLI_DIR, so ~/.docker is never read): a static busybox and a few applets as links,
# nothing else. Built locally because the tests have no registry access. WORK is a scratch dir.
import_test_image() { # host cli_dir work image
    have_static_busybox || die "a static busybox is needed (apt-get install busybox-static)"
    local rootfs applet
    rootfs=$(mktemp -d "$3/rootfs.XXXX")
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
    cp "$(command -v busybox)" "$rootfs/bin/busybox"
    for applet in sh sleep true false cat echo ls mkdir rm touch env ps kill wc id printf \
        test head tail grep date hostname; do
        ln -s busybox "$rootfs/bin/$applet"
    done
    echo 'root:x:0:0:root:/:/bin/sh' >"$rootfs/etc/passwd"
    echo 'root:x:0:' >"$rootfs/etc/group"
    tar -C "$rootfs" -c . | timeout 60 env DOCKER_CONFIG="$2" DOCKER_CONTEXT='' \
        docker -H "$1" import \
        -c 'ENV PATH=/bin' -c 'CMD ["sleep", "3600"]' - "$4" >/dev/null \
        || die "could not import $4"
    rm -rf "$rootfs"
    say "built test image $4"
}
