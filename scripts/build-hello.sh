#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the hello enclave image, target/enclave/hello.eif (and its initramfs beside it,
# hello-initramfs.cpio, for other image builders): Debian trixie's cloud kernel
# (from the kit scripts/provision.sh caches) and an initramfs holding the project's init
# (crates/ne-init), the hello application (examples/hello) and the vsock modules.
# Prints the EIF's path. Extra arguments go to the application (e.g. --exit, --panic),
# and NE_HELLO_OUTPUT names another output file.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${NE_CACHE:-$HOME/.cache/ne}
kit=$cache/kit
scripts/provision.sh
out=${NE_HELLO_OUTPUT:-$repo/target/enclave/hello.eif}
mkdir -p "$(dirname "$out")"

# Static binaries: the enclave has no libraries.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --locked --release \
    --target x86_64-unknown-linux-gnu -p ne-init -p ne-example-hello
cargo build --quiet --locked -p ne-cli
bin=$repo/target/x86_64-unknown-linux-gnu/release
nectl=$repo/target/debug/nectl

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -m 0755 "$bin/ne-init" "$root/init"
install -m 0755 "$bin/hello" "$root/hello"
mkdir -p "$root/lib/modules"
printf '%s\n' vsock.ko vmw_vsock_virtio_transport_common.ko vmw_vsock_virtio_transport.ko >"$root/modules"
while read -r module; do cp "$kit/kernel/modules/$module" "$root/lib/modules/"; done <"$root/modules"
{ echo /hello; for arg in "$@"; do echo "$arg"; done; } >"$root/cmd"
initramfs=${out%.eif}-initramfs.cpio
"$nectl" build-initramfs --root "$root" --output "$initramfs" >/dev/null
"$nectl" build-eif --kernel "$kit/kernel/vmlinuz" --cmdline "console=ttyS0 quiet" \
    --ramdisk "$initramfs" --output "$out" --name hello >/dev/null
echo "$out"
