"""Subcommands of the `scratchdet` command line, one module each (see `scratchdet/cli.py`)."""
