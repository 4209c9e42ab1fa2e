#!/usr/bin/env bash
# Builds lokal's container image from Debian's packages and PyPI only, with no Docker engine:
#   1. base layer: a minimal Debian root file system with Python (debootstrap), cached on its own;
#   2. app layer:  /opt/lokal, a virtualenv holding lokal's wheel and its pinned dependencies (wheels from
#                  PyPI, installed inside a chroot of the base so every path and shebang is the image's);
#   3. buildah (vfs storage, no daemon, nothing run in a container) stacks the two layers, sets the entry
#      point, and writes an OCI archive named with the image reference the manifests and the chart use.
#
# Output: $LOKAL_IMAGE_CACHE/<key>/lokal.oci.tar and image.json beside it (reference, digest, size).
# The key hashes every input (this script, pyproject.toml, README.md, sidecar/): an unchanged tree reuses
# the archive at once, so the test suite does not rebuild it on every run. The last line printed is the
# path of image.json. Needs root (debootstrap, chroot) and network access to Debian's archive and PyPI.
#
#   bash scripts/build_image.sh               # build (or reuse) and print image.json's path
#   LOKAL_IMAGE=registry.example/lokal:1.2 bash scripts/build_image.sh    # another reference
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

cache=${LOKAL_IMAGE_CACHE:-/var/cache/lokal/image}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# No pip and no python3-venv: the virtualenv is made --without-pip and filled by a pip run from its wheel.
base_packages=python3,python-is-python3,ca-certificates
base_version=1   # bump to rebuild the base layer after changing how it is made

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

log() { echo "build_image: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    echo "build_image: needs root (debootstrap and chroot)" >&2
    exit 1
fi
for tool in debootstrap buildah; do
    if ! command -v "$tool" >/dev/null; then
        log "installing Debian's $tool"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null
    fi
done

base_key=$(printf '%s\n' "$suite" "$base_packages" "$base_version" "$(dpkg --print-architecture)" \
    | sha256sum | cut -c1-16)
key=$( {
    echo "$image" "$base_key"
    sha256sum scripts/build_image.sh pyproject.toml README.md
    find sidecar -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)
out=$cache/$key
if [ -f "$out/image.json" ]; then
    log "up to date ($out)"
    echo "$out/image.json"
    exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/work.XXXXXX")
cleanup() {
    # The chroot's /proc and /dev are bind mounts: unmount before deleting anything under them.
    for mount in "$work/rootfs/proc" "$work/base-rootfs/proc"; do
        mountpoint -q "$mount" 2>/dev/null && umount "$mount"
    done
    rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

# 1. The base layer: Debian + Python, as a tar (numeric owners), cached by suite and package list.
base_tar=$cache/base-$suite-$base_key.tar
if [ ! -f "$base_tar" ]; then
    log "debootstrap $suite ($base_packages); a few minutes, once"
    rootfs=$work/base-rootfs
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

# 2. The app layer: lokal and its pinned dependencies, as wheels only (no compiler in or near the image).
log "wheels"
wheels=$work/wheels
"$python" -m pip wheel -q --disable-pip-version-check --no-deps --wheel-dir "$wheels" "$repo" >&2
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --dest "$wheels" \
    "$wheels"/lokal-*.whl >&2
# pip itself runs from its wheel inside the chroot and is never installed there.
pip_version=$("$python" -m pip --version | cut -d' ' -f2)
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
    --dest "$work/tools" "pip==$pip_version" >&2

log "installing lokal into /opt/lokal (chroot of the base)"
rootfs=$work/rootfs
mkdir -p "$rootfs"
tar --numeric-owner -C "$rootfs" -xf "$base_tar"
mkdir -p "$rootfs/tmp/wheels" "$rootfs/tmp/tools"
cp "$wheels"/*.whl "$rootfs/tmp/wheels/"
cp "$work"/tools/pip-*.whl "$rootfs/tmp/tools/pip.whl"
mount -t proc proc "$rootfs/proc"
in_root() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$rootfs" "$@"; }
in_root python3 -m venv --without-pip /opt/lokal
# No installer in the image: the root file system is read-only in the DaemonSet, and pip compiles the
# bytecode at install time.
in_root /opt/lokal/bin/python /tmp/tools/pip.whl/pip install -q --disable-pip-version-check \
    --no-index --find-links /tmp/wheels lokal >&2
umount "$rootfs/proc"
rm -rf "$rootfs/tmp/wheels" "$rootfs/tmp/tools" "$rootfs/root/.cache"
# The app layer is /opt/lokal alone: whatever else the install touched stays out of the image.
(cd "$rootfs" && tar --numeric-owner -cf "$work/app.tar" ./opt/lokal)

# 3. Two layers, one config, one archive.
log "buildah: layers and config"
storage=$work/storage
bah() { buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs "$@"; }
container=$(bah from --quiet scratch)
bah add --quiet "$container" "$base_tar" / >/dev/null
bah commit --quiet --timestamp 0 "$container" lokal-base >/dev/null
bah rm "$container" >/dev/null
container=$(bah from --quiet lokal-base)
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
bah commit --quiet --timestamp 0 "$container" lokal >/dev/null
mkdir -p "$work/out"
bah push --quiet lokal "oci-archive:$work/out/lokal.oci.tar:$image" >&2

digest=$(tar -xOf "$work/out/lokal.oci.tar" index.json \
    | "$python" -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')
size=$(stat -c %s "$work/out/lokal.oci.tar")
"$python" - "$work/out/image.json" "$image" "$digest" "$size" "$key" "$((SECONDS - started))" <<'EOF'
import json, sys
path, image, digest, size, key, seconds = sys.argv[1:]
json.dump({"image": image, "digest": digest, "size": int(size), "key": key,
           "archive": "lokal.oci.tar", "build_seconds": int(seconds)}, open(path, "w"), indent=2)
EOF
rm -rf "$out"
mv "$work/out" "$out"
log "$image $digest $size bytes in $((SECONDS - started)) s"
echo "$out/image.json"
