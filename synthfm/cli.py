"""The ``synthfm`` command line: one subcommand per pipeline stage.

Each stage owns its subcommands in ``synthfm/<stage>/cli.py`` through ``register(subparsers)``,
which adds parsers whose ``func`` default runs the command.  Heavy imports (torch) happen inside
the commands, so ``synthfm --help`` stays fast.

Errors: bad input (:class:`synthfm.io.checks.InputError`, other ``ValueError``, ``OSError``, out of
memory) ends in one line naming the problem and exit code 2; an interrupted command exits with 130; any
other failure prints one line and exits with 1.  ``--debug`` (before or after the command) shows the
traceback instead.  docs/cli_refusals.md lists what each command refuses.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from typing import List, Optional, Set

from synthfm import __version__

STAGE_CLIS = (
    "synthfm.generate.cli",
    "synthfm.train.cli",
    "synthfm.segment.cli",
    "synthfm.evaluate.cli",
    "synthfm.serve.cli",
    "synthfm.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthfm",
        description="SynthFM: promptable medical image segmentation trained on synthetic data only.",
    )
    parser.add_argument("--version", action="version", version=f"synthfm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        try:
            if importlib.util.find_spec(name) is None:  # stage not built yet
                continue
            importlib.import_module(name).register(sub)
        except ImportError:  # its package needs torch at import: the other commands (serve) still say what is missing
            continue
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
    return parser


_NEGATIVE_VALUE = re.compile(r"^-[0-9.]")


def _value_options(parser: argparse.ArgumentParser) -> Set[str]:
    """Option strings (of every command) that take exactly one value."""
    options: Set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                options |= _value_options(command)
        elif action.option_strings and action.nargs is None:
            options.update(action.option_strings)
    return options


def join_negative_values(argv: List[str], options: Set[str]) -> List[str]:
    """``--point -12.5,30,8`` -> ``--point=-12.5,30,8``: argparse would take the value for an option."""
    out: List[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv) and _NEGATIVE_VALUE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _message(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory; use smaller sizes (e.g. --size, --count, --batch-size) or free memory"
    if isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, FileExistsError)) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}; check the path and that the disk is writable and not full"
    return str(exc).strip() or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    from synthfm.utils.progress import Cancelled, close_progress_bars

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(join_negative_values(argv, _value_options(parser)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        try:
            return int(args.func(args) or 0)
        finally:
            close_progress_bars()  # a bar the work left unfinished ends its line before any message below
    except (KeyboardInterrupt, Cancelled) as exc:
        if args.debug:
            raise
        print(f"synthfm {args.command}: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except (ValueError, OSError, MemoryError) as exc:
        # Bad input: say what is wrong and what to do, without a traceback.
        if args.debug:
            raise
        print(f"synthfm {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line, the traceback with --debug
        if args.debug:
            raise
        if "out of memory" in str(exc).lower():  # torch's (CUDA) out-of-memory errors are RuntimeErrors
            print(f"synthfm {args.command}: error: {_message(MemoryError())}", file=sys.stderr)
            return 2
        print(f"synthfm {args.command}: unexpected error: {type(exc).__name__}: {_message(exc)} (run again with "
              "--debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
