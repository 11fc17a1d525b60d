"""File descriptors: every connection holds one, so their limit bounds the connections.

At start aserve raises its soft ``RLIMIT_NOFILE`` to the hard limit (logged), and caps each
port's open connections below it (``--max_connections``, by default half the limit less
256 kept for models and logs), so that a flood is refused as it connects instead of
running the process out of descriptors, where gRPC calls would hang until their deadline.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

RESERVED = 256  # descriptors kept for model files, logs, pipes


@dataclass(frozen=True, slots=True)
class OpenFiles:
    soft_before: int
    soft: int
    hard: int

    def __str__(self) -> str:
        hard = "unlimited" if self.hard == resource.RLIM_INFINITY else str(self.hard)
        return f"open files: soft limit {self.soft_before} -> {self.soft} (hard {hard})"


def raise_open_files_limit() -> OpenFiles:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    return OpenFiles(soft_before=soft, soft=max(target, soft), hard=hard)


def connection_cap(given: int, files: OpenFiles) -> int:
    """Connections one port may hold: ``given`` (--max_connections), or half of what the
    descriptor limit leaves once ``RESERVED`` are kept."""
    if given > 0:
        return given
    return max(64, (files.soft - RESERVED) // 2)
