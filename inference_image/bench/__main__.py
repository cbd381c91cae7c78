"""python -m inference_image.bench {serving,offline,gpu,cpu} [options]"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = ("serving", "offline", "gpu", "cpu")
    if not args or args[0] not in commands:
        print(f"usage: python -m inference_image.bench {{{','.join(commands)}}} [--help]",
              file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(f"inference_image.bench.{args[0]}")
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
