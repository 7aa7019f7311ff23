"""IJB-B / IJB-C evaluation, the figures InsightFace's scripts print, computed without their
Python loops.

1:1 verification follows arcface_torch's ``eval_ijbc.py``:

- image features: the model's embedding of the aligned crop plus that of the mirrored crop
  (flip test), optionally L2-normalized per image (by default the length is kept: it weighs
  good images up), optionally multiplied by the detector's faceness score;
- template features: the images of one media (the frames of one video) averaged, the media
  features of a template summed (media in increasing id order), the sum L2-normalized (float32
  arithmetic up to the template sum, float64 after it, as there);
- the cosine of each template pair, scikit-learn's ``roc_curve`` (whose default
  ``drop_intermediate=True`` keeps only the corners of the curve) and, at each FAR of 1e-6 ..
  1e-1, the TAR of the ROC point whose FPR is nearest (on a tie, the later point of the curve:
  the higher TAR).

1:N identification follows ``recognition/_evaluation_/ijb/ijb_evals.py``, the NIST reading of
the protocol: the two galleries (IJB-C's G1 / G2, IJB-B's S1 / S2) are scored as separate
open-set galleries against all probe templates; TPIR at FPIR (a probe counts when its mated
template scores above every other gallery template and above the threshold that the given
fraction of non-mated probes' best scores exceeds) is the mean of the two galleries, and rank-N
(CMC) is the fraction of probes whose mated template is among the N best, over both galleries.
(``ijb_1n.py`` instead joins G1 and G2 into one gallery and thresholds all non-mated pairs.)

What the loops cost there is done here by sorting once: the images are grouped by (template,
media) with sums accumulated in the same order as NumPy's reductions there (so template
features are bit-identical), the pair scores come from products of the template matrix (in
blocks; a pair's cosine may differ from the loop's in the last bit of its float64), and the ROC
from one sort of the scores. Tests compare every figure with a loop-style implementation of
the scripts (tests/tasks/face/ijb_reference.py).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resvision.datasets.face.ijb import IJBMeta, TemplateSubjects
from resvision.datasets.inputs import InputImage
from resvision.tasks.engine.bulk import run_bulk

from .bulk import EmbeddingsBulk
from .inference import Embedder
from .visualize import save_roc_points_png

log = logging.getLogger(__name__)

FARS = tuple(10.0**-k for k in range(6, 0, -1))  # 1e-06 ... 0.1, as eval_ijbc.py's x_labels
FPIRS = (0.01, 0.1)
RANKS = (1, 5, 10)


def tar_key(far: float) -> str:
    """``TAR@FAR=1e-06`` ... ``TAR@FAR=0.1``: the column names of eval_ijbc.py's table."""
    return f"TAR@FAR={far}"


def tpir_key(fpir: float) -> str:
    return f"TPIR@FPIR={fpir}"


# -- features ---------------------------------------------------------------------------------
def image_features(
    features: np.ndarray,
    faceness: np.ndarray | None = None,
    *,
    normalize: bool = False,
    detector_score: bool = True,
) -> np.ndarray:
    """The per-image features that templates pool: ``features (N, D)`` (the flip-summed
    embeddings, or unflipped ones), each L2-normalized when ``normalize`` (eval_ijbc.py's
    ``use_norm_score=False``), times its ``faceness`` score when ``detector_score``. Float32
    stays float32."""
    x = np.asarray(features)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            x = x / np.sqrt(np.sum(x**2, -1, keepdims=True))
    if detector_score:
        if faceness is None:
            raise ValueError("detector_score needs the faceness score of every image")
        x = x * np.asarray(faceness)[:, np.newaxis]
    return x


def _sequential_sums(
    x: np.ndarray,
    rows: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """``out[g] = x[rows[starts[g]]] + x[rows[starts[g] + 1]] + ...`` (``counts[g]`` terms,
    each row times its ``weights`` entry first when given), added in that order in ``x``'s
    dtype: the result of NumPy's sum over axis 0 of those rows, bit for bit. Groups of equal
    size are summed together as an ``(n, k, D)`` block."""
    out = np.empty((len(starts), x.shape[1]), x.dtype)
    for k in np.unique(counts).tolist():
        groups = np.flatnonzero(counts == k)
        step = max(1, (1 << 17) // k)  # at most ~131k rows gathered at once
        for lo in range(0, len(groups), step):
            g = groups[lo : lo + step]
            index = rows[starts[g][:, None] + np.arange(k)]
            block = x[index]
            if weights is not None:
                block *= weights[index][..., None]
            out[g] = block[:, 0] if k == 1 else block.sum(axis=1)
    return out


def l2_normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm as scikit-learn's ``normalize`` computes it (einsum of the
    squares; rows of norm below 10 eps are left as they are), in place."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms < 10 * np.finfo(norms.dtype).eps] = 1.0
    x /= norms[:, None]
    return x


def template_features(
    features: np.ndarray,
    templates: np.ndarray,
    medias: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(template ids (T,) sorted, features (T, D) float64 unit length)``: the images of each
    (template, media) averaged, the media of each template summed, the sum normalized. With
    ``weights`` (the faceness scores) each image's feature is multiplied by its weight first,
    as :func:`image_features` does, without a weighted copy of every feature. Rows where
    ``valid`` is False (images that could not be read) are left out; a template left without
    images has a zero feature (cosine 0 with everything)."""
    templates = np.asarray(templates, np.int64)
    medias = np.asarray(medias, np.int64)
    ids = np.unique(templates)
    rows = np.arange(len(templates)) if valid is None else np.flatnonzero(valid)
    out = np.zeros((len(ids), features.shape[1]), np.float64)
    if not rows.size:
        return ids, out
    order = rows[np.lexsort((medias[rows], templates[rows]))]  # stable: image order kept
    t, m = templates[order], medias[order]
    first = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (m[1:] != m[:-1])])
    counts = np.diff(np.r_[first, len(order)])
    if weights is not None:
        weights = np.asarray(weights, features.dtype)
    media = _sequential_sums(features, order, first, counts, weights)
    # np.mean's division of the sum by the count, in the features' dtype: NumPy computes it in
    # float64 and rounds, which gives the correctly rounded float32 quotient itself
    media /= counts[:, None].astype(media.dtype)
    mt = t[first]
    tfirst = np.flatnonzero(np.r_[True, mt[1:] != mt[:-1]])
    tsum = _sequential_sums(media, np.arange(len(media)), tfirst, np.diff(np.r_[tfirst, len(mt)]))
    out[np.searchsorted(ids, mt[tfirst])] = tsum
    return ids, l2_normalize_rows(out)


def _positions(ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    """Row of each of ``wanted`` in the sorted ``ids`` (a lookup table, not a search)."""
    wanted = np.asarray(wanted, np.int64)
    if not wanted.size:
        return wanted
    table = np.full(int(ids.max()) + 1, -1, np.int64)
    table[ids] = np.arange(len(ids))
    inside = (wanted >= 0) & (wanted < len(table))
    pos = np.where(inside, table[np.where(inside, wanted, 0)], -1)
    if (pos < 0).any():
        raise ValueError(
            f"{what}: template {int(wanted[pos < 0][0])} has no image in face_tid_mid "
            f"({int((pos < 0).sum())} such references)"
        )
    return pos


def pair_scores(
    template_ids: np.ndarray,
    feats: np.ndarray,
    pairs: np.ndarray,
    *,
    block_elements: int = 1 << 25,
) -> np.ndarray:
    """``(P,)`` float64 cosine of each template pair ``pairs (P, 2)`` (template ids), read from
    the Gram matrix of the templates that occur first against those that occur second (IJB
    pairs are gallery x probe templates: one matrix product instead of a gather per pair),
    computed ``block_elements`` entries (256 MB) at a time."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    a = _positions(template_ids, pairs[:, 0], "template pairs")
    b = _positions(template_ids, pairs[:, 1], "template pairs")

    def compact(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        used = np.zeros(len(template_ids), bool)
        used[index] = True
        return np.flatnonzero(used), (np.cumsum(used) - 1)[index]

    ua, ia = compact(a)
    ub, ib = compact(b)
    left, right = feats[ua], feats[ub].T
    scores = np.empty(len(pairs), np.float64)
    rows = max(1, block_elements // max(len(ub), 1))
    in_order = bool((ia[1:] >= ia[:-1]).all())  # pair files list pairs by their first template
    for lo in range(0, len(ua), rows):
        hi = min(lo + rows, len(ua))
        if in_order:
            sel = slice(int(np.searchsorted(ia, lo)), int(np.searchsorted(ia, hi)))
        else:
            sel = np.flatnonzero((ia >= lo) & (ia < hi)) if rows < len(ua) else slice(None)
        block = np.dot(left[lo:hi], right)
        scores[sel] = block.ravel()[(ia[sel] - lo) * len(ub) + ib[sel]]
    return scores


# -- 1:1 --------------------------------------------------------------------------------------
def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` exactly as scikit-learn's ``roc_curve(labels, scores)``
    (``drop_intermediate=True``): one point per distinct score (a pair is accepted when its
    score is at least the threshold) where the curve turns, and ``(0, 0)`` at threshold
    ``inf`` first.

    The curve turns only next to a score held by a genuine pair or by several pairs: every
    other distinct score is one impostor, a step of the same (0, 1) as its neighbours'. So one
    sort of the scores and one pass for equal neighbours suffice; the rest is computed for
    those few scores (IJB-C: some 40,000 of 15.66 million), where scikit-learn builds every
    point and then drops the collinear ones."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels, bool)
    n, n_pos = len(scores), int(labels.sum())
    if n_pos == 0 or n_pos == n:
        raise ValueError(
            f"a ROC curve needs genuine and impostor pairs ({n_pos} genuine, {n - n_pos} impostor)"
        )
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} pair scores are NaN")
    ascending = np.sort(scores)
    repeats = np.flatnonzero(ascending[1:] == ascending[:-1]) + 1  # not the first of its value
    distinct = n - len(repeats)
    genuine = np.sort(scores[labels])
    g_values, g_counts = np.unique(genuine, return_counts=True)
    special = np.union1d(g_values, ascending[repeats])  # the scores that are not a lone impostor
    lo = np.searchsorted(ascending, special, "left")
    g = np.zeros(len(special), np.int64)
    g[np.searchsorted(special, g_values)] = g_counts
    i = np.searchsorted(ascending, special, "right") - lo - g
    group = (distinct - 1 - (lo - np.searchsorted(repeats, lo)))[::-1]  # rank, highest first
    g, i = g[::-1], i[::-1]

    def steps(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(genuine, impostor) pairs of the groups ``p``: (0, 1) unless special."""
        at = np.minimum(np.searchsorted(group, p), len(group) - 1)
        found = group[at] == p
        return np.where(found, g[at], 0), np.where(found, i[at], 1)

    if distinct > 2:
        candidates = np.unique(np.r_[group, group - 1])
        candidates = candidates[(candidates >= 1) & (candidates <= distinct - 2)]
        (g0, i0), (g1, i1) = steps(candidates), steps(candidates + 1)
        turns = candidates[(g0 != g1) | (i0 != i1)]
        keep = np.r_[0, turns, distinct - 1]
    else:
        keep = np.arange(distinct)
    # the score of each kept group: the first position of the distinct value of ascending rank d
    rank = distinct - 1 - keep
    first = rank + np.searchsorted(repeats - np.arange(len(repeats)), rank, side="right")
    thresholds = ascending[first]
    tps = n_pos - np.searchsorted(genuine, thresholds, "left")
    fps = (n - first) - tps
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    return fps / fps[-1], tps / tps[-1], np.r_[np.inf, thresholds]


def nearest_points(fpr: np.ndarray, fars: Sequence[float] = FARS) -> list[int]:
    """The index of the ROC point whose FPR is nearest to each FAR; among equally near points
    the last (eval_ijbc.py searches the reversed curve and keeps the first minimum)."""
    reverse = fpr[::-1]
    return [len(fpr) - 1 - int(np.argmin(np.abs(reverse - far))) for far in fars]


def tar_at_fars(fpr: np.ndarray, tpr: np.ndarray, fars: Sequence[float] = FARS) -> list[float]:
    """eval_ijbc.py's TAR at each FAR: that of the ROC point nearest in FPR."""
    return [float(tpr[i]) for i in nearest_points(fpr, fars)]


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The trapezoidal area under the ROC points (scikit-learn's ``auc``)."""
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    return float(trapezoid(tpr, fpr))


# -- 1:N --------------------------------------------------------------------------------------
def set_features(
    subjects: TemplateSubjects, template_ids: np.ndarray, feats: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(templates, subject of each, features)`` of a 1:N gallery or probe set: its distinct
    templates in increasing order, each with the subject of its first row (ijb_evals.py)."""
    unique, first = np.unique(subjects.templates, return_index=True)
    out = np.zeros((len(unique), feats.shape[1]), feats.dtype)
    table = np.searchsorted(template_ids, unique)
    found = (table < len(template_ids)) & (
        template_ids[np.minimum(table, len(template_ids) - 1)] == unique
    )
    if not found.all():  # a template without images pools to zero, as in the scripts
        log.warning(
            "%d templates of the 1:N %s have no image in face_tid_mid: their features are 0",
            int((~found).sum()),
            subjects.name,
        )
    out[found] = feats[table[found]]
    return unique, subjects.subjects[first], out


@dataclass
class GalleryResult:
    """One open-set gallery against the probes."""

    name: str
    templates: int
    mated: int  # probes whose subject is in the gallery
    non_mated: int
    rank_counts: dict[int, int]  # mated probes found within the first N
    tpir: dict[float, float]  # TPIR at each FPIR
    thresholds: dict[float, float]  # the score each FPIR's threshold is


def open_set_identification(
    probe_feats: np.ndarray,
    probe_subjects: np.ndarray,
    gallery_feats: np.ndarray,
    gallery_subjects: np.ndarray,
    *,
    name: str = "gallery",
    fpirs: Sequence[float] = FPIRS,
    ranks: Sequence[int] = RANKS,
) -> GalleryResult:
    """ijb_evals.py's ``evaluation_1N`` on one gallery (each subject once in it)."""
    gallery_subjects = np.asarray(gallery_subjects)
    values, counts = np.unique(gallery_subjects, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"1:N {name}: subject {values[counts > 1][0]} has {counts.max()} gallery templates; "
            "the protocol enrols each subject once"
        )
    if len(gallery_subjects) < 2:
        raise ValueError(f"1:N {name}: a gallery needs at least two templates")
    similarity = np.dot(probe_feats, gallery_feats.T)
    order = np.argsort(gallery_subjects)
    at = np.minimum(np.searchsorted(gallery_subjects[order], probe_subjects), len(order) - 1)
    mated = gallery_subjects[order][at] == probe_subjects
    if not mated.any() or mated.all():
        raise ValueError(
            f"1:N {name}: {int(mated.sum())} of {len(mated)} probes are of enrolled subjects; "
            "TPIR at FPIR needs probes of enrolled subjects and of others"
        )
    sim = similarity[mated]
    where = order[at[mated]]
    hits = np.arange(len(sim))
    pos = sim[hits, where]
    above = (sim > pos[:, None]).sum(1)  # gallery templates ranked before the mated one
    sim[hits, where] = -np.inf
    correct = pos > sim.max(1)
    best_other = np.sort(similarity[~mated].max(1))[::-1]
    tpir, thresholds = {}, {}
    for fpir in fpirs:
        threshold = best_other[max(int(len(best_other) * fpir) - 1, 0)]
        tpir[fpir] = float((correct & (pos > threshold)).sum() / len(pos))
        thresholds[fpir] = float(threshold)
    return GalleryResult(
        name=name,
        templates=len(gallery_subjects),
        mated=int(mated.sum()),
        non_mated=int((~mated).sum()),
        rank_counts={r: int((above < r).sum()) for r in ranks},
        tpir=tpir,
        thresholds=thresholds,
    )


def evaluate_1n(
    template_ids: np.ndarray,
    feats: np.ndarray,
    galleries: Sequence[TemplateSubjects],
    probes: TemplateSubjects,
    *,
    fpirs: Sequence[float] = FPIRS,
    ranks: Sequence[int] = RANKS,
) -> tuple[dict[str, float], list[GalleryResult]]:
    """The 1:N figures over separate galleries: ``TPIR@FPIR=...`` (mean over galleries) and
    ``rankN`` (probes identified within N, over all galleries, per probe template)."""
    _, probe_subjects, probe_feats = set_features(probes, template_ids, feats)
    results = []
    for gallery in galleries:
        _, subjects, gallery_feats = set_features(gallery, template_ids, feats)
        results.append(
            open_set_identification(
                probe_feats,
                probe_subjects,
                gallery_feats,
                subjects,
                name=gallery.name,
                fpirs=fpirs,
                ranks=ranks,
            )
        )
    metrics = {tpir_key(f): float(np.mean([r.tpir[f] for r in results])) for f in fpirs}
    for r in ranks:
        metrics[f"rank{r}"] = sum(g.rank_counts[r] for g in results) / len(probe_subjects)
    return metrics, results


# -- both -------------------------------------------------------------------------------------
@dataclass
class IJBResult:
    """The figures of one IJB evaluation and what they were computed from."""

    target: str
    metrics: dict[str, float]  # TAR@FAR=..., AUC; TPIR@FPIR=..., rankN when 1:N ran
    scores: np.ndarray  # (P,) cosine of each template pair, in the pair file's order
    labels: np.ndarray  # (P,) bool
    fpr: np.ndarray  # the ROC's points (scikit-learn's, corners only)
    tpr: np.ndarray
    thresholds: np.ndarray  # the score of each point (a pair is accepted at >= threshold)
    points: dict[float, int]  # the point each FAR reads
    images: int
    images_used: int
    templates: int
    galleries: list[GalleryResult] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What ``ijb.json`` holds: the figures, then the counts and settings."""
        out: dict[str, Any] = dict(self.metrics)
        out["operating_points"] = {
            tar_key(f): {
                "far": float(self.fpr[i]),
                "tar": float(self.tpr[i]),
                "threshold": float(self.thresholds[i]),
            }
            for f, i in self.points.items()
        }
        out["counts"] = {
            "images": self.images,
            "images_used": self.images_used,
            "templates": self.templates,
            "pairs": len(self.labels),
            "genuine_pairs": int(self.labels.sum()),
        }
        if self.galleries:
            out["galleries"] = {
                g.name: {
                    "templates": g.templates,
                    "mated_probes": g.mated,
                    "non_mated_probes": g.non_mated,
                    **{tpir_key(f): v for f, v in g.tpir.items()},
                    **{f"threshold@FPIR={f}": v for f, v in g.thresholds.items()},
                    **{f"rank{r}_count": c for r, c in g.rank_counts.items()},
                }
                for g in self.galleries
            }
        out["settings"] = dict(self.settings, target=self.target)
        return out


def valid_rows(features: np.ndarray) -> np.ndarray:
    """Images with a feature: rows without NaN or inf (unreadable images are NaN rows)."""
    return np.isfinite(features).all(1)


def evaluate_ijb(
    meta: IJBMeta,
    features: np.ndarray,
    *,
    normalize: bool = False,
    detector_score: bool = True,
    one_to_n: bool = True,
    fars: Sequence[float] = FARS,
) -> IJBResult:
    """Both protocols on ``features (N, D)``, row ``i`` for image ``i`` of the meta file
    (flip-summed unless flipping was off; NaN rows for images that could not be read)."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) != len(meta):
        raise ValueError(
            f"features of shape {features.shape} for {len(meta)} IJB images: give one row per "
            f"row of {meta.target.lower()}_name_5pts_score.txt, in its order"
        )
    valid = valid_rows(features)
    if not valid.any():
        raise ValueError("no image has a feature (every row is NaN): nothing to evaluate")
    # the faceness weights are applied while pooling (the same products, no weighted copy)
    x = image_features(features, normalize=True, detector_score=False) if normalize else features
    weights = meta.faceness if detector_score else None
    ids, feats = template_features(x, meta.templates, meta.medias, weights=weights, valid=valid)
    scores = pair_scores(ids, feats, meta.pairs)
    fpr, tpr, thresholds = roc_curve(scores, meta.labels)
    points = dict(zip(fars, nearest_points(fpr, fars)))
    metrics = {tar_key(f): float(tpr[i]) for f, i in points.items()}
    metrics["AUC"] = roc_auc(fpr, tpr)
    galleries: list[GalleryResult] = []
    settings: dict[str, Any] = {"normalize": normalize, "detector_score": detector_score}
    if one_to_n and meta.probes is not None:
        try:
            one_n, galleries = evaluate_1n(ids, feats, meta.galleries, meta.probes)
            metrics |= one_n
        except ValueError as e:  # a subset whose galleries cannot be scored: 1:1 still counts
            log.warning("IJB 1:N not computed: %s", e)
            settings["one_to_n_not_computed"] = str(e)
    return IJBResult(
        target=meta.target,
        metrics=metrics,
        scores=scores,
        labels=meta.labels,
        fpr=fpr,
        tpr=tpr,
        thresholds=thresholds,
        points=points,
        images=len(meta),
        images_used=int(valid.sum()),
        templates=len(ids),
        galleries=galleries,
        settings=settings,
    )


def save_ijb_roc_png(result: IJBResult, path: str | Path) -> Path:
    """The 1:1 ROC of ``result`` (its corners), the point each TAR@FAR figure reads marked."""
    name = f"{result.target} 1:1 (AUC {100 * result.metrics['AUC']:.2f}%)"
    curves = {name: (result.fpr, result.tpr, result.thresholds, list(result.points.values()))}
    return save_roc_points_png(
        curves, path, title=f"{result.target} 1:1 ROC (marked: the points TAR@FAR reads)"
    )


# -- the embedding pass -----------------------------------------------------------------------
class AlignedFeaturesBulk(EmbeddingsBulk):
    """The bulk job of :func:`embed_aligned`: one feature row per input, in input order, NaN
    where the image could not be read (the protocol's layout; kept in memory for it)."""

    def __init__(self, embedder: Embedder, rows: dict[str, int], **options: Any) -> None:
        super().__init__(embedder, Path(), **options)
        self.rows = rows
        self.features = np.zeros((0, 0), np.float32)

    def assemble(self, entries) -> dict[str, Any]:
        size = self.embedder.model.embedding_size
        self.features = np.full((len(self.rows), size), np.nan, np.float32)
        for item, entry in entries:
            self.features[self.rows[item.name]] = entry.arrays["embeddings"][0]
        return {"dimension": size}


def embed_aligned(
    embedder: Embedder,
    paths: Sequence[str | Path],
    landmarks: np.ndarray,
    *,
    names: Sequence[str] | None = None,
    flip: bool = True,
    normalize: bool = False,
    batch_size: int = 64,
    workers: int | None = None,
    parts: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    depends_on: dict[str, Any] | None = None,
) -> tuple[np.ndarray, list[int]] | None:
    """``(features (N, D) float32, skipped rows)``: the embedding of each image aligned with
    ``norm_crop`` from its five ``landmarks (N, 5, 2)`` (plus the mirrored crop's with
    ``flip``; not normalized unless ``normalize``: IJB templates weigh images by the length);
    an image that is missing or cannot be decoded gets a NaN row (named in a warning).

    It runs on the engine's bulk path: ``workers`` processes read and align the images, the
    finished batches go to append-only ``parts`` (a temporary folder when not given) that a
    killed pass continues from with ``resume`` (``strict``: stop at an unreadable image), and
    under torchrun the images are shared among the processes: rank 0 returns the features,
    the other ranks None."""
    if len(paths) != len(landmarks):
        raise ValueError(f"{len(paths)} images but {len(landmarks)} sets of landmarks")
    names = [str(n) for n in names] if names is not None else [str(p) for p in paths]
    if len(set(names)) != len(names):  # rows are found by name: make them unique
        names = [f"{i} {n}" for i, n in enumerate(names)]
    inputs = [InputImage(Path(p), n) for p, n in zip(paths, names)]
    rows = {n: i for i, n in enumerate(names)}
    job = AlignedFeaturesBulk(
        embedder,
        rows,
        flip=flip,
        normalize=normalize,
        depends_on={"flip": flip, "normalize": normalize, "batch_size": batch_size}
        | (depends_on or {}),
    )
    landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
    with contextlib.ExitStack() as stack:
        if parts is None:
            if resume:
                raise ValueError("resume needs the parts folder of the run to continue")
            parts = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "parts"
        result = run_bulk(
            job,
            inputs,
            Path(parts),
            batch_size=batch_size,
            workers=workers,
            resume=resume,
            overwrite=overwrite,
            strict=strict,
            extras=landmarks,
            device=embedder.device,
        )
    if result is None:
        return None
    return job.features, sorted(rows[name] for name in result.skipped)
