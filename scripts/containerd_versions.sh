#!/usr/bin/env bash
# Fetches the containerd versions the lab runs besides the system's own (Debian bookworm's 1.6):
# trixie's 1.7 and sid's 2.1, from Debian's packages, into a private cached prefix outside the checkout:
#
#     $LOKAL_CONTAINERD_CACHE (default /var/cache/lokal/containerd)/
#         <Debian version>/usr/bin/containerd ...   the unpacked package (dpkg -x), never installed
#         <series> -> <Debian version>              what the lab looks up (lokal_lab.containerd_versions)
#         apt/                                      this script's own apt sources, lists and cache
#
# Rules:
# - The system's apt sources, lists, cache and dpkg database are never touched: apt runs with its own
#   sources, lists and cache directories (-o Dir::Etc::sourcelist/sourceparts, Dir::State::Lists,
#   Dir::Cache) and an empty status file. The system's containerd is never replaced.
# - Versions are pinned. When Debian has dropped a pin from its suite (sid moves), the newest version of
#   the same series in that suite is taken instead, with a warning, so a fresh machine still sets up.
# - Idempotent: a series already unpacked at its pin costs one stat, no network.
# - Only containerd and ctr are needed: the lab pulls, it runs no containers (sid's runc needs a newer
#   glibc than bookworm has; containerd itself needs glibc >= 2.34).
set -euo pipefail

cache=${LOKAL_CONTAINERD_CACHE:-/var/cache/lokal/containerd}
# series  Debian suite  pinned Debian version
pins=(
    "1.7 trixie 1.7.24~ds1-6+deb13u1"
    "2.1 sid 2.1.9+ds1-5"
)

missing_pins() {
    needed=()
    for pin in "${pins[@]}"; do
        read -r series suite version <<<"$pin"
        if [ -x "$cache/$series/usr/bin/containerd" ] && [ "$(cat "$cache/$series/.lokal-pin" 2>/dev/null)" = "$version" ]; then
            continue
        fi
        needed+=("$pin")
    done
}
missing_pins
((${#needed[@]})) || exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "containerd_versions: fetching containerd ${needed[*]} into $cache needs root" >&2
    exit 1
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9  # several worktrees may run set-up at once; the second one finds the work done
missing_pins
((${#needed[@]})) || exit 0

apt_dir=$cache/apt
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/preferences.d" "$apt_dir/lists/partial" \
    "$apt_dir/cache/archives/partial" "$apt_dir/debs"
# The same Debian mirror the system uses for its own release, with the other suites.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
mirror=${LOKAL_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk -v c="$codename" '$2 == c {print $1; exit}')}
if [ -z "$mirror" ]; then
    echo "containerd_versions: no Debian mirror found in the system's apt sources; set LOKAL_DEBIAN_MIRROR" >&2
    exit 1
fi
suites=$(printf '%s\n' "${needed[@]}" | awk '{print $2}' | sort -u | tr '\n' ' ')
cat >"$apt_dir/sources.list.d/lokal-containerd.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suites
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
: >"$apt_dir/status"
apt_opts=(
    -o "Dir::Etc::sourcelist=/dev/null"
    -o "Dir::Etc::sourceparts=$apt_dir/sources.list.d"
    -o "Dir::Etc::preferencesparts=$apt_dir/preferences.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=root"
)
echo "containerd_versions: reading Debian $suites package lists (own apt configuration under $apt_dir)"
apt-get "${apt_opts[@]}" -qq update

for pin in "${needed[@]}"; do
    read -r series suite version <<<"$pin"
    pinned=$version
    available=$(apt-cache "${apt_opts[@]}" madison containerd | awk -F' [|] ' -v s="$suite/" '
        index($3, s) { gsub(/ /, "", $2); print $2 }')
    if ! grep -qxF "$version" <<<"$available"; then
        newest=$(grep -E "^${series//./\\.}\." <<<"$available" | head -1 || true)
        if [ -z "$newest" ]; then
            echo "containerd_versions: Debian $suite has no containerd $series (has: ${available//$'\n'/ })" >&2
            exit 1
        fi
        echo "containerd_versions: WARNING: $version is gone from $suite; taking $newest" >&2
        version=$newest
    fi
    target=$cache/$version
    if [ ! -x "$target/usr/bin/containerd" ]; then
        echo "containerd_versions: fetching containerd $version ($suite)"
        (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" -qq download "containerd=$version")
        deb=$(ls "$apt_dir/debs"/containerd_"${version#*:}"_*.deb)
        rm -rf "$target.partial"
        dpkg -x "$deb" "$target.partial"
        mv "$target.partial" "$target"
        rm -f "$deb"
    fi
    echo "$pinned" >"$target/.lokal-pin"  # what the idempotence check compares (the pin, not a fallback)
    ln -sfn "$version" "$cache/$series"
    echo "containerd_versions: containerd $series = $("$cache/$series/usr/bin/containerd" --version)"
done
