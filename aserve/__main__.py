"""``python -m aserve``: parse the command line, then run the server."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

from aserve import flags


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status. ``--help``/``--version``/misuse exit early."""
    options = flags.parse_or_exit(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _stop_before_start)
    from aserve import server  # imported late: --help must not load TensorFlow or gRPC

    return server.run(options)


def _stop_before_start(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before the server has installed its own handlers (importing TensorFlow takes
    seconds): nothing is served yet, so exit at once, status 0. Without a handler, aserve as a
    container's PID 1 would never see it (the kernel drops signals PID 1 does not handle)."""
    os.write(2, b"aserve: SIGTERM during start-up: exiting\n")
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
