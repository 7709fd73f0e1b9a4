"""``python -m kvlab.bench <command>``: dispatch to a benchmark (today: ``serve``)."""

from __future__ import annotations

import sys

from kvlab.bench.serve import main as serve_main

COMMANDS = {"serve": serve_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(
            f"usage: python -m kvlab.bench {{{','.join(COMMANDS)}}} [options]  (--help for each)",
            file=sys.stderr,
        )
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
