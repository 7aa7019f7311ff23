"""Entry point of the ``resvision`` command (and of ``python -m resvision.tools``).

The parser is built from the table in :mod:`.tasks`; building it imports no torch, so ``--help``
answers at once. A command's work happens in its ``run`` function, which imports what it needs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import TYPE_CHECKING

from resvision.tasks.engine.errors import NonFiniteLossError

from .tasks import COMMANDS, VERBS, Command, HelpFormatter, command
from .train_cmd import add_debug_argument, parse_dotted

if TYPE_CHECKING:
    from resvision.tasks.engine.task import Task

# Errors caused by user input: printed as one line plus a hint; --debug shows the traceback.
USER_ERRORS = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def version() -> str:
    try:
        return metadata.version("resvision")
    except metadata.PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown (not installed)"


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    cmd: Command,
    prog: str,
    tasks: Mapping[str, Task] | None,
) -> None:
    p = sub.add_parser(
        name,
        help=cmd.help,
        description=cmd.description,
        prog=f"{prog} {name}",
        add_help=not cmd.passthrough,
        formatter_class=HelpFormatter,
    )
    if cmd.takes_tasks:
        cmd.add_arguments(p, tasks)
    else:
        cmd.add_arguments(p)
    if not cmd.passthrough:
        add_debug_argument(p)
    p.set_defaults(func=cmd.run, passthrough=cmd.passthrough)


def build_parser(tasks: Mapping[str, Task] | None = None) -> argparse.ArgumentParser:
    """The whole command line, from the table :data:`.tasks.COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="resvision",
        description="Downstream vision on residual networks: backbones, detection, "
        "segmentation and face embeddings.",
    )
    parser.add_argument("--version", action="version", version=f"resvision {version()}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for verb, name in COMMANDS:
        cmd = command(verb, name)
        if name is None:
            add_command(sub, verb, cmd, "resvision", tasks)
            continue
        if verb not in groups:
            text, description = VERBS[verb]
            p = sub.add_parser(verb, help=text, description=description)
            groups[verb] = p.add_subparsers(dest="task", metavar=_metavar(verb), required=True)
        add_command(groups[verb], name, cmd, f"resvision {verb}", tasks)
    return parser


def _metavar(verb: str) -> str:
    return {"face": "SUBCOMMAND", "depth": "EXPERIMENT", "benchmark": "NAME"}.get(verb, "TASK")


def _passthrough_args(argv: list[str], args: argparse.Namespace) -> list[str]:
    """Everything after ``VERB TASK`` in the original command line."""
    i = argv.index(args.command)
    return argv[argv.index(args.task, i + 1) + 1 :]


def main(argv: list[str] | None = None, *, tasks: Mapping[str, Task] | None = None) -> int:
    """Run the command line; ``tasks`` adds tasks beyond the built-in ones (tests use a toy)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(tasks)
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.args, extra = _passthrough_args(argv, args), []
    if extra and not getattr(args, "accepts_dotted", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.tasks = tasks
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader's INFO lines
    logging.getLogger("milvus_lite").setLevel(logging.WARNING)  # "server started" per open
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


def run() -> None:
    """The console script: :func:`main`, then a prompt exit. Everything was written and closed
    by then, so the interpreter's teardown (seconds of freeing tensors, worker threads, atexit
    hooks after a long run) is skipped; streams and log handlers are flushed first."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
