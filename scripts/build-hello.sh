#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the hello enclave image, target/enclave/hello.eif, with `nectl build-enclave`:
# Debian trixie's cloud kernel and vsock modules (from the kit scripts/provision.sh
# caches), the project's init (crates/ne-init, static), and a root holding the hello
# application (examples/hello). Also writes that root as hello-initramfs.cpio beside it,
# for other image builders.
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
install -m 0755 "$bin/hello" "$root/hello"
"$nectl" build-enclave --rootfs "$root" --output-file "$out" --name hello \
    --init "$bin/ne-init" --kernel "$kit/kernel/vmlinuz" --modules "$kit/kernel/modules" \
    -- /hello "$@" >/dev/null
# The application ramdisk on its own, for other image builders.
"$nectl" build-initramfs --root "$root" --output "${out%.eif}-initramfs.cpio" >/dev/null
echo "$out"
