"""The ``jacket`` command: ``jacket demo | plan | check | bench | train | calibrate``.

The ``jacket`` command, one module per subcommand: ``jacket/cli/<name>.py`` exposes ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. A new command is a new module here and a
name in ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("demo", "plan", "check", "bench", "train", "calibrate")


def _module(name):
    return importlib.import_module(f"jacket.cli.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jacket", description="Jacobian products of composed functions, "
                                     "with hand-written rules, accumulation orders and an optimal planner.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _module(name)
        except ModuleNotFoundError as err:
            if err.name != f"jacket.cli.{name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
