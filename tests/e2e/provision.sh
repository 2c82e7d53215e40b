#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Provisions what the end-to-end suite needs, from Debian's archive only, into a cache
# outside the repository ($NE_CACHE, default ~/.cache/ne/e2e); a second run skips what is
# there. Needs root (debootstrap, chroot).
#
#   root/                 a minimal Debian trixie with QEMU (trixie-backports) to run the guest
#   guest/vmlinuz         Debian trixie's cloud kernel (CONFIG_NITRO_ENCLAVES=m)
#   guest/nitro_enclaves.ko  the unmodified upstream driver, from that kernel's package
#   guest/vsock*.ko       the vsock modules of that kernel (the guest's own vsock device)
#   guest/busybox         a static busybox for the guest's init
set -euo pipefail
cache=${NE_CACHE:-$HOME/.cache/ne}/e2e
mirror=${NE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$cache/root
guest=$cache/guest
mkdir -p "$cache" "$guest"

log() { printf '[provision %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

host_tools=()
command -v debootstrap >/dev/null || host_tools+=(debootstrap)
command -v cpio >/dev/null || host_tools+=(cpio)
if [ ${#host_tools[@]} -gt 0 ]; then
    log "installing ${host_tools[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${host_tools[@]}" >/dev/null
fi

if [ ! -x "$root/usr/bin/qemu-system-x86_64" ]; then
    if [ ! -f "$root/.debootstrap-done" ]; then
        log "debootstrap trixie into $root"
        rm -rf "$root"
        debootstrap --variant=minbase trixie "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
            || { tail -20 "$cache/debootstrap.log"; exit 1; }
        touch "$root/.debootstrap-done"
    fi
    log "installing QEMU from trixie-backports into the root"
    echo "deb $mirror trixie-backports main" >"$root/etc/apt/sources.list.d/backports.list"
    chroot "$root" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
        -t trixie-backports qemu-system-x86 >"$cache/qemu-install.log" 2>&1 \
        || { tail -20 "$cache/qemu-install.log"; exit 1; }
fi
log "QEMU: $(chroot "$root" qemu-system-x86_64 --version | head -1)"

modules="nitro_enclaves vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport"
missing=""
for module in $modules; do [ -f "$guest/$module.ko" ] || missing=1; done
if [ ! -f "$guest/vmlinuz" ] || [ -n "$missing" ] || [ ! -x "$guest/busybox" ]; then
    log "fetching the guest kernel and busybox"
    work=$root/tmp/ne-debs
    rm -rf "$work" && mkdir -p "$work" && chmod 777 "$work"
    chroot "$root" sh -c 'cd /tmp/ne-debs && apt-get download -qq linux-image-cloud-amd64 busybox-static'
    kernel_pkg=$(chroot "$root" sh -c "apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print \$2; exit}'")
    chroot "$root" sh -c "cd /tmp/ne-debs && apt-get download -qq $kernel_pkg"
    for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
    cp "$work"/x/boot/vmlinuz-* "$guest/vmlinuz"
    for module in $modules; do
        ko=$(find "$work/x" -name "$module.ko*" | head -1)
        [ -n "$ko" ] || { log "the kernel package has no $module module"; exit 1; }
        case "$ko" in
            *.xz) xz -dc "$ko" >"$guest/$module.ko" ;;
            *.zst) zstd -qdc "$ko" >"$guest/$module.ko" ;;
            *) cp "$ko" "$guest/$module.ko" ;;
        esac
    done
    busybox=$(find "$work/x" -path '*bin/busybox' | head -1)
    cp "$busybox" "$guest/busybox"
    rm -rf "$work"
fi
log "guest: $(ls "$guest" | tr '\n' ' ')"
