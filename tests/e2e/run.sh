#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The end-to-end suite: the unmodified Linux nitro_enclaves driver, in a QEMU guest under
# TCG, against `nectl serve` over vfio-user. Needs root and about 1 GB in $NE_CACHE
# (default ~/.cache/ne); provisions itself from Debian's archive (tests/e2e/provision.sh),
# then takes a few minutes. Prints a per-step summary; on failure keeps the serial and
# server logs in artifacts/e2e/.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
cache=${NE_CACHE:-$HOME/.cache/ne}/e2e
artifacts=$repo/artifacts/e2e

tests/e2e/provision.sh
root=$cache/root
guest=$cache/guest

# NE_E2E_BENCH=FILE: the second guest also measures (scripts/bench-guest.sh), with release
# builds, and its BENCH lines go to FILE.
bench=${NE_E2E_BENCH:-}
profile=debug
[ -n "$bench" ] && profile=release
echo "[e2e] building nectl, and static builds of nectl and the guest program ($profile)"
cargo build --quiet --locked --profile "${profile/debug/dev}" -p ne-cli
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --locked --profile "${profile/debug/dev}" \
    -p ne-e2e-guest -p ne-cli -p ne-e2e-virtee --target x86_64-unknown-linux-gnu
nectl=$repo/target/$profile/nectl
static=$repo/target/x86_64-unknown-linux-gnu/$profile

work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
    if [ -S "$work/arm64-parent/parent.sock" ]; then
        NECTL_SOCKET=$work/arm64-parent/parent.sock "$nectl" parent stop >/dev/null 2>&1 || true
    fi
    for mount in "$root/dev" "$root/src" "$root/cargo-home/registry"; do
        if mountpoint -q "$mount"; then umount "$mount"; fi
    done
    rm -rf "$work" "$root/tmp/ne-e2e"
}
trap cleanup EXIT

echo "[e2e] making the initramfs"
mkdir -p "$work/initrd"/{bin,dev,proc,sys,lib}
cp "$guest/busybox" "$work/initrd/bin/busybox"
cp "$guest/nitro_enclaves.ko" "$work/initrd/lib/"
cp "$static/ne-e2e-guest" "$static/nectl" "$work/initrd/bin/"
# A small valid image: the device checks and measures it; nothing boots in this suite.
head -c 200000 /dev/urandom >"$work/kernel" && head -c 60000 /dev/urandom >"$work/ramdisk"
"$nectl" build-eif --kernel "$work/kernel" --ramdisk "$work/ramdisk" \
    --output "$work/initrd/hello.eif" >/dev/null
install -m 0755 tests/e2e/init "$work/initrd/init"
mkdir -p "$root/tmp/ne-e2e" "$root/run"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$root/tmp/ne-e2e/initrd.gz"
cp "$guest/vmlinuz" "$root/tmp/ne-e2e/vmlinuz"

host_step() { if [ "$2" = ok ]; then echo "STEP $1 PASS $3"; else echo "STEP $1 FAIL $3"; fi; }

# run_checks NAME QEMU-ARGS...: phase 1 on one guest — `nectl serve --backend sim` on
# /run/ne-<NAME>.sock, the guest booted with QEMU-ARGS (run in the root) and that device,
# its HOST requests acted on while it runs; leaves $work/<NAME>.serial, .server, .history
# and .status.
run_checks() {
    local name=$1; shift
    local socket=$root/run/ne-$name.sock control=$work/$name.control
    local serial=$work/$name.serial history=$work/$name.history status=$work/$name.status
    : >"$serial"   # the loop below reads it before QEMU has written anything
    rm -f "$socket"
    "$nectl" serve --backend sim --socket "$socket" --control "$control" >"$work/$name.server" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
    timeout 600 chroot "$root" "$@" \
        -device "{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"/run/ne-$name.sock\",\"type\":\"unix\"}}" \
        </dev/null >"$serial" 2>&1 &
    local qemu=$! handled="" line slot command rc
    while kill -0 "$qemu" 2>/dev/null; do
        while IFS= read -r line; do
            case "$handled" in *"|$line|"*) continue ;; esac
            handled="$handled|$line|"
            case "$line" in
                "HOST crash slot="*)
                    slot=${line#HOST crash slot=}; slot=${slot%% *}
                    "$nectl" control --control "$control" end-enclave --slot "$slot" --crash \
                        >>"$work/host.log" 2>&1 ;;
                "HOST fault "*)
                    read -r _ _ command rc <<<"$line"
                    "$nectl" control --control "$control" fault --command "$command" --count 1 \
                        --rc "$rc" >>"$work/host.log" 2>&1 ;;
                "HOST checkpoint")
                    "$nectl" control --control "$control" history >"$history" 2>>"$work/host.log" ;;
                "HOST unloaded")
                    "$nectl" control --control "$control" status >"$status" 2>>"$work/host.log" ;;
            esac
        done < <(tr -d '\r' <"$serial" | grep -o 'HOST .*' || true)
        sleep 0.2
    done
    wait "$qemu" || true
    kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
echo "[e2e] booting the guest (TCG)"
started=$(date +%s)
run_checks x86 qemu-system-x86_64 -M q35 -accel tcg -cpu max -smp 7 -m 2G \
    -object memory-backend-memfd,id=mem,size=2G,share=on -machine memory-backend=mem \
    -kernel /tmp/ne-e2e/vmlinuz -initrd /tmp/ne-e2e/initrd.gz \
    -append "console=ttyS0 panic=-1 quiet" -nographic -no-reboot
elapsed=$(( $(date +%s) - started ))

# Phase 2: enclaves that boot. The same guest kernel, now with a vsock device of its own
# (CID 3 to its enclaves), and `nectl serve` booting each enclave as a VM on the guest's
# donated pages; the guest runs nitro-cli's steps on the real hello image.
echo "[e2e] phase 2: enclaves that boot, reached over the guest's own vsock"
[ -f target/enclave/hello.eif ] || scripts/build-hello.sh >/dev/null
mkdir -p "$work/initrd-vm"/{bin,dev,proc,sys,lib}
cp "$guest/busybox" "$static/nectl" "$static/ne-e2e-guest" "$static/ne-e2e-virtee" "$work/initrd-vm/bin/"
for module in nitro_enclaves vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport; do
    cp "$guest/$module.ko" "$work/initrd-vm/lib/"
done
cp target/enclave/hello.eif "$work/initrd-vm/hello.eif"
# QEMU 11 with -accel nitro, the guest's own client of /dev/nitro_enclaves: the trixie root's
# binary and its shared libraries, at their paths (uncompressed: faster to boot under TCG).
qemu_bin=/usr/bin/qemu-system-x86_64
for file in "$qemu_bin" $(chroot "$root" ldd "$qemu_bin" | grep -o '/[^ ]*'); do
    mkdir -p "$work/initrd-vm$(dirname "$file")"
    cp -L "$root$file" "$work/initrd-vm$file"
done
install -m 0755 tests/e2e/init-vm "$work/initrd-vm/init"
(cd "$work/initrd-vm" && find . | cpio -o -H newc --quiet) >"$root/tmp/ne-e2e/initrd-vm.cpio"
socket=$root/run/ne-e2e.sock
vsock=$root/run/ne-e2e-vsock.sock
serial_vm=$work/serial-vm.log
server_vm_log=$work/server-vm.log
rm -f "$socket" "$vsock"
"$nectl" serve --backend vm --socket "$socket" --vsock "$vsock" --state-dir "$work/state" \
    >"$server_vm_log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do [ -S "$socket" ] && [ -S "$vsock" ] && break; sleep 0.1; done
started_vm=$(date +%s)
timeout 600 chroot "$root" qemu-system-x86_64 -M q35 -accel tcg -cpu max -smp 5 -m 2G \
    -object memory-backend-memfd,id=mem,size=2G,share=on -machine memory-backend=mem \
    -kernel /tmp/ne-e2e/vmlinuz -initrd /tmp/ne-e2e/initrd-vm.cpio \
    -append "console=ttyS0 panic=-1 quiet${bench:+ ne.bench=1}" -nographic -no-reboot \
    -device '{"driver":"vfio-user-pci","socket":{"path":"/run/ne-e2e.sock","type":"unix"}}' \
    -chardev socket,id=vsock,path=/run/ne-e2e-vsock.sock \
    -device vhost-user-vsock-pci,chardev=vsock \
    </dev/null >"$serial_vm" 2>&1 || true
elapsed_vm=$(( $(date +%s) - started_vm ))
kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
server_pid=""
[ -n "$bench" ] && tr -d '\r' <"$serial_vm" | sed -n 's/^.*BENCH //p' >"$bench"

# Phase 3: an aarch64 parent, as on Graviton: Debian's arm64 cloud kernel and its unmodified
# driver in qemu-system-aarch64 (virt, GICv3, TCG), the same checks as phase 1 through the
# enclave API on /dev/nitro_enclaves. The guest program and nectl are built for aarch64 in
# the root, with Debian's Rust and its arm64 standard library (tests/e2e/provision.sh); the
# repository and the registry's sources are mounted there, and nothing is fetched.
elapsed_arm64=0
if [ "${NE_E2E_ARM64:-1}" != 0 ]; then
    echo "[e2e] phase 3: an aarch64 parent (building the guest program for aarch64)"
    guest_arm64=$cache/guest-arm64
    mkdir -p "$root/src" "$root/cargo-home/registry"
    mount --bind "$repo" "$root/src"
    mount --bind "${CARGO_HOME:-$HOME/.cargo}/registry" "$root/cargo-home/registry"
    if ! chroot "$root" env -C /src CARGO_HOME=/cargo-home CARGO_TARGET_DIR=/var/cache/ne-target-arm64 \
        CARGO_PROFILE_DEV_DEBUG=0 RUSTFLAGS="-C target-feature=+crt-static" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        cargo build --offline --locked --quiet --target aarch64-unknown-linux-gnu \
        -p ne-e2e-guest -p ne-cli -p ne-init -p ne-example-hello >"$work/arm64-build.log" 2>&1; then
        tail -30 "$work/arm64-build.log"
        echo "e2e: the aarch64 build failed"
        exit 1
    fi
    umount "$root/src" "$root/cargo-home/registry"
    built=$root/var/cache/ne-target-arm64/aarch64-unknown-linux-gnu/debug
    cp -r "$work/initrd" "$work/initrd-arm64"
    cp "$guest_arm64/busybox" "$built/ne-e2e-guest" "$built/nectl" "$work/initrd-arm64/bin/"
    cp "$guest_arm64/nitro_enclaves.ko" "$work/initrd-arm64/lib/"
    (cd "$work/initrd-arm64" && find . | cpio -o -H newc --quiet | gzip -1) \
        >"$root/tmp/ne-e2e/initrd-arm64.gz"
    cp "$guest_arm64/vmlinuz" "$root/tmp/ne-e2e/vmlinuz-arm64"
    echo "[e2e] booting the aarch64 guest (TCG)"
    started_arm64=$(date +%s)
    run_checks arm64 qemu-system-aarch64 -M virt,gic-version=3 -cpu max,pauth-impdef=on \
        -accel tcg -smp 7 -m 2G \
        -object memory-backend-memfd,id=mem,size=2G,share=on -machine memory-backend=mem \
        -kernel /tmp/ne-e2e/vmlinuz-arm64 -initrd /tmp/ne-e2e/initrd-arm64.gz \
        -append "console=ttyAMA0 panic=-1 quiet" -nographic -no-reboot
    elapsed_arm64=$(( $(date +%s) - started_arm64 ))

    # An arm64 enclave: the hello image built with the kit's arm64 kernel and modules and the
    # aarch64 init and application, booted on the host by the emulated parent's VM backend
    # as a qemu-system-aarch64 virt VM, with the same vsock routing, heartbeat and NSM.
    echo "[e2e] an arm64 enclave: the hello image on an arm64 kernel, booted on the host"
    kit=${NE_CACHE:-$HOME/.cache/ne}/kit
    scripts/provision.sh
    mkdir -p "$work/hello-arm64-root" "$work/arm64-parent"
    install -m 0755 "$built/hello" "$work/hello-arm64-root/hello"
    arm64_nectl() { NECTL_SOCKET=$work/arm64-parent/parent.sock NECTL_BACKEND=vm \
        NECTL_ATTESTATION_DIR=$work/arm64-parent/attestation "$nectl" "$@"; }
    # ask CID PORT LINE: the application's answer; it listens only after the heartbeat, so a
    # refused connection is tried again for up to 30 s, as a client would.
    ask() {
        local answer
        for _ in $(seq 60); do
            if answer=$(echo "$3" | arm64_nectl connect --enclave-cid "$1" --port "$2" 2>&1); then
                echo "$answer"
                return 0
            fi
            sleep 0.5
        done
        echo "$answer"
        return 1
    }
    {
        if arm64_nectl build-enclave --rootfs "$work/hello-arm64-root" \
            --output-file "$work/hello-arm64.eif" --name hello-arm64 --init "$built/ne-init" \
            --kernel "$kit/kernel-arm64/vmlinuz" --modules "$kit/kernel-arm64/modules" \
            -- /hello >/dev/null 2>"$work/arm64-enclave.log" \
            && ran=$(arm64_nectl run-enclave --eif-path "$work/hello-arm64.eif" --cpu-count 2 \
                --memory 512 --debug-mode 2>>"$work/arm64-enclave.log"); then
            cid=$(sed -n 's/.*"EnclaveCID": \([0-9]*\).*/\1/p' <<<"$ran")
            host_step arm64-enclave-heartbeat ok "CID $cid: the heartbeat came from an aarch64 VM"
            answer=$(ask "$cid" 5005 ping || true)
            case "$answer" in
                *"hello from the enclave: ping"*) host_step arm64-enclave-vsock ok "$answer" ;;
                *) host_step arm64-enclave-vsock fail "port 5005 answered: $answer" ;;
            esac
            ask "$cid" 5007 c0ffee >"$work/arm64-document.hex" || true
            if verified=$(arm64_nectl verify-attestation --document "$work/arm64-document.hex" \
                --nonce c0ffee 2>&1); then
                host_step arm64-enclave-nsm ok "its /dev/nsm signed a document that verifies"
            else
                host_step arm64-enclave-nsm fail "$verified"
            fi
            arm64_nectl terminate-enclave --all >/dev/null 2>&1 || true
        else
            host_step arm64-enclave-heartbeat fail "$(tail -5 "$work/arm64-enclave.log" | tr '\n' ' ')"
        fi
        arm64_nectl parent stop >/dev/null 2>&1 || true
    } >"$work/arm64-enclave.steps"
fi

# Host-side checks.
# checks_of NAME PREFIX: phase 1's steps of guest NAME, and what its server saw.
checks_of() {
    local name=$1 prefix=$2 history=$work/$1.history status=$work/$1.status
    tr -d '\r' <"$work/$name.serial" | grep -o 'STEP .*' | sed "s/^STEP /STEP $prefix/" || true
    if [ -s "$history" ] && python3 - "$history" <<'PY'
import json, sys
names = [r["Command"] for r in json.load(open(sys.argv[1])) if r["Rc"] == 0]
# The sample's enclave: 256 SLOT_ADD_MEM, then its close sends ENCLAVE_STOP then SLOT_FREE.
s = " ".join(names)
ok = "SLOT_ADD_MEM " * 256 in s + " " and "ENCLAVE_START ENCLAVE_STOP SLOT_FREE" in s
sys.exit(0 if ok else 1)
PY
    then host_step "${prefix}close-seen-by-server" ok "history shows 256 SLOT_ADD_MEM, then ENCLAVE_STOP and SLOT_FREE"
    else host_step "${prefix}close-seen-by-server" fail "history: $(head -c 300 "$history" 2>/dev/null)"; fi
    if [ -s "$status" ] && python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if not s["Enabled"] and s["Slots"] == 0 else 1)' "$status"
    then host_step "${prefix}unload-disables-device" ok "ENABLE 0 seen, no slot left"
    else host_step "${prefix}unload-disables-device" fail "status: $(cat "$status" 2>/dev/null)"; fi
}
{
    checks_of x86 ""
    tr -d '\r' <"$serial_vm" | grep -o 'STEP .*' || true
    [ "${NE_E2E_ARM64:-1}" != 0 ] && checks_of arm64 "arm64-"
    [ "${NE_E2E_ARM64:-1}" != 0 ] && cat "$work/arm64-enclave.steps"
} >"$work/steps.txt"

echo
echo "[e2e] summary (guests ran ${elapsed}s, ${elapsed_vm}s and ${elapsed_arm64}s)"
sed 's/^STEP /  /' "$work/steps.txt"
passed=$(grep -c ' PASS ' "$work/steps.txt" || true)
failed=$(grep -c ' FAIL ' "$work/steps.txt" || true)
expected=25
[ "${NE_E2E_ARM64:-1}" != 0 ] && expected=$((expected + 17))
if [ "$failed" -eq 0 ] && [ "$passed" -ge "$expected" ]; then
    echo "e2e: $passed passed, 0 failed"
    exit 0
fi
mkdir -p "$artifacts"
cp "$work"/*.serial "$work"/*.server "$serial_vm" "$server_vm_log" "$work/steps.txt" \
    "$artifacts/" 2>/dev/null || true
cp "$work"/state/vms/enclave-*.log "$work"/state/vms/enclave-*.console "$artifacts/" \
    2>/dev/null || true
cp "$work"/*.json "$work/host.log" "$artifacts/" 2>/dev/null || true
cp "$work/arm64-build.log" "$work/arm64-enclave.log" "$work/arm64-parent/parent.log" \
    "$work"/arm64-parent/vms/enclave-*.log "$artifacts/" 2>/dev/null || true
echo "e2e: $passed passed, $failed failed (expected $expected steps); logs in $artifacts"
exit 1
