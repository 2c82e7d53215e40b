#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job on the embedded default: builds the hello enclave (Debian's cloud kernel,
# the project's init and a small application), boots it as a VM on the emulated parent,
# shows the line it prints on its console, talks to it over vsock from the parent's side,
# verifies the attestation document its NSM signed, describes it and terminates it.
#
# The first run downloads QEMU and the kernel from Debian's archive (about 100 MB, no root
# needed) into $NE_CACHE (default ~/.cache/ne); later runs reuse them. The image stays in
# target/enclave/hello.eif for you to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n== %s\n' "$*"; }

say "building the hello enclave (provisions QEMU and the kernel on first use)"
eif=$(scripts/build-hello.sh)
echo "built by scripts/build-hello.sh with nectl build-enclave, no Docker: a root holding"
echo "/hello, the kit's kernel and vsock modules, and a static ne-init; it stays in $eif"
nectl=$PWD/target/debug/nectl
work=$(mktemp -d)
export NECTL_SOCKET=$work/parent.sock
trap '"$nectl" parent stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

step() {
    printf '\n$ nectl'
    printf ' %q' "$@"
    printf '\n'
    "$nectl" "$@"
}

step describe-eif --eif-path "$eif"
say "booting it (under software emulation this takes a few seconds; nectl waits for the enclave's heartbeat)"
step run-enclave --eif-path "$eif" --cpu-count 2 --memory 256 --enclave-name hello --debug-mode
cid=$("$nectl" describe-enclaves | sed -n 's/.*"EnclaveCID": \([0-9]*\).*/\1/p' | head -1)

say "its console, as the enclave's kernel and init printed it"
step console --enclave-name hello --disconnect-timeout 1 | tail -n 4

say "talking to it over vsock: CID $cid, port 5005"
echo "greetings from the parent" | step connect --enclave-cid "$cid" --port 5005
say "its attestation document: the application asks its /dev/nsm (port 5007 answers a nonce with one)"
echo c0ffee | "$nectl" connect --enclave-cid "$cid" --port 5007 > "$work/document.hex"
echo "$(wc -c < "$work/document.hex") hex digits; verified against this installation's root (nectl attestation-root):"
step verify-attestation --document "$work/document.hex" --nonce c0ffee | sed '/"PCRs"/,/}/d'
echo "(a debug-mode enclave's PCRs are zero, as on Nitro; without --debug-mode they are describe-eif's)"

step describe-enclaves
step terminate-enclave --enclave-name hello
step describe-enclaves
