"""``resvision train|eval <task>`` and ``resvision plot RUN``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from resvision.tasks.engine.config import apply_overrides, merge, read_yaml, to_dict
from resvision.tasks.engine.errors import ConfigError

if TYPE_CHECKING:
    from resvision.tasks.engine.task import Task

from .outputs import ensure_writable
from .tasks import Command, TaskConfigs, get_task, preset_names, task_configs, task_names


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The options every command that builds a config shares."""
    g = p.add_argument_group("configuration (applied in this order)")
    g.add_argument(
        "--preset",
        default=None,
        help="a named preset of the task (default: the task's default preset)",
    )
    g.add_argument(
        "--config", default=None, metavar="YAML", help="a saved config (e.g. RUN/config.yaml)"
    )
    g.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="overrides checked against the config's types, e.g. optim.lr=0.01 data.batch_size=4; "
        "also accepted as --optim.lr 0.01",
    )
    g.add_argument(
        "--data",
        default=None,
        metavar="SOURCE",
        help="shorthand for --set data.source=SOURCE (e.g. synthetic)",
    )
    g.add_argument(
        "--amp",
        choices=("off", "bf16", "fp16"),
        default=None,
        help="mixed precision (runtime.amp); fp16 uses a gradient scaler",
    )
    g.add_argument("--device", default=None, help="runtime.device: auto, cpu, cuda, cuda:N")
    g.add_argument("--seed", type=int, default=None, help="runtime.seed")
    g.add_argument(
        "--deterministic",
        action="store_true",
        help="bit-reproducible CPU runs (runtime.deterministic)",
    )
    g.add_argument(
        "--output-dir",
        default=None,
        help="run folder (runtime.output_dir; default runs/TASK/PRESET)",
    )
    g.add_argument(
        "--print-config", action="store_true", help="print the resolved config as YAML and exit"
    )
    p.set_defaults(accepts_dotted=True)


def add_debug_argument(p: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (SUPPRESS keeps a value given before the command)."""
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The shorthand flags and ``--set`` items as ``key=value`` overrides, in order."""
    out = []
    if args.data is not None:
        out.append(f"data.source={args.data}")
    for flag, key in (
        ("amp", "runtime.amp"),
        ("device", "runtime.device"),
        ("seed", "runtime.seed"),
        ("output_dir", "runtime.output_dir"),
    ):
        if getattr(args, flag) is not None:
            out.append(f"{key}={getattr(args, flag)}")
    if args.deterministic:
        out.append("runtime.deterministic=true")
    return out + list(args.set) + list(getattr(args, "dotted", []))


def resolve_config(
    configs: TaskConfigs, args: argparse.Namespace, base: dict[str, Any] | None = None
) -> Any:
    """preset (or ``base``, a checkpoint's config) -> --config YAML -> overrides -> flags."""
    presets = configs.presets
    if base is not None:
        cfg = merge(configs.config_class(), base)
    else:
        name = args.preset or configs.default
        if name not in presets:
            raise ConfigError(
                f"unknown preset {name!r} for {configs.name}; choose one of {sorted(presets)}"
            )
        cfg = presets[name]()
        if cfg.runtime.output_dir == type(cfg.runtime)().output_dir:
            output_dir = f"runs/{configs.name}/{name}"
            cfg = dataclasses.replace(
                cfg, runtime=dataclasses.replace(cfg.runtime, output_dir=output_dir)
            )
    if args.config:
        cfg = merge(cfg, read_yaml(args.config))
    return apply_overrides(cfg, flag_overrides(args))


def parse_dotted(tokens: list[str]) -> list[str]:
    """``["--optim.lr", "0.01", "--data.source=voc"]`` -> ``["optim.lr=0.01",
    "data.source=voc"]``."""
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or "." not in tok.split("=")[0]:
            raise ConfigError(
                f"unrecognized argument {tok!r}; config keys look like --section.key VALUE"
            )
        if "=" in tok:
            out.append(tok[2:])
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"{tok} needs a value")
            out.append(f"{tok[2:]}={tokens[i + 1]}")
            i += 2
    return out


def presets_epilog(task_choices: list[str], tasks: Mapping[str, Task] | None) -> str:
    lines = [f"{name}: {', '.join(preset_names(name, tasks))}" for name in task_choices]
    return "presets (the first is the default): " + "; ".join(lines)


def _train_arguments(p: argparse.ArgumentParser, tasks: Mapping[str, Task] | None) -> None:
    choices = task_names(tasks)
    p.epilog = presets_epilog(choices, tasks)
    p.add_argument("task", choices=choices)
    add_config_arguments(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue a run: a checkpoint or run folder (no value: the run folder's last.pt); "
        "its saved config is used, with this command's overrides applied",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in a run folder that already holds one (its checkpoints, metrics "
        "and plots are replaced)",
    )


def _eval_arguments(p: argparse.ArgumentParser, tasks: Mapping[str, Task] | None) -> None:
    p.add_argument("task", choices=task_names(tasks))
    p.add_argument("--checkpoint", required=True, help="a checkpoint file or run folder")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    add_config_arguments(p)


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder")


def run_train(args: argparse.Namespace) -> int:
    configs = task_configs(args.task, args.tasks)
    base, resume = None, None
    if args.resume is not None:
        from resvision.tasks.engine.checkpoint import RESUME_ORDER, load_checkpoint

        if args.resume is True:
            probe = resolve_config(configs, args)
            resume = Path(probe.runtime.output_dir) / "last.pt"
            if not resume.is_file():
                raise ConfigError(
                    f"nothing to resume: {resume} does not exist (give --resume CHECKPOINT)"
                )
        else:
            resume = Path(args.resume)
        base = load_checkpoint(resume, task=args.task, order=RESUME_ORDER)["config"]
    cfg = resolve_config(configs, args, base)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    run_dir = Path(cfg.runtime.output_dir)
    if resume is None and (run_dir / "last.pt").exists() and not args.overwrite:
        raise FileExistsError(
            f"run folder {str(run_dir)!r} already holds a run (last.pt): continue it with "
            "--resume, replace it with --overwrite, or choose another --output-dir"
        )
    ensure_writable(run_dir)
    from resvision.tasks.engine.loop import train

    result = train(get_task(args.task, args.tasks), cfg, resume=resume)
    if result.stopped_by:
        return 130 if result.stopped_by == "SIGINT" else 143
    print(f"run folder: {result.run_dir}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from resvision.tasks.engine.checkpoint import load_checkpoint
    from resvision.tasks.engine.evaluation import evaluate_checkpoint

    task = get_task(args.task, args.tasks)
    state = load_checkpoint(args.checkpoint, task=task.name)
    cfg = resolve_config(task_configs(args.task, args.tasks), args, state["config"])
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    metrics = evaluate_checkpoint(task, cfg, state)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from resvision.tasks.engine.plots import plot_run

    for path in plot_run(args.run):
        print(path)
    return 0


TRAIN = Command(
    "train a task",
    _train_arguments,
    run_train,
    description="Train a task from a preset, a saved config and overrides.",
    takes_tasks=True,
)
EVAL = Command(
    "evaluate a checkpoint",
    _eval_arguments,
    run_eval,
    description="Evaluate a checkpoint on its config's validation data (overrides apply).",
    takes_tasks=True,
)
PLOT = Command(
    "plot a run's loss, learning rate and metrics",
    _plot_arguments,
    run_plot,
    description="Write PNG plots of RUN/metrics.jsonl into RUN/plots/.",
)
