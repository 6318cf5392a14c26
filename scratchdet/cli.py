"""The `scratchdet` command line.

Each subcommand lives in its own module under `scratchdet/commands/` and exposes
``register(subparsers)``, which adds its parser and sets ``run=<function(args) -> int>``.
Heavy imports (numba, matplotlib) happen inside the run functions, so `scratchdet --help` is quick.

Bad input raises `ScratchdetError`; here it becomes a one-line message on stderr and exit status 2, as
does a failure to write the output (a full disk under ``> out.txt``). A closed output pipe (``| head``)
ends the command quietly with status 141, as SIGPIPE would.
"""

import argparse
import importlib
import os
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
    name = "scratchdet"
    try:
        args = parser.parse_args(argv)  # (argparse's own --help, --version and usage errors drop a failed write)
        if not hasattr(args, "run"):
            parser.print_help()
            sys.stdout.flush()
            return 0
        name = f"scratchdet {args.command}"
        try:
            status = int(args.run(args) or 0)
        except ScratchdetError as error:
            print(f"{name}: error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        sys.stdout.flush()  # the output's last block, written here where a failure is caught
        return status
    except BrokenPipeError:  # the output's reader stopped (`scratchdet evaluate ... | head -1`): stop quietly
        _discard_output()
        return 128 + 13  # as a shell reports a writer stopped by SIGPIPE
    except OSError as error:
        if error.filename is not None:  # not the output's (the commands name their files): a bug, shown whole
            raise
        _discard_output()
        print(f"{name}: error: cannot write the output: {error.strerror or error}", file=sys.stderr)
        return 2


def _discard_output():
    """Point stdout at the null device: what is still buffered for a closed pipe or a full disk would fail
    again when Python flushes it at exit."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # a stdout without a file descriptor (one captured in a test)
        pass


if __name__ == "__main__":
    sys.exit(main())
