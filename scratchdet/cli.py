"""The `scratchdet` command line.

Each subcommand lives in its own module under `scratchdet/commands/` and exposes
``register(subparsers)``, which adds its parser and sets ``run=<function(args) -> int>``.
Heavy imports (numba, matplotlib) happen inside the run functions, so `scratchdet --help` is quick.

Bad input raises `ScratchdetError`; here it becomes a one-line message on stderr and exit status 2.
"""

import argparse
import importlib
import sys

from scratchdet import __version__
from scratchdet.errors import ScratchdetError

# Subcommand modules, in the order `--help` lists them: the whole pipeline at once, then its steps in
# the order they run (data, regions, training, detection, evaluation).
COMMANDS = (
    "scratchdet.commands.demo",
    "scratchdet.commands.data",
    "scratchdet.commands.segment",
    "scratchdet.commands.proposals",
    "scratchdet.commands.train",
    "scratchdet.commands.detect",
    "scratchdet.commands.evaluate",
)


class _OneLineErrors(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr, exit status 2, as scratchdet's own
    (argparse prints the usage first, several lines for a subcommand with many options)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    """The argument parser with every registered subcommand."""
    parser = _OneLineErrors(
        prog="scratchdet",
        description="Classic object detection from scratch in NumPy and Numba.",
    )
    parser.add_argument("--version", action="version", version=f"scratchdet {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    """Entry point of the `scratchdet` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except ScratchdetError as error:
        print(f"scratchdet {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
