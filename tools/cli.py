"""Entry point of the ``resvision`` command (and of ``python -m resvision.tools``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING

from resvision.tasks.engine.errors import NonFiniteLossError

from . import backbones_cmd, demo, depth_cmd, task_cmds, train_cmd
from .tasks import task_names
from .train_cmd import parse_dotted

if TYPE_CHECKING:
    from resvision.tasks.engine.task import Task

# Errors caused by user input: printed as one line plus a hint; --debug shows the traceback.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError)


def version() -> str:
    try:
        return metadata.version("resvision")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown (not installed)"


def build_parser(tasks: Mapping[str, Task] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resvision",
        description="Downstream vision on residual networks: backbones, detection, "
        "segmentation and face embeddings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"resvision {version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    # --debug is also accepted after the command (resvision train detection --debug)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    backbones_cmd.add_parser(sub)
    train_cmd.add_parsers(sub, task_names(tasks))
    task_cmds.add_parsers(sub, task_names(tasks))
    demo.add_parser(sub)
    depth_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None, *, tasks: Mapping[str, Task] | None = None) -> int:
    """Run the command line; ``tasks`` adds tasks beyond the built-in ones (tests use a toy)."""
    parser = build_parser(tasks)
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_dotted", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.tasks = tasks
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.dotted = parse_dotted(extra)
        return int(args.func(args) or 0)
    except (*USER_ERRORS, NonFiniteLossError) as e:
        if getattr(args, "debug", False):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"resvision: error: {message}", file=sys.stderr)
        print("(run with --debug for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resvision: interrupted", file=sys.stderr)
        return 130
