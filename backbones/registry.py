"""The one backbone registry: names -> builders, with close-match errors.

Each family module registers its members when it is imported (``resnet.py``, ``preact.py``,
``iresnet.py``, ``cifar.py``, each through :func:`family_builder`); ``factory.py`` imports
those modules, so :func:`~.factory.create_backbone` and :func:`~.factory.list_backbones` see
every name. ``backbones/__init__.py`` imports nothing eagerly (reading a config needs no
torch). Only backbones are registered; heads, necks and tasks are ordinary classes.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Backbone

BackboneBuilder = Callable[..., "Backbone"]

_REGISTRY: dict[str, BackboneBuilder] = {}


def register_backbone(name: str, builder: BackboneBuilder | None = None) -> Any:
    """Register ``builder`` under ``name``; usable as ``@register_backbone("name")``.

    The builder takes keyword arguments ``out_levels``, ``output_stride`` and ``in_channels``
    and returns a :class:`~resvision.backbones.Backbone` with batch norm and random weights;
    :func:`create_backbone` applies weights, norm policy and freezing on top.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a backbone name must be a non-empty string, got {name!r}")

    def _register(fn: BackboneBuilder) -> BackboneBuilder:
        if name in _REGISTRY:
            raise ValueError(
                f"backbone {name!r} is already registered (by {_REGISTRY[name].__module__}); "
                "choose another name"
            )
        _REGISTRY[name] = fn
        return fn

    return _register(builder) if builder is not None else _register


def family_builder(name: str, cls: type[Backbone], *args: Any, doc: str, **bound: Any) -> Any:
    """The builder of one member of a backbone family, for :func:`register_backbone`:
    ``cls(*args, **bound, **options)``, where ``args`` and ``bound`` say which member (an
    architecture name, blocks per stage, ...) and ``options`` are the keyword arguments
    :func:`create_backbone` passes (``out_levels``, ``output_stride``, ``in_channels``, and
    ``plain`` where ``cls`` takes it). The builder is named ``name``, documented by ``doc`` and
    shows ``cls``'s remaining keyword parameters as its signature."""

    def build(**options: Any) -> Backbone:
        return cls(*args, **bound, **options)

    params = list(inspect.signature(cls).parameters.values())[len(args) :]
    build.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [p for p in params if p.name not in bound], return_annotation=cls
    )
    build.__name__ = build.__qualname__ = name
    build.__module__ = cls.__module__
    build.__doc__ = doc
    return build


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"resnet*d"``), sorted."""
    return sorted((n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)), key=_natural)


def _natural(name: str) -> list:
    """Sort key that orders resnet18 < resnet34 < resnet101 (numbers compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def get_builder(name: str) -> BackboneBuilder:
    """The builder registered under ``name``; ``KeyError`` naming close matches otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `resvision backbones`"
        raise KeyError(f"unknown backbone {name!r}; {hint}") from None
