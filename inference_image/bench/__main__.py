"""python -m inference_image.bench [serving|offline|gpu|cpu] [options]

Without a command: cpu, null, serving, offline and gpu in turn, each with its defaults (what
``make bench-inference`` runs; about ten minutes on 2 cores). ``largest`` (the largest request
inside the 20 s deadline under load) runs on its own.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("serving", "offline", "gpu", "cpu", "null", "largest", "hop")


def _run(name: str, args: list[str]) -> int:
    module = importlib.import_module(f"inference_image.bench.{name}")
    return int(module.main(args) or 0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        worst = 0
        for name in ("cpu", "null", "serving", "offline", "gpu"):
            print(f"\n=== python -m inference_image.bench {name}", flush=True)
            worst = max(worst, _run(name, []))
        return worst
    if args[0] not in COMMANDS:
        print(f"usage: python -m inference_image.bench [{'|'.join(COMMANDS)}] [--help]",
              file=sys.stderr)
        return 2
    return _run(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main())
