#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Provisions the enclave kit from Debian's archive into a cache outside the repository,
# without root: QEMU 11.1 (trixie-backports) with every library it needs, and Debian
# trixie's cloud kernel with the modules an enclave loads. A second run skips what is
# there.
#
#   $NE_CACHE/kit/qemu/      qemu-system-x86, qemu-system-arm and their dependencies,
#                            unpacked (run through their own dynamic loader: no chroot,
#                            nothing installed)
#   $NE_CACHE/kit/kernel/vmlinuz          the enclave kernel
#   $NE_CACHE/kit/kernel/modules/*.ko     vsock, its virtio transport, nsm (uncompressed)
#   $NE_CACHE/kit/kernel-arm64/           the same for arm64 enclaves (an arm64 `Image`)
#
# NE_CACHE defaults to ~/.cache/ne; NE_DEBIAN_MIRROR to http://deb.debian.org/debian.
# Needs apt-get and dpkg-deb (any Debian or Ubuntu host) and Debian's archive keyring.
set -euo pipefail
cache=${NE_CACHE:-$HOME/.cache/ne}
kit=$cache/kit
mirror=${NE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# The modules an enclave image carries, in load order.
modules=(vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport nsm)

log() { printf '[provision %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [ -x "$kit/qemu/usr/bin/qemu-system-x86_64" ] && [ -x "$kit/qemu/usr/bin/qemu-system-aarch64" ] \
    && [ -f "$kit/kernel/vmlinuz" ] && [ -f "$kit/kernel/modules/vsock.ko" ] \
    && [ -f "$kit/kernel-arm64/vmlinuz" ] && [ -f "$kit/kernel-arm64/modules/vsock.ko" ]; then
    exit 0
fi
for tool in apt-get dpkg-deb xz; do
    command -v "$tool" >/dev/null || { log "missing $tool: install it (apt-get, dpkg-deb, xz-utils)"; exit 1; }
done
[ -f "$keyring" ] || { log "missing $keyring: install debian-archive-keyring"; exit 1; }

# A private apt state: Debian trixie and trixie-backports, for amd64 (and arm64, for the
# arm64 enclave kernel), nothing installed.
apt_dir=$cache/apt
mkdir -p "$apt_dir"/{etc/apt/preferences.d,etc/apt/apt.conf.d,etc/apt/sources.list.d,lists/partial,archives/partial}
: >"$apt_dir/status"
cat >"$apt_dir/etc/apt/sources.list" <<SOURCES
deb [arch=amd64,arm64 signed-by=$keyring] $mirror trixie main
deb [arch=amd64,arm64 signed-by=$keyring] $mirror trixie-backports main
SOURCES
apt_opts=(-o "Dir::Etc=$apt_dir/etc/apt" -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::State::status=$apt_dir/status" -o "Dir::Cache::archives=$apt_dir/archives"
    -o "Dir::Cache=$apt_dir" -o Debug::NoLocking=1 -o APT::Architecture=amd64
    -o APT::Architectures::=amd64 -o APT::Architectures::=arm64
    -o "APT::Sandbox::User=$(id -un)" -qq)

log "reading Debian's package lists (trixie, trixie-backports)"
apt-get "${apt_opts[@]}" update

if [ ! -x "$kit/qemu/usr/bin/qemu-system-x86_64" ] || [ ! -x "$kit/qemu/usr/bin/qemu-system-aarch64" ]; then
    log "downloading QEMU (x86 and arm) from trixie-backports and its libraries (about 110 MB)"
    apt-get "${apt_opts[@]}" install -y --download-only --no-install-recommends \
        -t trixie-backports qemu-system-x86 qemu-system-arm >/dev/null
    rm -rf "$kit/qemu.new" && mkdir -p "$kit/qemu.new"
    for deb in "$apt_dir"/archives/*.deb; do dpkg-deb -x "$deb" "$kit/qemu.new"; done
    rm -rf "$kit/qemu" && mv "$kit/qemu.new" "$kit/qemu"
    rm -f "$apt_dir"/archives/*.deb
fi

# fetch_kernel ARCH DIR: trixie's cloud kernel for ARCH and the modules an enclave loads.
fetch_kernel() {
    local arch=$1 dir=$2 work image ko
    log "downloading trixie's $arch cloud kernel"
    work=$(mktemp -d)
    image=$(apt-cache "${apt_opts[@]}" depends "linux-image-cloud-$arch:$arch/trixie" 2>/dev/null \
        | awk '/Depends: linux-image-/{print $2; exit}')
    image=${image%%:*}
    [ -n "$image" ] || { log "cannot resolve linux-image-cloud-$arch in trixie"; exit 1; }
    (cd "$work" && apt-get "${apt_opts[@]}" download "$image:$arch/trixie")
    dpkg-deb -x "$work"/*.deb "$work/x"
    rm -rf "$dir.new" && mkdir -p "$dir.new/modules"
    cp "$work"/x/boot/vmlinuz-* "$dir.new/vmlinuz"
    for module in "${modules[@]}"; do
        ko=$(find "$work/x" -path '*/modules/*' -name "$module.ko*" | head -1)
        [ -n "$ko" ] || { log "the kernel package has no $module module"; exit 1; }
        case "$ko" in
            *.xz) xz -dc "$ko" >"$dir.new/modules/$module.ko" ;;
            *.zst) zstd -qdc "$ko" >"$dir.new/modules/$module.ko" ;;
            *) cp "$ko" "$dir.new/modules/$module.ko" ;;
        esac
    done
    echo "$image" >"$dir.new/package"
    rm -rf "$dir" && mv "$dir.new" "$dir"
    rm -rf "$work"
}
if [ ! -f "$kit/kernel/vmlinuz" ] || [ ! -f "$kit/kernel/modules/vsock.ko" ]; then
    fetch_kernel amd64 "$kit/kernel"
fi
if [ ! -f "$kit/kernel-arm64/vmlinuz" ] || [ ! -f "$kit/kernel-arm64/modules/vsock.ko" ]; then
    fetch_kernel arm64 "$kit/kernel-arm64"
fi
log "kit ready: $("$kit/qemu/usr/lib64/ld-linux-x86-64.so.2" --library-path "$kit/qemu/usr/lib/x86_64-linux-gnu" \
    "$kit/qemu/usr/bin/qemu-system-x86_64" --version | head -1); kernels $(cat "$kit/kernel/package") $(cat "$kit/kernel-arm64/package")"
