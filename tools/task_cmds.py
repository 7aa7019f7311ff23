"""``resvision predict|export|benchmark <task> ...``: each task parses its own options."""

from __future__ import annotations

import argparse

from .tasks import get_task

VERBS = {
    "predict": "run a trained model on images and write the results",
    "export": "export a trained model (ONNX) and check it against PyTorch",
    "benchmark": "time training and inference against the reference implementation",
}


def add_parsers(sub: argparse._SubParsersAction, task_choices: list[str]) -> None:
    for verb, text in VERBS.items():
        p = sub.add_parser(
            verb,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. `resvision {verb} TASK --help` lists the "
            "task's options.",
            add_help=True,
        )
        p.add_argument("task", choices=task_choices)
        p.add_argument("args", nargs=argparse.REMAINDER, help="the task's options")
        p.set_defaults(func=run, verb=verb)

    p = sub.add_parser(
        "face",
        help="face pipeline: embed, search, verify, cluster, convert",
        description="Face-embedding pipeline: `resvision face {embed,search,verify,cluster,convert} --help`.",
    )
    p.add_argument("args", nargs=argparse.REMAINDER, help="subcommand and its options")
    p.set_defaults(func=run, verb="face", task="face")


def run(args: argparse.Namespace) -> int:
    return get_task(args.task, args.tasks).command(args.verb, list(args.args))
