#!/bin/bash
# Fetch and cache Debian kernel images for the VM test matrix (idempotent).
#
#   vm-tests/kernels.sh [LABEL...]      LABEL: 5.10 6.1 6.12 (default: all three)
#
# Needs (Debian): apt, dpkg, kmod (depmod), debian-archive-keyring.
# Cache: ${BPFCAP_VM_CACHE:-/var/cache/bpfcap-vm}
#   apt/    private sources list + package lists (the machine's apt setup is untouched)
#   debs/   downloaded linux-image .debs (kept: a re-run downloads nothing)
#   boot/   vmlinuz-<kver> and config-<kver>
# Modules go to /lib/modules/<kver> (as shipped, .ko.xz for 6.12; depmod'ed): with
# the image outside any tree that has lib/modules, virtme-ng takes them from there.
# Prints one line per kernel: "<label> <path to vmlinuz>".
set -euo pipefail

CACHE=${BPFCAP_VM_CACHE:-/var/cache/bpfcap-vm}
MIRROR=${BPFCAP_VM_MIRROR:-http://deb.debian.org}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$CACHE"/{apt/lists/partial,apt/cache/archives/partial,apt/parts,debs,boot}

APT_OPTS=(-o Dir::Etc::SourceList="$CACHE/apt/sources.list"
          -o Dir::Etc::SourceParts="$CACHE/apt/parts"
          -o Dir::State::Lists="$CACHE/apt/lists"
          -o Dir::Cache="$CACHE/apt/cache" -o APT::Sandbox::User=root)

suite_of() { case $1 in 5.10) echo bullseye;; 6.1) echo bookworm;; 6.12) echo trixie;; *) return 1;; esac; }
pkg_regex() {   # package name, without anchors
    case $1 in
        5.10) echo 'linux-image-5\.10\.0-[0-9]+-amd64';;
        6.1)  echo 'linux-image-6\.1\.0-[0-9]+-amd64';;
        6.12) echo 'linux-image-6\.12\.[0-9]+\+deb13-amd64';;
    esac
}

apt_updated=
apt_update() {
    [ -n "$apt_updated" ] && return
    : > "$CACHE/apt/sources.list"
    for s in bullseye bookworm trixie; do
        echo "deb [signed-by=$KEYRING] $MIRROR/debian $s main" >> "$CACHE/apt/sources.list"
        echo "deb [signed-by=$KEYRING] $MIRROR/debian-security $s-security main" >> "$CACHE/apt/sources.list"
    done
    apt-get "${APT_OPTS[@]}" -q update >&2
    apt_updated=1
}

# Newest cached image for a label, if its modules are installed too.
cached() {
    local img
    img=$(ls -1 "$CACHE"/boot/vmlinuz-"$1".* 2>/dev/null | sort -V | tail -n1)
    [ -n "$img" ] && [ -f "/lib/modules/${img##*/vmlinuz-}/modules.dep" ] && echo "$img"
}

fetch() {
    local label=$1 img pkg deb kver mods   # tmp: global, for the EXIT trap
    suite_of "$label" >/dev/null || { echo "unknown kernel label: $label" >&2; return 1; }
    if img=$(cached "$label"); then echo "$label $img"; return; fi
    # Reuse a .deb downloaded before; else ask the private apt lists for the newest.
    deb=$(ls -1 "$CACHE"/debs/*.deb 2>/dev/null | grep -E "/$(pkg_regex "$label")_" | sort -V | tail -n1 || true)
    if [ -z "$deb" ]; then
        apt_update
        pkg=$(apt-cache "${APT_OPTS[@]}" pkgnames linux-image- | grep -E "^$(pkg_regex "$label")\$" | sort -V | tail -n1)
        [ -n "$pkg" ] || { echo "no package for kernel $label in $(suite_of "$label")" >&2; return 1; }
        (cd "$CACHE/debs" && apt-get "${APT_OPTS[@]}" -q download "$pkg" >&2)
        deb=$(ls -1 "$CACHE"/debs/"$pkg"_*_amd64.deb | sort -V | tail -n1)
    fi
    tmp=$(mktemp -d "$CACHE/x.XXXXXX"); trap 'rm -rf "${tmp:-}"' EXIT
    dpkg -x "$deb" "$tmp"
    img=$(ls -1 "$tmp"/boot/vmlinuz-* | head -n1)
    kver=${img##*/vmlinuz-}
    mods=$tmp/lib/modules/$kver
    [ -d "$mods" ] || mods=$tmp/usr/lib/modules/$kver      # trixie: merged /usr
    rm -rf "/lib/modules/$kver"; mkdir -p /lib/modules
    cp -a "$mods" "/lib/modules/$kver"
    depmod "$kver"
    cp "$tmp/boot/config-$kver" "$CACHE/boot/" 2>/dev/null || true
    cp "$img" "$CACHE/boot/vmlinuz-$kver"      # last: marks the kernel as cached
    rm -rf "$tmp"
    echo "$label $CACHE/boot/vmlinuz-$kver"
}

[ $# -gt 0 ] || set -- 5.10 6.1 6.12
for label in "$@"; do fetch "$label"; done
