"""Typed configs: dataclasses, checked overrides, YAML in and out.

Each task config is a dataclass with sections (``model``, ``data``, ``optim``, ``schedule``,
``runtime``). Overrides such as ``optim.lr=0.01`` are parsed against the field's type; an unknown
key lists the valid ones, a wrong value names the expected type.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .files import atomic_write_text

log = logging.getLogger(__name__)


# -- shared sections ---------------------------------------------------------------------------
@dataclass
class OptimConfig:
    """Optimizer. ``lr`` is for ``reference_batch_size`` images per step (see auto_scale_lr)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = False  # weight decay on norm parameters and biases
    auto_scale_lr: bool = True  # lr *= total batch / reference_batch_size
    reference_batch_size: int = 16
    clip_grad_norm: float | None = None  # max global L2 norm of gradients
    accumulate_steps: int = 1  # batches per optimizer step


@dataclass
class ScheduleConfig:
    """Learning-rate schedule by optimizer iteration: linear warmup, then ``policy``."""

    iterations: int = 90000
    policy: Literal["multistep", "cosine", "poly", "constant"] = "multistep"
    steps: tuple[int, ...] = (60000, 80000)  # multistep milestones
    gamma: float = 0.1  # multistep factor
    power: float = 0.9  # poly exponent
    min_lr_ratio: float = 0.0  # cosine/poly floor, as a fraction of the peak lr
    warmup_iterations: int = 1000
    warmup_factor: float = 0.001  # lr factor at iteration 0 of the warmup


@dataclass
class RuntimeConfig:
    """Where and how a run executes."""

    output_dir: str = "runs/train"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
    seed: int = 0
    deterministic: bool = False
    checkpoint_period: int = 1000  # iterations between RUN/last.pt writes (also at epoch ends
    # that are at least checkpoint_period / 10 iterations after the previous write)
    eval_period: int = 0  # iterations between evaluations; 0 = at every epoch end
    best_metric: str = ""  # the evaluation metric that selects best.pt ("": the task's main)
    log_period: int = 20  # iterations between metric records
    sync_bn: bool = False  # batch-norm statistics synchronised across DDP processes (CUDA)
    ema: bool = False  # keep an exponential moving average of the weights
    ema_decay: float = 0.9998
    max_nonfinite: int = 5  # consecutive non-finite losses before training stops
    progress: bool = True  # tqdm progress bar
    tensorboard: bool = True
    log_grad_norms: bool = False  # per-stage gradient norms of the backbone in each record


# -- generic machinery -------------------------------------------------------------------------
def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain ``dict`` of a config (tuples become lists, ready for YAML or a checkpoint)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _accepts_text(tp: Any) -> bool:
    """Whether a field of type ``tp`` takes text as is (so "off" stays "off", not YAML False)."""
    origin = typing.get_origin(tp)
    if tp is str:
        return True
    if origin is Literal:
        return all(isinstance(a, str) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_text(a) for a in typing.get_args(tp))
    return False


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` (from YAML or a command line) against type ``tp``; convert if lossless."""
    origin = typing.get_origin(tp)
    fail = ConfigError(f"{key}={value!r} is not a valid {_type_name(tp)}")
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}={value!r}: choose one of {list(typing.get_args(tp))}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        is_none = value is None or (
            isinstance(value, str) and value.lower() in ("none", "null", "~")
        )
        if is_none and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise fail
    if origin in (tuple, list):
        if isinstance(value, str):
            text = value.strip()
            value = (
                yaml.safe_load(text)
                if text.startswith("[")
                else ([v.strip() for v in text.split(",")] if text else [])
            )
        if not isinstance(value, list | tuple):
            value = [value]
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], key) for v in value]
        elif args:
            if len(value) != len(args):
                raise fail
            items = [_coerce(v, a, key) for v, a in zip(value, args)]
        else:
            items = list(value)
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise fail
        return merge(tp(), value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return text in ("true", "yes", "on", "1")
        raise fail
    if tp in (int, float):
        if isinstance(value, bool):
            raise fail
        if isinstance(value, str):
            try:
                value = float(value) if tp is float else int(value)
            except ValueError:
                raise fail from None
        if tp is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if tp is int and not isinstance(value, int):
            raise fail
        if tp is float and not isinstance(value, int | float):
            raise fail
        return tp(value)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise fail
    if tp is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise fail
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


def valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    """Every overridable dotted key of ``cfg``."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += valid_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def set_value(cfg: Any, key: str, raw: Any, prefix: str = "") -> Any:
    """A copy of ``cfg`` with dotted ``key`` set to ``raw`` (text is parsed for the field type)."""
    head, _, rest = key.partition(".")
    names = [f.name for f in dataclasses.fields(cfg)]
    if head not in names:
        where = f" in {prefix.rstrip('.')}" if prefix else ""
        raise ConfigError(
            f"unknown config key {prefix}{key}; valid keys{where}: "
            f"{', '.join(valid_keys(cfg, prefix))}"
        )
    current, tp = getattr(cfg, head), _hints(type(cfg))[head]
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{prefix}{head} is a value, not a section: use {prefix}{head}=VALUE")
        return dataclasses.replace(cfg, **{head: set_value(current, rest, raw, f"{prefix}{head}.")})
    if dataclasses.is_dataclass(current):
        raise ConfigError(
            f"{prefix}{head} is a section; set one of its keys: "
            f"{', '.join(valid_keys(current, f'{prefix}{head}.'))}"
        )
    value = raw
    if isinstance(raw, str) and not _accepts_text(tp):
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
    return dataclasses.replace(cfg, **{head: _coerce(value, tp, prefix + key)})


def renamed_keys(cfg: Any) -> dict[str, str]:
    """Old dotted keys of a config class and their new names (``renamed_keys`` on the class)."""
    return getattr(type(cfg), "renamed_keys", {})


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply ``["optim.lr=0.01", "data.batch_size=4"]`` to ``cfg`` (old key names are accepted
    with a warning that gives the new one)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        if key in renamed_keys(cfg):
            new = renamed_keys(cfg)[key]
            log.warning("config key %s is now %s", key, new)
            key = new
        cfg = set_value(cfg, key, raw.strip())
    return cfg


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write the fully resolved config as YAML (atomically)."""
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of sections in a YAML config file (checked when merged)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return dict(data)


def load_yaml(cls: type, path: str | Path) -> Any:
    """Read a config written by :func:`save_yaml` (or by hand; missing keys keep defaults)."""
    return merge(cls(), read_yaml(path))


def merge(cfg: Any, data: Mapping[str, Any], prefix: str = "") -> Any:
    """``cfg`` with the values of the nested mapping ``data`` applied (partial is fine).

    Keys a config class lists in ``renamed_keys`` (old dotted key -> new, for files written by
    older versions) are moved to their new place first.
    """
    if not prefix and renamed_keys(cfg):
        data = copy.deepcopy(dict(data))
        for old, new in renamed_keys(cfg).items():
            move_key(data, old, new)
    names = [f.name for f in dataclasses.fields(cfg)]
    updates = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key {prefix}{key}; valid keys: "
                f"{', '.join(prefix + n for n in names)}"
            )
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            updates[key] = merge(current, value, f"{prefix}{key}.")
        else:
            updates[key] = _coerce(value, _hints(type(cfg))[key], prefix + key)
    return dataclasses.replace(cfg, **updates)


def move_key(data: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """Move the dotted key ``old`` of a nested mapping to ``new`` when it holds a value."""
    *old_path, old_name = old.split(".")
    source = data
    for part in old_path:
        source = source.get(part)
        if not isinstance(source, dict):
            return data
    if old_name not in source or isinstance(source[old_name], Mapping):  # absent, or a section
        return data
    value = source.pop(old_name)
    *new_path, new_name = new.split(".")
    target = data
    for part in new_path:
        target = target.setdefault(part, {})
    target.setdefault(new_name, value)
    return data
