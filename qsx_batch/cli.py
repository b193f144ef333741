"""The ``qsx-batch`` command line: registers the commands of :mod:`qsx_batch.commands` and runs one, reporting
user mistakes as one paragraph (exit status 2), failed writes such as a full disk as one (exit status 1) and stops
as exit status 130, without tracebacks. Commands with a ``--threads`` option compute: their torch threads are set
here, before they run (:mod:`qsx_batch.threads`)."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import COMMANDS
from .errors import UserError, write_failure
from .interrupts import Interrupted, stop_requests
from .threads import set_wait_policy, use_threads


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    parser = argparse.ArgumentParser(
        prog="qsx-batch",
        description="Search per-layer quantization bit widths or activation-sparsity thresholds of a PyTorch "
                    "network with NSGA-II; results stream into one HDF5 file.",
    )
    parser.add_argument("--version", action="version", version=f"qsx-batch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``qsx-batch`` with ``argv`` (default: the process's arguments); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    set_wait_policy()  # before any command imports torch
    try:
        with stop_requests():
            if hasattr(args, "threads"):
                use_threads(args.threads)
            return args.func(args)
    except UserError as exc:
        print(f"qsx-batch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        failure = write_failure(exc)  # before the run's own handler took over: nothing of it is stored yet
        if failure is None:
            raise
        print(f"qsx-batch {args.command}: error: {failure.message(None, 'the same command')}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Interrupted):
        print(f"\nqsx-batch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
