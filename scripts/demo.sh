#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on the embedded default: builds nectl, makes an EIF from examples/hello,
# runs it as an enclave on the emulated parent, prints nitro-cli's JSON for it, then
# terminates it and stops the parent. Nothing outside a temporary directory is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked -p ne-cli
nectl=$PWD/target/debug/nectl
work=$(mktemp -d)
export NECTL_SOCKET=$work/parent.sock
trap '"$nectl" parent stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

step() { printf '\n$ nectl %s\n' "$*"; "$nectl" "$@"; }

step build-eif --kernel examples/hello/kernel --cmdline "console=ttyS0 quiet" \
    --ramdisk examples/hello/init --output "$work/hello.eif"
step describe-eif --eif-path "$work/hello.eif"
step run-enclave --eif-path "$work/hello.eif" --cpu-count 2 --memory 128 --enclave-name hello
step describe-enclaves
step terminate-enclave --enclave-name hello
step describe-enclaves
