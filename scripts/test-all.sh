#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test of the project: unit, integration, property, end-to-end CLI and doc
# tests, the enclave VM tests (real boots of the hello image under QEMU), then (as root)
# the end-to-end suite with the unmodified Linux driver in QEMU.
# Installs what they need first: a few Debian packages (install-deps.sh), and the
# enclave kit (QEMU and the kernel, from Debian's archive, no root needed) with the
# hello image built from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build-hello.sh >/dev/null
# Everything the tests need is there now: a test that would skip for a missing part fails.
export NE_REQUIRE_ALL=1
cargo test --workspace --all-features --locked
if [ "$(id -u)" -eq 0 ]; then
    tests/e2e/run.sh
else
    echo "SKIPPED the QEMU end-to-end suite: it needs root (debootstrap, chroot); run tests/e2e/run.sh as root" >&2
fi
