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

# The aarch64 parent (run.sh's phase 3; NE_E2E_ARM64=0 skips it): QEMU for arm and Debian's
# Rust (trixie-backports, the same release as its arm64 standard library) with a cross
# linker, in the root; and, fetched with a private apt state for arm64 so that the root
# keeps its own architectures, Debian trixie's arm64 cloud kernel and its nitro_enclaves.ko,
# a static arm64 busybox, and Rust's arm64 standard library (unpacked into the root's
# rustlib, where its rustc looks for targets).
#   guest-arm64/vmlinuz, nitro_enclaves.ko, busybox
[ "${NE_E2E_ARM64:-1}" = 0 ] && exit 0
guest_arm64=$cache/guest-arm64
mkdir -p "$guest_arm64"
if ! chroot "$root" sh -c 'command -v qemu-system-aarch64 && command -v cargo && command -v aarch64-linux-gnu-gcc' >/dev/null; then
    log "installing qemu-system-arm and Rust (trixie-backports) and the arm64 cross linker into the root"
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
        -t trixie-backports qemu-system-arm rustc cargo >"$cache/arm64-install.log" 2>&1 \
        && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross >>"$cache/arm64-install.log" 2>&1 \
        || { tail -20 "$cache/arm64-install.log"; exit 1; }
fi
rust_version=$(chroot "$root" dpkg-query -W -f='${Version}' rustc)
stamp=$root/usr/lib/rustlib/aarch64-unknown-linux-gnu/.ne-version
if [ ! -f "$guest_arm64/vmlinuz" ] || [ ! -f "$guest_arm64/nitro_enclaves.ko" ] \
    || [ ! -x "$guest_arm64/busybox" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$rust_version" ]; then
    log "fetching the arm64 kernel, busybox and Rust $rust_version's arm64 standard library"
    apt_dir=/tmp/ne-apt-arm64
    rm -rf "$root$apt_dir"
    mkdir -p "$root$apt_dir"/{etc/apt/preferences.d,etc/apt/apt.conf.d,etc/apt/sources.list.d,lists/partial,archives/partial,debs}
    touch "$root$apt_dir/status"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    cat >"$root$apt_dir/etc/apt/sources.list" <<SOURCES
deb [arch=arm64 signed-by=$keyring] $mirror trixie main
deb [arch=arm64 signed-by=$keyring] $mirror trixie-backports main
SOURCES
    apt_opts="-o Dir::Etc=$apt_dir/etc/apt -o Dir::State=$apt_dir -o Dir::State::status=$apt_dir/status"
    apt_opts="$apt_opts -o Dir::Cache=$apt_dir -o APT::Architecture=arm64 -o APT::Architectures::=arm64"
    apt_opts="$apt_opts -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
    chroot "$root" sh -c "apt-get $apt_opts update -qq" >"$cache/arm64-fetch.log" 2>&1 \
        || { tail -20 "$cache/arm64-fetch.log"; exit 1; }
    kernel_pkg=$(chroot "$root" sh -c "apt-cache $apt_opts depends linux-image-cloud-arm64" \
        | awk '/Depends: linux-image-/{print $2; exit}')
    [ -n "$kernel_pkg" ] || { log "cannot resolve linux-image-cloud-arm64 in trixie"; exit 1; }
    chroot "$root" sh -c "cd $apt_dir/debs && apt-get $apt_opts download -qq $kernel_pkg busybox-static libstd-rust-dev=$rust_version" \
        >>"$cache/arm64-fetch.log" 2>&1 || { tail -20 "$cache/arm64-fetch.log"; exit 1; }
    x=$root$apt_dir/x
    for deb in "$root$apt_dir"/debs/linux-image-*.deb "$root$apt_dir"/debs/busybox-static_*.deb; do
        dpkg-deb -x "$deb" "$x"
    done
    cp "$x"/boot/vmlinuz-* "$guest_arm64/vmlinuz"
    ko=$(find "$x" -name 'nitro_enclaves.ko*' | head -1)
    [ -n "$ko" ] || { log "the arm64 kernel package has no nitro_enclaves module"; exit 1; }
    case "$ko" in
        *.xz) xz -dc "$ko" >"$guest_arm64/nitro_enclaves.ko" ;;
        *.zst) zstd -qdc "$ko" >"$guest_arm64/nitro_enclaves.ko" ;;
        *) cp "$ko" "$guest_arm64/nitro_enclaves.ko" ;;
    esac
    cp "$(find "$x" -path '*bin/busybox' | head -1)" "$guest_arm64/busybox"
    rm -rf "$root/usr/lib/rustlib/aarch64-unknown-linux-gnu"
    dpkg-deb -x "$root$apt_dir"/debs/libstd-rust-dev_*.deb "$root"
    echo "$rust_version" >"$stamp"
    rm -rf "$root$apt_dir"
fi
log "arm64 guest: $(ls "$guest_arm64" | tr '\n' ' '); Rust $rust_version"
