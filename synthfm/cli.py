"""The ``synthfm`` command line: one subcommand per pipeline stage.

Each stage owns its subcommands in ``synthfm/<stage>/cli.py`` through ``register(subparsers)``,
which adds parsers whose ``func`` default runs the command.  Heavy imports (torch) happen inside
the commands, so ``synthfm --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import List, Optional

from synthfm import __version__

STAGE_CLIS = (
    "synthfm.generate.cli",
    "synthfm.train.cli",
    "synthfm.segment.cli",
    "synthfm.evaluate.cli",
    "synthfm.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthfm",
        description="SynthFM: promptable medical image segmentation trained on synthetic data only.",
    )
    parser.add_argument("--version", action="version", version=f"synthfm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        if importlib.util.find_spec(name) is None:  # stage not built yet
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        # Bad input: say what is wrong and what to do, without a traceback.
        print(f"synthfm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
