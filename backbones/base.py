"""The backbone contract: declared feature levels, norm policies and stage freezing.

A backbone declares ``feature_specs`` (one :class:`FeatureSpec` per emitted level, high
resolution first) and ``forward(x)`` returns ``dict[str, Tensor]`` with exactly those keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

NORM_POLICIES = ("bn", "frozen_bn", "eval_bn", "sync_bn")
STAGES = ("stem", "c2", "c3", "c4", "c5")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature level: its name (``c1``..``c5``), channel count and real stride."""

    name: str
    channels: int
    stride: int


_CONSTANTS: dict = {}  # (Normalization, device, dtype) -> (mean, std) tensors


@dataclass(frozen=True)
class Normalization:
    """How input pixels must be prepared for a set of weights.

    ``x = (pixels / max_pixel_value - mean) / std`` with channels in ``channel_order``.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "RGB"
    max_pixel_value: float = 255.0

    def adapted(self, in_channels: int) -> Normalization:
        """The statistics for an input with ``in_channels`` channels (mean for 1, tiled else)."""
        if in_channels == len(self.mean):
            return self
        if in_channels == 1:
            mean, std = (sum(self.mean) / len(self.mean),), (sum(self.std) / len(self.std),)
        else:
            reps = math.ceil(in_channels / len(self.mean))
            mean = (self.mean * reps)[:in_channels]
            std = (self.std * reps)[:in_channels]
        order = "GRAY" if in_channels == 1 else f"{in_channels}-channel"
        return Normalization(mean, std, order, self.max_pixel_value)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``images: ([N,] C, H, W)`` in ``[0, max_pixel_value]`` -> normalized float tensor.

        Computed as ``(images / max_pixel_value - mean) / std``, the same arithmetic as
        torchvision's transforms on ``[0, 1]`` images, so results match theirs bit for bit.
        """
        x = images.float() / self.max_pixel_value
        mean, std = self.constants(x)
        return (x - mean) / std

    def constants(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean`` and ``std`` as ``(C, 1, 1)`` tensors on ``like``'s device and dtype, made
        once per device: a fresh host-to-GPU copy in every forward would make the host wait for
        the GPU (a synchronous copy) and stall the pipeline."""
        key = (self, like.device, like.dtype)
        if torch.jit.is_tracing() or key not in _CONSTANTS:
            pair = tuple(
                torch.tensor(v, dtype=like.dtype).view(-1, 1, 1).to(like.device)
                for v in (self.mean, self.std)
            )
            if torch.jit.is_tracing():
                return pair
            _CONSTANTS[key] = pair
        return _CONSTANTS[key]

    def describe(self) -> str:
        fmt = ", ".join
        return (
            f"{self.channel_order} /{self.max_pixel_value:g} "
            f"mean=({fmt(f'{m:.3f}' for m in self.mean)}) std=({fmt(f'{s:.3f}' for s in self.std)})"
        )


IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
ARCFACE = Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class Backbone(nn.Module):
    """Base class of every registered backbone.

    Subclasses build their modules, then call :meth:`_init_contract` with the family's full
    list of specs, and implement :meth:`stage_modules` and :meth:`_forward_level`.

    Attributes:
        feature_specs: the emitted levels, high resolution first.
        normalization: input statistics the current weights expect.
        norm_policy: the norm policy in force (one of ``NORM_POLICIES``); not named ``norm``,
            which is the final norm module of the pre-activation families (timm's key names).
        frozen_stages: how many stages (stem, c2, ..) are frozen.
    """

    output_strides: tuple[int, ...] = (8, 16, 32)

    def _init_contract(
        self,
        family_specs: Sequence[FeatureSpec],
        out_levels: Sequence[str] | None,
        normalization: Normalization,
        default_levels: Sequence[str] = ("c2", "c3", "c4", "c5"),
    ) -> None:
        names = [s.name for s in family_specs]
        levels = tuple(default_levels if out_levels is None else out_levels)
        if isinstance(out_levels, str):
            raise ValueError(f"out_levels must be a sequence of level names, got {out_levels!r}")
        bad = [lv for lv in levels if lv not in names]
        if not levels or bad or len(set(levels)) != len(levels):
            raise ValueError(
                f"out_levels={levels!r} is invalid for {type(self).__name__}: "
                f"choose a non-empty subset of {names} without repeats"
            )
        self.family_specs = tuple(family_specs)
        self.feature_specs = tuple(s for s in family_specs if s.name in levels)
        self.out_levels = tuple(s.name for s in self.feature_specs)
        self.normalization = normalization
        self.norm_policy = "bn"
        self.frozen_stages = 0
        # Stages after the last requested level are never run: drop them so that DDP sees no
        # unused parameters and memory is not wasted. Their checkpoint keys are ignored on load.
        last = names.index(self.out_levels[-1])
        self.dropped_levels = tuple(names[last + 1 :])
        for level in self.dropped_levels:
            self._drop_level(level)

    # -- contract -------------------------------------------------------------------------
    @property
    def size_divisibility(self) -> int:
        """The input multiple the emitted levels need to align exactly (max emitted stride)."""
        return max(s.stride for s in self.feature_specs)

    @property
    def out_channels(self) -> dict[str, int]:
        return {s.name: s.channels for s in self.feature_specs}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x: (N, C, H, W)`` normalized -> ``{level: (N, channels, ceil(H/stride), ...)}``."""
        out: dict[str, torch.Tensor] = {}
        wanted = set(self.out_levels)
        for spec in self.family_specs:
            x = self._forward_level(spec.name, x)
            if spec.name in wanted:
                out[spec.name] = x
                if len(out) == len(wanted):
                    break
        return out

    def _forward_level(self, name: str, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _drop_level(self, name: str) -> None:
        raise NotImplementedError

    def stage_modules(self) -> list[list[nn.Module]]:
        """Modules of each stage in order: stem, c2, c3, c4, c5 (dropped stages are empty)."""
        raise NotImplementedError

    # -- what weight loading and heads read (each family declares it) ----------------------
    embedding_head: str = "pooled"  # the face-embedding head the family is made for (heads)

    @property
    def first_conv(self) -> str:
        """State-dict key of the input convolution's weight (adapted when ``in_channels != 3``)."""
        raise NotImplementedError

    @property
    def in_channels(self) -> int:
        """Input channels the first convolution takes."""
        return self.get_parameter(self.first_conv).shape[1]

    def level_prefixes(self) -> dict[str, tuple[str, ...]]:
        """State-dict key prefixes of the modules each level adds (``{"c2": ("layer1.",)}``)."""
        raise NotImplementedError

    def head_keys(self) -> tuple[str, ...]:
        """Checkpoint key prefixes of the classifier that backbone loading drops."""
        return ("fc.",)

    def ignored_keys(self) -> tuple[str, ...]:
        """Checkpoint key prefixes loading skips: the classifier and the dropped stages."""
        prefixes = self.level_prefixes()
        return self.head_keys() + tuple(p for lv in self.dropped_levels for p in prefixes[lv])

    def use_uniform_dilation(self) -> Backbone:
        """Give every 3x3 conv of a dilated stage the stage's dilation.

        torchvision, timm and MMSegmentation (``contract_dilation``) keep the previous dilation
        in the first block of a dilated stage; segmentation-models-pytorch dilates every conv of
        the stage. This switches to the latter (for smp-compatible models). Strides are unchanged.
        """
        for modules in self.stage_modules():
            convs = [
                m
                for mod in modules
                for m in mod.modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1
            ]
            rate = max((c.dilation[0] for c in convs), default=1)
            if rate == 1:
                continue
            for conv in convs:
                conv.dilation = (rate, rate)
                conv.padding = (
                    (conv.kernel_size[0] // 2) * rate,
                    (conv.kernel_size[1] // 2) * rate,
                )
        return self

    # -- norm policy and freezing ---------------------------------------------------------
    def set_norm(self, policy: str) -> Backbone:
        """Apply a norm policy: ``bn``, ``frozen_bn``, ``eval_bn`` or ``sync_bn``."""
        if policy not in NORM_POLICIES:
            raise ValueError(f"norm={policy!r} is not one of {NORM_POLICIES}")
        if self.norm_policy != "bn":
            raise ValueError(
                f"norm policy already set to {self.norm_policy!r}; create a new backbone"
            )
        if policy == "frozen_bn":
            _replace_batchnorm(self, _to_frozen)
            for conv, bn in self.conv_norm_pairs():
                _fold(conv, bn)
        elif policy == "sync_bn":
            _replace_batchnorm(self, _to_sync)
        self.norm_policy = policy
        return self.train(self.training)

    def conv_norm_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(conv, norm)`` pairs where the norm directly follows the convolution in the
        forward pass (frozen norms are folded into such convolutions). Families override."""
        return []

    def freeze(self, frozen_stages: int) -> Backbone:
        """Freeze the first ``frozen_stages`` stages (1 = stem, 2 = stem + c2, .., 5 = all).

        Frozen parameters stop receiving gradients and frozen batch norms keep their running
        statistics; :meth:`train` keeps them in eval mode.
        """
        if not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= len(STAGES):
            raise ValueError(
                f"frozen_stages={frozen_stages!r} must be an int in 0..{len(STAGES)} "
                "(0 = nothing, 1 = stem, 2 = stem + c2, .., 5 = all)"
            )
        self.frozen_stages = frozen_stages
        for modules in self.stage_modules()[:frozen_stages]:
            for module in modules:
                for p in module.parameters():
                    p.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode:
            for modules in self.stage_modules()[: self.frozen_stages]:
                for module in modules:
                    module.eval()
            if self.norm_policy == "eval_bn":
                for m in self.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    # == depth options: zero-initialised residual branches, stochastic depth, activation =====
    # == checkpointing (the logic lives in backbones/depth.py) ================================
    def stage_blocks(self) -> dict[str, nn.Sequential]:
        """The residual blocks of every built stage, by level name (``{"c2": Sequential of
        blocks, ...}``), in forward order. Each block has ``zero_init_last()`` and a
        ``drop_path`` attribute applied to its residual branch."""
        raise NotImplementedError

    def residual_blocks(self) -> list[nn.Module]:
        """Every built residual block, first to last."""
        return [block for blocks in self.stage_blocks().values() for block in blocks]

    def zero_init_residual_branches(self) -> Backbone:
        """Start every residual branch at zero (its last norm's scale, or for pre-activation
        blocks its last convolution), so that every block starts as its shortcut."""
        for block in self.residual_blocks():
            block.zero_init_last()
        return self

    def set_drop_path_rate(self, rate: float) -> Backbone:
        """Stochastic depth: block ``i`` of ``n`` drops its residual branch with probability
        ``rate * i / (n - 1)`` in training (timm's linear rule); off in eval."""
        from .depth import set_drop_path_rate

        set_drop_path_rate(self, rate)
        return self

    def set_activation_checkpointing(self, stages: bool | Sequence[str]) -> Backbone:
        """Recompute the activations of the blocks of ``stages`` (level names, or ``True`` for
        every trainable stage) in the backward pass; see ``backbones.depth``."""
        from .depth import set_activation_checkpointing

        set_activation_checkpointing(self, stages)
        return self

    def extra_repr(self) -> str:
        specs = ", ".join(f"{s.name}:{s.channels}/{s.stride}" for s in self.feature_specs)
        return f"levels=[{specs}], norm={self.norm_policy}, frozen_stages={self.frozen_stages}"


def _to_frozen(bn: _BatchNorm) -> nn.Module:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen.to(bn.weight.device if bn.affine else bn.running_mean.device)


class _FoldedConv2d(nn.Conv2d):
    """A convolution followed by a frozen batch norm, run as one convolution with the norm's
    affine folded into its weight and bias (so gradients reach the convolution's own weight
    exactly as before). The norm module stays where it was, holding its state_dict entries, and
    passes its input through: two elementwise passes over every activation, forward and
    backward, disappear.

    The norm's scale and bias (and, where no gradient is wanted, the folded weight) are kept
    between calls in the dtype the convolution runs in, and remade when any tensor they come
    from is modified or replaced (storage and ``_version`` are part of the key), so loading
    weights or moving the module is seen at once while a training step launches a handful
    fewer kernels per convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self._frozen_norm
        if self.bias is not None or torch.compiler.is_compiling():
            scale, bias = _scale_and_bias(bn)
            if self.bias is not None:
                bias = bias + self.bias * scale
            return self._conv_forward(x, self.weight * scale.view(-1, 1, 1, 1), bias)
        device = x.device.type
        dtype = (
            torch.get_autocast_dtype(device)
            if torch.is_autocast_enabled(device)
            else self.weight.dtype
        )
        frozen = not (self.weight.requires_grad and torch.is_grad_enabled())
        sources = (bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if frozen:
            sources += (self.weight,)
        key = (x.device, dtype, frozen, *((t.data_ptr(), t._version) for t in sources))
        cached = self.__dict__.get("_fold_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                scale, bias = _scale_and_bias(bn)
                bias = bias.to(dtype)
                weight = (self.weight * scale.view(-1, 1, 1, 1)).to(dtype) if frozen else None
            # the sources' storage is held with the result, so no new tensor can take its
            # address while the key names it
            cached = (key, scale.view(-1, 1, 1, 1), bias, weight, [t.detach() for t in sources])
            self.__dict__["_fold_cache"] = cached
        _, scale, bias, weight, _ = cached
        if weight is None:
            weight = self.weight * scale
        return self._conv_forward(x, weight, bias)


def _scale_and_bias(bn: FrozenBatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()  # FrozenBatchNorm2d's arithmetic
    return scale, bn.bias - bn.running_mean * scale


class _FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A frozen batch norm already applied by the convolution before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _fold(conv: nn.Module, bn: nn.Module) -> None:
    if type(conv) is not nn.Conv2d or type(bn) is not FrozenBatchNorm2d:
        return
    conv.__class__ = _FoldedConv2d
    # a plain attribute, not a submodule: the norm stays registered (and saved) where it is
    object.__setattr__(conv, "_frozen_norm", bn)
    bn.__class__ = _FoldedFrozenBatchNorm2d


def _to_sync(bn: _BatchNorm) -> nn.Module:
    return nn.SyncBatchNorm.convert_sync_batchnorm(bn)


def _replace_batchnorm(module: nn.Module, convert) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, convert(child))
        else:
            _replace_batchnorm(child, convert)
