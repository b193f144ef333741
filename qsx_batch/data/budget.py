"""The memory budget of dataset blocks (``exploration.data_memory_budget``): how many bytes of samples a process may
hold resident on its device (images as uint8, one byte per value; float datasets four). Blocks claim their size in
the order they are loaded; a block that does not fit what is left is streamed batch by batch instead."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

DEFAULT_SHARE = 4  # without a budget, blocks may take a quarter of the device's memory


class MemoryBudget:
    """Bytes still free for resident dataset blocks."""

    def __init__(self, nbytes: int):
        self.left = nbytes

    def claim(self, nbytes: int) -> bool:
        """Take ``nbytes`` when they fit (the block is held in memory), else take nothing (it is streamed)."""
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


def _cgroup_room() -> int | None:
    """Bytes left under the tightest memory limit of this process's control groups (v2 or v1; a SLURM --mem)."""
    layouts = {"": ("/sys/fs/cgroup", "memory.max", "memory.current"),
               "memory": ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")}
    rooms = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers not in layouts:
            continue
        mount, limit_name, usage_name = layouts[controllers]
        folder = Path(mount + path)
        for group in (folder, *folder.parents):
            try:
                limit = (group / limit_name).read_text().strip()
                usage = int((group / usage_name).read_text())
            except (OSError, ValueError):
                continue
            if limit.isdigit():
                rooms.append(int(limit) - usage)
            if group == Path(mount):
                break
    return min(rooms) if rooms else None


def available_memory() -> int:
    """Bytes this process can still take: MemAvailable, capped by its control groups' memory limits."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        found = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        available = int(found[1]) * 1024 if found else available
    except OSError:
        pass
    room = _cgroup_room()
    return max(0, available if room is None else min(available, room))


def device_memory(device: torch.device) -> int:
    """Memory of ``device``: the GPU's total memory, or what this process can still take for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return available_memory()


def memory_budget(given: int | None, device: torch.device) -> MemoryBudget:
    """The budget ``given`` in bytes, or by default a quarter of ``device``'s memory."""
    return MemoryBudget(device_memory(device) // DEFAULT_SHARE if given is None else given)
