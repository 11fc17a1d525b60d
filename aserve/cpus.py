"""How many CPUs this process may really use: its affinity and its cgroup's CPU quota.

A container limited to 2 CPUs on a 64-core host still sees 64 in ``os.cpu_count()``;
sizing thread pools from that oversubscribes it badly (tensorflow/tensorflow#17206,
kserve/kserve#1031). :func:`usable_cpus` takes the smallest of the CPUs the scheduler lets
this process run on (``sched_getaffinity``) and the cgroup quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up, at least 1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Cpus:
    usable: int
    affinity: int
    quota: float | None  # CPUs the cgroup allows; None: no limit

    def __str__(self) -> str:
        quota = "none" if self.quota is None else f"{self.quota:g}"
        return f"{self.usable} usable (affinity {self.affinity}, cgroup quota {quota})"


def usable_cpus(root: str = "/") -> Cpus:
    """The CPUs of this process; ``root`` lets tests point at a fake /proc and /sys."""
    if hasattr(os, "sched_getaffinity"):
        affinity = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - not Linux
        affinity = os.cpu_count() or 1
    quota = cgroup_quota(Path(root))
    usable = affinity if quota is None else min(affinity, max(1, math.ceil(quota)))
    return Cpus(usable=max(usable, 1), affinity=affinity, quota=quota)


def cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by this process's cgroup (v2, else v1), or None when unlimited/unknown."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path.lstrip("/")
    for candidate in _v2_files(root, paths.get("")):
        quota = _read_v2(candidate)
        if quota is not False:
            return quota
    if "cpu" in paths:
        base = root / "sys/fs/cgroup/cpu" / paths["cpu"]
        return _read_v1(base)
    return None


def _v2_files(root: Path, path: str | None) -> list[Path]:
    if path is None:
        return []
    mounts = (root / "sys/fs/cgroup", root / "sys/fs/cgroup/unified")
    return [mount / path / "cpu.max" for mount in mounts]


def _read_v2(file: Path) -> float | None | bool:
    """``cpu.max`` ("max 100000" or "200000 100000"); False when the file is absent."""
    try:
        quota, period = file.read_text().split()[:2]
    except (OSError, ValueError):
        return False
    return None if quota == "max" else int(quota) / int(period)


def _read_v1(base: Path) -> float | None:
    try:
        quota = int((base / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
