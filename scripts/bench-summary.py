# SPDX-License-Identifier: Apache-2.0
"""Collects the figures of scripts/bench.sh into one JSON file, each with its floor and
ratio, and draws the scaling curve. Usage: bench-summary.py CRITERION_DIR OUT_DIR"""
import json
import os
import platform
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

criterion, out = sys.argv[1], sys.argv[2]


def median_ns(path):
    """The median criterion estimated for the bench at PATH (group/function), in ns."""
    with open(os.path.join(criterion, path, "new", "estimates.json")) as f:
        return json.load(f)["median"]["point_estimate"]


def pair(name, measured, floor, what, floor_what, target=None):
    value, base = median_ns(measured), median_ns(floor)
    figure = {
        "Figure": name,
        "What": what,
        "MedianNs": round(value, 1),
        "Floor": floor_what,
        "FloorMedianNs": round(base, 1),
        "Ratio": round(value / base, 2),
    }
    if target:
        figure["Target"] = target
    return figure


figures = [
    pair("slot_info_in_process", "slot_info/driver_to_device_and_back",
         "slot_info/floor_same_bar_accesses_on_plain_memory",
         "SLOT_INFO: driver -> BAR 3 -> device -> reply -> vector 0",
         "the same BAR accesses on plain memory", "<= 150 ns and <= 3x floor"),
    pair("slot_count_in_process", "slot_count/driver_to_device_and_back",
         "slot_count/floor_same_bar_accesses_on_plain_memory",
         "SLOT_COUNT in process", "the same BAR accesses on plain memory"),
    pair("next_slot_in_process", "next_slot/driver_to_device_and_back",
         "next_slot/floor_same_bar_accesses_on_plain_memory",
         "NEXT_SLOT in process", "the same BAR accesses on plain memory"),
    pair("slot_alloc_then_free_in_process", "slot_alloc_then_free/driver_to_device_and_back",
         "slot_alloc_then_free/floor_same_bar_accesses_on_plain_memory",
         "SLOT_ALLOC then SLOT_FREE in process", "the same BAR accesses on plain memory"),
    pair("sample_lifecycle_in_process", "sample_lifecycle/enclave_api_in_process",
         "sample_lifecycle/floor_same_bar_accesses_on_plain_memory",
         "the Linux sample through the enclave API: 262 commands",
         "the same BAR accesses on plain memory", "<= 50 us"),
    pair("crash_among_four", "crash_among_four/backend_report_to_waiter_woken",
         "crash_among_four/floor_condvar_wakes_a_thread",
         "backend reports a crash -> vector 1 -> event worker -> waiter woken",
         "a condition variable waking a thread"),
    pair("vfio_user_read_4", "vfio_user/region_read_4", "vfio_user/floor_pingpong",
         "a 4-byte BAR 3 read through the vfio-user server",
         "a Unix-socket ping-pong of the same sizes", "<= 1.5x floor"),
    pair("vfio_user_slot_info", "vfio_user/slot_info_command", "vfio_user/floor_pingpong",
         "SLOT_INFO over vfio-user as Linux makes it: 21 messages",
         "one ping-pong (21 would be the floor of the whole)"),
    pair("vfio_user_sample_lifecycle", "vfio_user_lifecycle/sample_262_commands",
         "sample_lifecycle/enclave_api_in_process",
         "the sample's 262 commands over vfio-user, one message per BAR access",
         "the same lifecycle in process"),
]
with open(os.path.join(out, "regions.json")) as f:
    regions = json.load(f)
with open(os.path.join(out, "slot_scaling.json")) as f:
    device = json.load(f)

def processor():
    """The CPU's model name, as the kernel reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


summary = {
    "Machine": {
        "Processor": processor(),
        "CPUs": os.cpu_count(),
        "Kernel": platform.release(),
    },
    "Figures": figures,
    "Scaling": {"DriverSetUserMemoryRegion": regions, "DeviceSlotAddMem": device},
}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")

fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
for data, label in [
    (regions, "NE_SET_USER_MEMORY_REGION (driver checks + device)"),
    (device, "SLOT_ADD_MEM through BAR 3 (device)"),
]:
    xs = [r["Regions"] for r in data["Results"]]
    ys = [r["MedianNsPerAdd"] for r in data["Results"]]
    ax.plot(xs, ys, marker="o", label=label)
ax.set_xscale("log")
ax.set_ylim(bottom=0)
ax.axhline(1000, color="grey", linestyle="--", linewidth=0.8, label="target: 1 us per add")
ax.set_xlabel("regions already in the enclave")
ax.set_ylabel("median ns per add")
ax.set_title("The cost of one more 2 MiB region stays flat")
ax.legend(fontsize=8)
ax.grid(True, which="both", linewidth=0.3)
fig.tight_layout()
fig.savefig(os.path.join(out, "scaling.png"))
for figure in figures:
    print(f'{figure["Figure"]:28} {figure["MedianNs"]:>12.1f} ns  floor {figure["FloorMedianNs"]:>10.1f} ns  ratio {figure["Ratio"]}')
