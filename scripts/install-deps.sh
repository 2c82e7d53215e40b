#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the system packages the tests need, from Debian's archive, when missing:
# a C compiler and the kernel's uapi headers (ne-abi compares its layouts with C), and
# what scripts/provision.sh needs to unpack the enclave kit.
set -euo pipefail
missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
[ -f /usr/include/linux/nitro_enclaves.h ] || missing+=(linux-libc-dev)
# scripts/provision.sh unpacks Debian packages (xz-compressed modules, the archive's keys).
command -v xz >/dev/null || missing+=(xz-utils)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root or install them yourself" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
