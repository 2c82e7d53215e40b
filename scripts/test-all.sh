#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every test of the project: unit, integration, property, end-to-end CLI and doc
# tests, then (as root) the end-to-end suite with the unmodified Linux driver in QEMU.
# Installs the few system packages they need first (see install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --all-features --locked
if [ "$(id -u)" -eq 0 ]; then
    tests/e2e/run.sh
else
    echo "SKIPPED the QEMU end-to-end suite: it needs root (debootstrap, chroot); run tests/e2e/run.sh as root" >&2
fi
