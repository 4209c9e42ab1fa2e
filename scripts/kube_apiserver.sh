#!/usr/bin/env bash
# Builds a real kube-apiserver (1.20.2) for the suite's real-apiserver tier, once, and caches it outside
# the checkout. Installs etcd (Debian's etcd-server) beside it. Idempotent: a second run only checks.
#
# Rules:
# - Sources only from Debian bookworm: the `kubernetes` source package (1.20.2), golang-go 1.19,
#   golang-github-modern-go-reflect2-dev 1.0.2 and etcd-server 3.4.
# - deb-src comes from an apt configuration of lokal's own under $LOKAL_CACHE/apt (its own source list and
#   package lists): the system's apt sources are never edited.
# - The binary lives in $LOKAL_CACHE/kube-apiserver-1.20.2/, never in the checkout; the build tree is
#   deleted after a successful build.
# - Cost on a fresh machine: ~35 MB download, 4-7 minutes on 2 cores, ~1.3-1.7 GB peak memory, ~1.5 GB of
#   disk while building; the kept binary is ~110 MB.
set -euo pipefail

cache_root=${LOKAL_CACHE:-/var/cache/lokal}
upstream=1.20.2
dest=$cache_root/kube-apiserver-$upstream
binary=$dest/kube-apiserver

check_binary() {
    [ -x "$binary" ] && "$binary" --version 2>/dev/null | grep -qx "Kubernetes v$upstream"
}

apt_packages=(golang-go golang-github-modern-go-reflect2-dev etcd-server dpkg-dev)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -ne 0 ]; then
        echo "kube_apiserver: installing Debian packages needs root (install: ${missing[*]})" >&2
        exit 1
    fi
    echo "kube_apiserver: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # etcd-server's package starts a system etcd on install; the suite runs its own private instances.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -z "$(command -v etcd)" ]; then
    echo "kube_apiserver: etcd is not on PATH after installing etcd-server" >&2
    exit 1
fi

mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9 # several worktrees share the cache: one builds, the others wait and then only check
if check_binary; then
    exit 0
fi

echo "kube-apiserver: building v$upstream into $dest (once per machine: 4-7 minutes, ~1.5 GB)"
started=$(date +%s)

# deb-src for bookworm, in an apt configuration of our own.
apt_dir=$cache_root/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/parts" "$apt_dir/cache/archives/partial"
cat >"$apt_dir/sources.list" <<'EOF'
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
EOF
apt_options=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=$apt_dir/parts"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::Cache=$apt_dir/cache"
)
apt-get "${apt_options[@]}" -qq update
version=$(apt-cache "${apt_options[@]}" showsrc kubernetes | sed -n 's/^Version: //p' | grep "really$upstream" | head -n1)
if [ -z "$version" ]; then
    echo "kube_apiserver: bookworm has no kubernetes source package for $upstream" >&2
    exit 1
fi

build=$dest/build
rm -rf "$build"
mkdir -p "$build"
trap 'rm -rf "$build"' EXIT
(cd "$build" && apt-get "${apt_options[@]}" -qq source "kubernetes=$version" >/dev/null 2>&1)
tree=$(find "$build" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)

# GOPATH mode: the tree at $GOPATH/src/k8s.io/kubernetes, its vendor directory resolving every import.
export GOPATH=$build/gopath GOCACHE=$build/gocache GO111MODULE=off CGO_ENABLED=0 GOFLAGS=
mkdir -p "$GOPATH/src/k8s.io"
ln -s "$tree" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

# reflect2 1.0.1 (vendored) segfaults under Go 1.18+; Debian's 1.0.2 does not.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2

# The release tarball lacks pkg/generated/openapi/zz_generated.openapi.go: generate it with the vendored
# openapi-gen from the same packages the upstream Makefile picks (build/root/Makefile.generated_files).
go build -o "$build/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
openapi_dirs=$(
    find -H . \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune -o -type f -name '*.go' -print \
        | sed 's|^\./staging/src|vendor|; s|^\./||; s|/[^/]*$||' | LC_ALL=C sort -u \
        | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
        | while read -r dir; do
            grep -l --color=never '^// *+k8s:' "$dir"/*.go 2>/dev/null | xargs -r grep -l '+k8s:openapi-gen=' || true
        done | xargs -n1 dirname | LC_ALL=C sort -u | sed 's|^|k8s.io/kubernetes/|' | paste -sd,
)
"$build/openapi-gen" --logtostderr -i "$openapi_dirs" -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -r "$build/openapi-violations.report" >/dev/null

version_pkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=v$upstream -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=20"
ldflags+=" -X $version_pkg.gitTreeState=clean -X $version_pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
go build -o "$build/kube-apiserver" -ldflags "$ldflags" ./cmd/kube-apiserver
mv "$build/kube-apiserver" "$binary"
cd /
if ! check_binary; then
    echo "kube_apiserver: the built binary does not report v$upstream" >&2
    exit 1
fi
echo "kube-apiserver: built $binary in $(($(date +%s) - started)) s"
