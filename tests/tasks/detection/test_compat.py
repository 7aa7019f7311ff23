"""torchvision's Faster R-CNN state_dicts load and give the same detections; batched NMS parity."""

from __future__ import annotations

import pytest
import torch
import torchvision

from resvision.tasks.detection import DetectionTask
from resvision.tasks.detection.config import PRESETS
from resvision.tasks.engine.config import apply_overrides


def torchvision_builder(family: str, v2: bool):
    """torchvision's ``{family}_resnet50_fpn`` constructor (``_v2`` with ``v2``)."""
    return getattr(torchvision.models.detection, f"{family}_resnet50_fpn{'_v2' if v2 else ''}")


def _randomized(
    v2: bool,
    build=None,
    min_size: int = 256,
    max_size: int = 384,
    class_scale: float | None = None,
    detections: int = 1000,
):
    """torchvision's model (``build``, default its Faster R-CNN) with seeded random weights that
    produce confident, well-conditioned detections: scores spread below 1 (no saturated, tied
    scores whose order rounding decides; class logits scaled by ``class_scale``) and small box
    deltas (boxes near their anchors and proposals, a few px or more: random full-size deltas
    give sub-pixel-thin boxes whose IoU, hence NMS, rounding flips)."""
    torch.manual_seed(0)
    build = build or torchvision_builder("fasterrcnn", v2)
    model = build(
        weights=None, weights_backbone=None, num_classes=91, min_size=min_size, max_size=max_size
    ).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torchvision.ops.FrozenBatchNorm2d | torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    if class_scale is None:
        class_scale = 0.3 if v2 else 0.75
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(class_scale)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.01)
        model.rpn.head.bbox_pred.weight.mul_(0.01)
    # by default no cut at 100 detections: compare every detection above the score threshold
    model.roi_heads.detections_per_img = detections
    return model


# Both models compute the same function in float32 through different kernels (oneDNN picks them
# by CPU, thread count and batch shape): features differ by about 1e-6 relative (2e-6 at c5
# between oneDNN's and ATen's native convolutions), box coordinates (< 400 px) by about 1e-4 px
# and scores by about 1e-5 (measured: 2e-4 px and 3e-5 at most, with native convolutions in our
# model against oneDNN's in torchvision's). The tolerances keep 30-50x of headroom and are far
# below what a real difference moves: a box-coder weight, an RoIAlign option or a resize
# rounding moves boxes by pixels and scores by percents.
BOX_TOL = 1e-2  # px
SCORE_TOL = 1e-3


def _iou_bounds(a: torch.Tensor, b: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(len(a), len(b))`` lowest and highest IoU of boxes ``a`` and ``b`` when each coordinate
    may move by ``tol`` (IoU does not change when the boxes are scaled back to the image size,
    not even by different x and y factors)."""

    def moved(boxes, sign):  # sign 1 grows each box by tol on every side, -1 shrinks it
        return boxes + sign * tol * boxes.new_tensor([-1, -1, 1, 1])

    def inter(a, b):
        lt = torch.maximum(a[:, None, :2], b[None, :, :2])
        return (torch.minimum(a[:, None, 2:], b[None, :, 2:]) - lt).clamp(min=0).prod(-1)

    def area(x):
        return (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)

    grown_a, grown_b, shrunk_a, shrunk_b = moved(a, 1), moved(b, 1), moved(a, -1), moved(b, -1)
    most, least = inter(grown_a, grown_b), inter(shrunk_a, shrunk_b)
    small_a, small_b = area(shrunk_a)[:, None], area(shrunk_b)[None]
    union_min = torch.maximum(small_a + small_b - most, torch.maximum(small_a, small_b))
    union_max = area(grown_a)[:, None] + area(grown_b)[None] - least
    return least / union_max, most / union_min.clamp(min=1e-12)


def assert_same_detections(
    expected: dict,
    got: dict,
    *,
    score_thresh: float,
    nms_thresh: float,
    top_k: int,
    cuts: tuple[float, ...] = (),
    box_tol: float = BOX_TOL,
    score_tol: float = SCORE_TOL,
    what: str = "detections",
) -> list[tuple[int, int]]:
    """The same set of detections up to float32 rounding: each one has its own match with the
    same label, a score within ``score_tol`` and a box within ``box_tol`` px (equal scores may
    come in any order, so positions are not compared).

    A detection may be missing on one side only where rounding decides whether it exists: its
    score within ``score_tol`` of ``score_thresh``, of the lowest score kept when a side holds
    ``top_k`` detections (the top-k cut) or of one of ``cuts``; or an NMS decision that rounding
    can flip against a same-label detection scored higher or about as high: an overlap within
    rounding of ``nms_thresh``, a score tie (which of two overlapping boxes suppresses the
    other), or a detection that is itself such a difference (what it suppresses follows it).
    Such coincidences are rare (0 to 2 an image measured), so more than 1% of the detections
    fails, as does anything else unmatched: a changed NMS or score threshold, a wrong box or
    score. Returns the matched pairs ``(index in expected, index in got)``."""
    fits = (
        (expected["labels"][:, None] == got["labels"][None])
        & ((expected["scores"][:, None] - got["scores"][None]).abs() <= score_tol)
        & ((expected["boxes"][:, None] - got["boxes"][None]).abs().amax(-1) <= box_tol)
    )
    free = set(range(len(got["scores"])))
    matched = torch.zeros(len(expected["scores"]) + len(got["scores"]), dtype=torch.bool)
    pairs = []
    for i, row in enumerate(fits):
        j = next((j for j in row.nonzero().flatten().tolist() if j in free), None)
        if j is not None:
            free.remove(j)
            pairs.append((i, j))
            matched[i] = matched[len(expected["scores"]) + j] = True
    # every detection of both sides, and which of them are unmatched
    boxes = torch.cat([expected["boxes"], got["boxes"]])
    scores = torch.cat([expected["scores"], got["scores"]])
    labels = torch.cat([expected["labels"], got["labels"]])
    unmatched = (~matched).nonzero().flatten()
    if not len(unmatched):
        return pairs
    cuts = [score_thresh, *cuts] + [
        float(d["scores"].min()) for d in (expected, got) if len(d["scores"]) >= top_k
    ]
    u_scores = scores[unmatched]
    excused = torch.tensor([any(abs(float(s) - c) <= score_tol for c in cuts) for s in u_scores])
    lo, hi = _iou_bounds(boxes[unmatched], boxes, box_tol)  # (U, all)
    contender = (  # might suppress the unmatched one, in one side's rounding at least
        (labels[None] == labels[unmatched][:, None])
        & (scores[None] >= u_scores[:, None] - score_tol)
        & (hi > nms_thresh)
    )
    contender[torch.arange(len(unmatched)), unmatched] = False
    near_threshold, tie = lo <= nms_thresh, scores[None] <= u_scores[:, None] + score_tol
    excused |= (contender & (near_threshold | tie)).any(1)
    while True:  # what an excused difference suppresses (or not) is a difference too
        differs = torch.zeros(len(scores), dtype=torch.bool)
        differs[unmatched[excused]] = True
        more = excused | (contender & differs[None]).any(1)
        if torch.equal(more, excused):
            break
        excused = more
    n_expected = len(expected["scores"])
    lines = [
        f"{what} only in {'expected' if k < n_expected else 'got'}: label {int(labels[k])} "
        f"score {float(scores[k]):.5f} box {[round(float(x), 3) for x in boxes[k]]}"
        for k in unmatched[~excused].tolist()
    ]
    assert not lines, "\n".join(lines[:10]) + (
        f"\n({len(lines)} unmatched of {n_expected} / {len(got['scores'])} {what})"
    )
    n = max(n_expected, len(got["scores"]))
    assert int(excused.sum()) <= max(2, n // 100), (
        f"{int(excused.sum())} of {n} {what} differ where rounding could decide: too many for "
        "a coincidence"
    )
    return pairs


def assert_same_as_torchvision(
    ref, ours, images: list[torch.Tensor], impls=("torchvision", "batched"), compare=None
) -> None:
    """``ours`` gives torchvision's ``ref``'s proposals and detections on ``images`` ((3, H, W)
    in [0, 255]), with each NMS implementation of ``impls``, up to float32 rounding
    (:func:`assert_same_detections`); ``compare(expected, got, pairs)`` checks more of each
    image's outputs (masks) on the matched detections.

    Rounding can flip a decision of the RPN (a per-level top-k cut, NMS, the post-NMS cut), and
    a proposal present on one side only brings detections of its own; so the two stages are
    compared apart: our proposals against torchvision's, then torchvision's RoI heads, run on
    our proposals, against ours."""
    rpn, seen = ref.rpn, {}
    propose, filter_proposals = ours.rpn.propose, rpn.filter_proposals

    def record_ours(*args, **kwargs):  # our proposals: (N, P, 4), scores, valid mask, ...
        seen["ours"] = propose(*args, **kwargs)
        return seen["ours"]

    def record_torchvision(*args, **kwargs):  # torchvision's proposals and their scores
        seen["torchvision"] = filter_proposals(*args, **kwargs)
        return seen["torchvision"]

    def level_cuts(module, args, out):  # each level's score at its pre-NMS top-k cut
        k = rpn.pre_nms_top_n()
        seen["cuts"] = [
            tuple(float(x.sort(descending=True).values[k - 1].sigmoid()) for x in lv if len(x) > k)
            for lv in zip(*(o.flatten(1) for o in out[0]))  # image by image
        ]

    def our_proposals(module, args, out):  # torchvision's RoI heads run on our proposals
        boxes, _, valid, _ = seen["ours"]
        return [b[v] for b, v in zip(boxes, valid)], out[1]

    ours.rpn.propose, rpn.filter_proposals = record_ours, record_torchvision
    hooks = [rpn.head.register_forward_hook(level_cuts), rpn.register_forward_hook(our_proposals)]
    try:
        with torch.no_grad():
            for impl in impls:
                ours.cfg.nms_impl = impl
                got = ours(images)
                expected = ref([img / 255 for img in images])
                boxes, scores, valid, _ = seen["ours"]
                for i, (e, o) in enumerate(zip(expected, got)):
                    assert len(e["boxes"]) > 10  # the comparison is not vacuous
                    tv_boxes, tv_scores = seen["torchvision"][0][i], seen["torchvision"][1][i]
                    assert_same_detections(  # proposals, in the resized image (one label)
                        {
                            "boxes": tv_boxes.cpu(),
                            "scores": tv_scores.cpu(),
                            "labels": torch.zeros(len(tv_scores)),
                        },
                        {
                            "boxes": boxes[i][valid[i]].cpu(),
                            "scores": scores[i][valid[i]].cpu(),
                            "labels": torch.zeros(int(valid[i].sum())),
                        },
                        score_thresh=rpn.score_thresh,
                        nms_thresh=rpn.nms_thresh,
                        top_k=rpn.post_nms_top_n(),
                        cuts=seen["cuts"][i],
                        what="proposals",
                    )
                    pairs = assert_same_detections(
                        {k: v.cpu() for k, v in e.items()},
                        {k: v.cpu() for k, v in o.items()},
                        score_thresh=ref.roi_heads.score_thresh,
                        nms_thresh=ref.roi_heads.nms_thresh,
                        top_k=ref.roi_heads.detections_per_img,
                    )
                    if compare is not None:
                        compare(e, o, pairs)
    finally:
        del ours.rpn.propose, rpn.filter_proposals
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize(
    "v2", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["v1", "v2"]
)
def test_torchvision_fasterrcnn_state_dict_gives_the_same_detections(v2, tmp_path):
    """Same weights, same images: the same proposals and detections as torchvision's model, up
    to float32 rounding (:func:`assert_same_as_torchvision`). Catches any change to what is
    computed (each run once in ours, v1): the box head's NMS threshold 0.5 -> 0.55, 0.45 or
    0.51 (302, 322 and 50 detections unmatched), the RPN's 0.7 -> 0.75 (243 proposals
    unmatched), the score threshold 0.05 -> 0.06 (33 detections); as it would a box coding,
    RoI pooling, resize or normalization change."""
    ref = _randomized(v2)
    torch.save(ref.state_dict(), tmp_path / "tv.pth")
    preset = (
        "fasterrcnn_resnet50_fpn_v2_torchvision" if v2 else "fasterrcnn_resnet50_fpn_torchvision"
    )
    # torchvision builds an untrained model with plain BatchNorm2d (FrozenBatchNorm2d only with
    # pretrained weights): use the same op
    overrides = [
        f"model.weights={tmp_path / 'tv.pth'}",
        "model.test.min_size=256",
        "model.test.max_size=384",
        "model.norm=bn",
        "model.roi_heads.detections_per_img=1000",
    ]
    cfg = apply_overrides(PRESETS[preset](), overrides)
    ours = DetectionTask().build_model(cfg).eval()
    g = torch.Generator().manual_seed(2)
    images = [
        (torch.rand(3, 240, 320, generator=g) * 255).round(),
        (torch.rand(3, 301, 257, generator=g) * 255).round(),
    ]
    assert_same_as_torchvision(ref, ours, images)


EVERYTHING = 10**7


def sample_everything(tv, pre_nms: int, post_nms: int) -> list[str]:
    """Set torchvision's ``tv`` to sample every anchor and proposal (sampling is random in
    both models, so only sampling all of them compares the losses) with these RPN cuts, and
    return the overrides that set ours the same way (weights from ``tv``, nothing frozen)."""
    tv.rpn.fg_bg_sampler.batch_size_per_image = EVERYTHING
    tv.roi_heads.fg_bg_sampler.batch_size_per_image = EVERYTHING
    tv.rpn._pre_nms_top_n["training"], tv.rpn._post_nms_top_n["training"] = pre_nms, post_nms
    return [
        "model.norm=bn",
        "model.weights=none",
        "model.frozen_stages=0",
        f"model.rpn.batch_size_per_image={EVERYTHING}",
        f"model.roi_heads.batch_size_per_image={EVERYTHING}",
        f"model.rpn.pre_nms_top_n_train={pre_nms}",
        f"model.rpn.post_nms_top_n_train={post_nms}",
    ]


def training_losses(tv, ours, images: list[torch.Tensor], targets: list[dict], impl: str):
    """``(ours, torchvision's)`` training losses on ``images`` ((3, H, W) in [0, 255], sizes
    that torchvision's training resize leaves unchanged) with our NMS ``impl``.

    The trunk and FPN normalize with their running statistics: batch statistics of 2 small
    images amplify rounding 100-fold through ResNet-50 (2e-4 relative at c5 between kernels,
    against 5e-6 in eval mode). The heads train, v2's head BatchNorms on the RoIs included.
    Which of the untrained RPN's nearly tied proposals survive the top-k cuts and NMS is
    decided by rounding (a proposal or two an image differ between kernels; with the trunk in
    training mode, flips cascaded through NMS to most of them), and the heads' losses follow
    the proposals: torchvision's RoI heads take ours, so both losses see the same ones (the
    proposals themselves are compared by the inference test)."""
    tv.train(), ours.train()
    tv.backbone.eval(), ours.backbone.eval()
    propose, seen = ours.rpn.propose, {}

    def record(*args, **kwargs):
        seen["ours"] = propose(*args, **kwargs)
        return seen["ours"]

    def our_proposals(module, args, out):
        boxes, _, valid, _ = seen["ours"]
        return [b[v].detach() for b, v in zip(boxes, valid)], out[1]

    ours.rpn.propose = record
    hook = tv.rpn.register_forward_hook(our_proposals)
    try:
        ours.cfg.nms_impl = impl
        got = ours(images, [dict(t) for t in targets])
        expected = tv([img / 255 for img in images], [dict(t) for t in targets])
    finally:
        del ours.rpn.propose
        hook.remove()
    return got, expected


def random_targets(images: list[torch.Tensor], counts, g: torch.Generator, max_wh: int = 80):
    """``counts`` random boxes (16 px or more) and labels in each image."""
    targets = []
    for img, k in zip(images, counts):
        h, w = img.shape[-2:]
        xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = torch.rand(k, 2, generator=g) * max_wh + 16
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1),
                "labels": torch.randint(1, 91, (k,), generator=g),
            }
        )
    return targets


@pytest.mark.parametrize(
    "v2", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["v1", "v2"]
)
def test_training_losses_equal_torchvision_when_every_anchor_and_proposal_is_sampled(v2):
    """Same weights, same images and boxes: the four training losses are torchvision's. Sampling
    is random in both, so every anchor and proposal is sampled (batch sizes above their counts).
    v2's box head has BatchNorm: its batch statistics must come from the sampled RoIs alone.
    Losses differ by 1e-7 to 8e-7 between kernels (native, channels_last, one thread in ours);
    a smooth-L1 beta 10% off (run once, v1) fails loss_box_reg."""
    torch.manual_seed(0)
    tv = torchvision_builder("fasterrcnn", v2)(
        weights=None, weights_backbone=None, num_classes=91, min_size=256, max_size=320
    )
    overrides = sample_everything(tv, 600, 300)
    preset = PRESETS[f"fasterrcnn_resnet50_fpn{'_v2' if v2 else ''}_torchvision"]()
    ours = DetectionTask().build_model(apply_overrides(preset, overrides))
    ours.load_state_dict(tv.state_dict())
    g = torch.Generator().manual_seed(3)
    # both sizes are left unchanged by torchvision's training resize (scale factor 1)
    images = [
        (torch.rand(3, 256, 320, generator=g) * 255).round(),
        (torch.rand(3, 200, 320, generator=g) * 255).round(),
    ]
    targets = random_targets(images, (5, 3), g)
    for impl in ("torchvision", "batched"):
        got, expected = training_losses(tv, ours, images, targets, impl)
        assert set(got) == set(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=2e-4, atol=1e-6, msg=key)
