#!/usr/bin/env bash
# Builds lokal's container image from Debian's packages and PyPI only, with no Docker engine. Three layers,
# each cached on its own inputs so that a code change rebuilds only the last:
#   1. base: a minimal Debian root file system with Python (debootstrap);           key: suite, packages
#   2. deps: /opt/lokal, a virtualenv with lokal's pinned dependencies (PyPI wheels); key: + their pins
#   3. lokal: lokal's own wheel installed into that virtualenv;                      key: + sidecar/, ...
# Installs run inside a chroot of the base, so every path and shebang is the image's; pip runs from its
# wheel and is never installed there. buildah (vfs storage, no daemon, nothing run in a container) stacks
# the layers, sets the entry point and writes an OCI archive named with the reference the manifests and
# the chart deploy.
#
# Output: $LOKAL_IMAGE_CACHE/<key>/lokal.oci.tar and image.json beside it (reference, digest, size). An
# unchanged tree reuses the archive at once. The last line printed is the path of image.json. Needs root
# (debootstrap, chroot) and Debian's archive and PyPI. One build at a time (a lock in the cache).
#
#   bash scripts/build_image.sh                                          # build (or reuse); print the path
#   LOKAL_IMAGE=registry.example/lokal:1.2 bash scripts/build_image.sh   # another reference
#   bash scripts/build_image.sh --print-key                              # the cache key only
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

cache=${LOKAL_IMAGE_CACHE:-/var/cache/lokal/image}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# No pip and no python3-venv: the virtualenv is made --without-pip and filled by a pip run from its wheel.
base_packages=python3,python-is-python3,ca-certificates
base_version=1     # bump to rebuild the base layer after changing how it is made
layers_version=2   # the same for the deps layer
keep_archives=4    # archives of other trees kept in the cache (worktrees, branches)

# The reference the manifests deploy (kustomize's images: entry), unless told otherwise.
manifest_image() {
    local file=manifests/base/daemonset/kustomization.yaml
    local name tag
    name=$(sed -n 's/^ *newName: *//p' "$file" | head -n1)
    tag=$(sed -n 's/^ *newTag: *//p' "$file" | head -n1)
    echo "$name:$tag"
}
image=${LOKAL_IMAGE:-$(manifest_image)}
python=${PYTHON:-$repo/.venv/bin/python}

log() { echo "build_image: [${SECONDS}s] $*" >&2; }
hash16() { sha256sum | cut -c1-16; }

base_key=$(printf '%s\n' "$suite" "$base_packages" "$base_version" "$(dpkg --print-architecture)" | hash16)
# The dependency list itself, not all of pyproject.toml: a test or lint setting rebuilds nothing.
dependencies=$("$python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
deps_key=$(printf '%s\n' "$base_key" "$layers_version" "$dependencies" | hash16)
key=$( {
    echo "$image" "$deps_key"
    sha256sum scripts/build_image.sh pyproject.toml README.md
    find sidecar -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
} | hash16)
if [ "${1:-}" = "--print-key" ]; then   # the cache key of this tree, and nothing else
    echo "$key"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "build_image: needs root (debootstrap and chroot)" >&2
    exit 1
fi
for tool in debootstrap buildah; do
    command -v "$tool" >/dev/null || { echo "build_image: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done
out=$cache/$key
mkdir -p "$cache"
exec 9> "$cache/.lock"
flock 9
if [ -f "$out/image.json" ]; then
    log "up to date ($out)"
    touch "$out"
    echo "$out/image.json"
    exit 0
fi

work=$(mktemp -d "$cache/work.XXXXXX")
cleanup() {
    mountpoint -q "$work/rootfs/proc" 2>/dev/null && umount "$work/rootfs/proc"
    rm -rf "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$rootfs" "$@"; }
# pip inside the chroot, from its wheel, against the wheels in /tmp/wheels only.
pip_in_root() {
    mount -t proc proc "$rootfs/proc"
    in_root /opt/lokal/bin/python /tmp/tools/pip.whl/pip install -q --disable-pip-version-check \
        --no-index --find-links /tmp/wheels "$@" >&2
    umount "$rootfs/proc"
}
fresh_root() {   # the base (and the given layer tars) unpacked, with pip and the wheels beside
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    for tar in "$@"; do tar --numeric-owner -C "$rootfs" -xf "$tar"; done
    mkdir -p "$rootfs/tmp/wheels" "$rootfs/tmp/tools"
    cp "$work"/wheels/*.whl "$rootfs/tmp/wheels/"
    cp "$work"/tools/pip-*.whl "$rootfs/tmp/tools/pip.whl"
}
download_pip() {
    local version
    version=$("$python" -m pip --version | cut -d' ' -f2)
    "$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
        --dest "$work/tools" "pip==$version" >&2
}
storage=$cache/buildah
bah() { buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs "$@"; }
have_image() { bah inspect --type image "$1" >/dev/null 2>&1; }
mkdir -p "$work/wheels" "$work/tools"

# 1. base: Debian + Python, as a tar (numeric owners) and as a buildah image.
base_tar=$cache/base-$suite-$base_key.tar
if [ ! -f "$base_tar" ]; then
    log "debootstrap $suite ($base_packages); a few minutes, once"
    mkdir -p "$rootfs"
    debootstrap --variant=minbase --include="$base_packages" "$suite" "$rootfs" "$mirror" \
        > "$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    # Nothing of the build machine, and no package manager state a read-only pod could not use anyway.
    rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
        "$rootfs"/usr/share/locale/* "$rootfs"/dev/* "$rootfs"/tmp/* "$rootfs"/run/*
    printf 'nameserver 127.0.0.1\n' > "$rootfs/etc/resolv.conf"   # the runtime mounts its own
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$base_tar.part" .
    mv "$base_tar.part" "$base_tar"
    rm -rf "$rootfs"
fi
if ! have_image "lokal-base:$base_key"; then
    log "base layer"
    container=$(bah from --quiet scratch)
    bah add --quiet "$container" "$base_tar" / >/dev/null
    bah commit --quiet --timestamp 0 "$container" "lokal-base:$base_key" >/dev/null
    bah rm "$container" >/dev/null
fi

# 2. deps: the pinned dependencies (binary wheels only: no compiler in or near the image).
deps_tar=$cache/deps-$deps_key.tar
if [ ! -f "$deps_tar" ]; then
    log "dependency wheels"
    printf '%s\n' "$dependencies" > "$work/wheels/requirements.txt"
    "$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --dest "$work/wheels" \
        -r "$work/wheels/requirements.txt" >&2
    download_pip
    log "installing the dependencies into /opt/lokal (chroot of the base)"
    fresh_root "$base_tar"
    cp "$work/wheels/requirements.txt" "$rootfs/tmp/"
    in_root python3 -m venv --without-pip /opt/lokal
    pip_in_root -r /tmp/requirements.txt
    (cd "$rootfs" && tar --numeric-owner -cf "$deps_tar.part" ./opt/lokal)
    mv "$deps_tar.part" "$deps_tar"
    rm -f "$work"/wheels/*
fi
if ! have_image "lokal-deps:$deps_key"; then
    log "dependency layer"
    container=$(bah from --quiet "lokal-base:$base_key")
    bah add --quiet "$container" "$deps_tar" / >/dev/null
    bah commit --quiet --timestamp 0 "$container" "lokal-deps:$deps_key" >/dev/null
    bah rm "$container" >/dev/null
fi

# 3. lokal: its own wheel, installed without dependencies over the deps layer; the layer holds only what
# that install added.
log "lokal's wheel"
# From a clean copy of exactly the hashed inputs: setuptools builds in the source tree, and a build/ left
# there from an earlier run would carry files since deleted from sidecar/ into the wheel.
mkdir -p "$work/src"
cp pyproject.toml README.md "$work/src/"
tar --exclude=__pycache__ --exclude='*.pyc' -cf - sidecar | tar -C "$work/src" -xf -
# The .venv's setuptools (pinned like the build-system's) saves fetching it again; else pip's isolation.
"$python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir "$work/wheels" "$work/src" >&2 2>/dev/null \
    || "$python" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$work/wheels" "$work/src" >&2
[ -f "$work"/tools/pip-*.whl ] 2>/dev/null || download_pip
fresh_root "$base_tar" "$deps_tar"
(cd "$rootfs" && find ./opt/lokal | sort) > "$work/before.txt"
log "installing lokal into /opt/lokal (chroot)"
pip_in_root --no-deps lokal
(cd "$rootfs" && find ./opt/lokal | sort) > "$work/after.txt"
comm -13 "$work/before.txt" "$work/after.txt" > "$work/added.txt"
(cd "$rootfs" && tar --numeric-owner --no-recursion -cf "$work/app.tar" -T "$work/added.txt")

log "buildah: lokal layer, config, archive"
container=$(bah from --quiet "lokal-deps:$deps_key")
bah add --quiet "$container" "$work/app.tar" / >/dev/null
bah config \
    --os linux --arch "$(dpkg --print-architecture)" \
    --entrypoint '["lokal"]' --cmd '["--help"]' \
    --env PATH=/opt/lokal/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
    --user 0:0 --port 5050/tcp --workingdir / \
    --label org.opencontainers.image.title=lokal \
    --label org.opencontainers.image.version="${image##*:}" \
    "$container"
bah commit --quiet --timestamp 0 "$container" "lokal:$key" >/dev/null
bah rm "$container" >/dev/null
mkdir -p "$work/out"
bah push --quiet "lokal:$key" "oci-archive:$work/out/lokal.oci.tar:$image" >&2
bah rmi "lokal:$key" >/dev/null

digest=$(tar -xOf "$work/out/lokal.oci.tar" index.json \
    | "$python" -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')
size=$(stat -c %s "$work/out/lokal.oci.tar")
"$python" - "$work/out/image.json" "$image" "$digest" "$size" "$key" "$SECONDS" <<'EOF'
import json, sys
path, image, digest, size, key, seconds = sys.argv[1:]
json.dump({"image": image, "digest": digest, "size": int(size), "key": key,
           "archive": "lokal.oci.tar", "build_seconds": int(seconds)}, open(path, "w"), indent=2)
EOF
rm -rf "$out"
mv "$work/out" "$out"

# The cache keeps the newest archives, and only the layers the newest build used.
find "$cache" -mindepth 1 -maxdepth 1 -type d -name '????????????????' -printf '%T@ %p\n' | sort -rn \
    | tail -n +$((keep_archives + 1)) | cut -d' ' -f2- | xargs -r rm -rf
for old in "$cache"/base-*.tar "$cache"/deps-*.tar; do
    [ "$old" = "$base_tar" ] || [ "$old" = "$deps_tar" ] || rm -f "$old"
done
bah images --format '{{.Name}}:{{.Tag}}' | grep -E '/lokal-(base|deps):' \
    | grep -v -e ":$base_key\$" -e ":$deps_key\$" | xargs -r -n1 buildah --root "$storage/root" \
    --runroot "$storage/run" --storage-driver vfs rmi >/dev/null 2>&1 || true
log "$image $digest $size bytes"
echo "$out/image.json"
