"""``python -m aserve``: parse the command line, then run the server."""

from __future__ import annotations

import sys

from aserve import flags


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status. ``--help``/``--version``/misuse exit early."""
    options = flags.parse_or_exit(sys.argv[1:] if argv is None else argv)
    from aserve import server  # imported late: --help must not load TensorFlow or gRPC

    return server.run(options)


if __name__ == "__main__":
    sys.exit(main())
