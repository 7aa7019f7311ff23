"""IJB-C on a generated protocol of the real size, from image features: resvision's vectorized
protocol against InsightFace's loops (tests/tasks/face/ijb_reference.py: eval_ijbc.py for 1:1,
ijb_evals.py for 1:N), every figure compared.

The protocol has IJB-C's sizes (469,375 images of 23,124 templates; 15,658,489 template pairs
of which 19,557 genuine, between the 3,531 gallery templates and the 19,593 probe templates;
1:N galleries G1 / G2 of 1,772 / 1,759 templates), 512-d float32 features with lengths that
vary (the norm-kept mode weighs them), medias of one image or of many frames, rows grouped by
template and pairs ordered by template ids as in the official files. ``--ijb-scale`` shrinks
every count. Timed from the image features on (what ``face ijb --features`` computes), and
separately the reading of the meta files.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from resvision.tasks.engine.table import format_table

TESTS = Path(__file__).resolve().parents[1] / "tests" / "tasks" / "face"


def _tests_module(name: str):
    """A module of tests/tasks/face (registered: its dataclasses look themselves up)."""
    key = f"resvision_benchmarks.tests_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, TESTS / f"{name}.py")
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


def _timed(fn, *args, **kwargs):
    """``(result, (wall seconds, CPU seconds of every thread of the process))``: CPU time
    moves little with the machine's load, wall time does."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, np.array([time.perf_counter() - t0, time.process_time() - c0])


def generate_protocol(scale: float, dim: int, seed: int = 0):
    """IJB-C's sizes times ``scale``; pairs in the official file's order."""
    gen = _tests_module("ijb_generated")
    full = gen.IJBC_FULL
    g1, g2 = (max(4, round(n * scale)) for n in full["gallery_templates"])
    probes = max(8, round(full["probe_templates"] * scale))
    images = max(g1 + g2 + probes, round(full["images"] * scale))
    genuine = min(probes, round(full["genuine"] * scale))
    impostors = (g1 + g2 - 1) * probes  # every non-mated (gallery, probe) cell
    pairs = min(genuine + impostors, max(probes, round(full["pairs"] * scale)))
    p = gen.generate(
        gallery_templates=(g1, g2),
        probe_templates=probes,
        images=images,
        dim=dim,
        pairs=pairs,
        genuine=genuine,
        noise=1.5,
        spread=0.5,
        shuffle_rows=False,
        seed=seed,
    )
    order = np.lexsort((p.pairs[:, 1], p.pairs[:, 0]))
    p.pairs, p.labels = p.pairs[order], p.labels[order]
    return gen, p


def run_ours(p):
    """The steps of ``evaluate_ijb`` (faceness applied while pooling)."""
    from resvision.datasets.face.ijb import TemplateSubjects
    from resvision.tasks.face import ijb

    t = {}
    (ids, feats), t["image + template features"] = _timed(
        ijb.template_features, p.features, p.templates, p.medias, weights=p.faceness
    )
    scores, t["pair scores"] = _timed(ijb.pair_scores, ids, feats, p.pairs)

    def roc_and_tars():
        fpr, tpr, _ = ijb.roc_curve(scores, p.labels)
        return ijb.tar_at_fars(fpr, tpr), ijb.roc_auc(fpr, tpr)

    (tars, auc), t["ROC, TAR@FAR"] = _timed(roc_and_tars)
    sets = [TemplateSubjects(n, *g) for n, g in zip(("G1", "G2"), p.galleries)]
    probes = TemplateSubjects("probes", *p.probes)
    (one_n, _), t["1:N (G1, G2)"] = _timed(ijb.evaluate_1n, ids, feats, sets, probes)
    t["1:N (G1, G2)"] += t["image + template features"]  # 1:N alone pools too
    return t, {"tars": tars, "auc": auc, "scores": scores, "one_n": one_n}


def run_reference(p):
    import sklearn.metrics
    import sklearn.preprocessing  # noqa: F401  (both imported before the clock starts)

    ref = _tests_module("ijb_reference")
    t = {}

    def features():
        x = ref.prepare_features(p.features, p.faceness)
        return x, ref.image2template_feature(x, p.templates, p.medias)

    (x, (feats, ids, _)), t["image + template features"] = _timed(features)
    scores, t["pair scores"] = _timed(ref.verification, feats, ids, p.pairs[:, 0], p.pairs[:, 1])
    (tars, auc, _, _), t["ROC, TAR@FAR"] = _timed(ref.tpr_at_fpr, p.labels.astype(int), scores)
    del feats
    one_n, t["1:N (G1, G2)"] = _timed(
        ref.run_1n, x, p.templates, p.medias, p.galleries[0], p.galleries[1], p.probes
    )
    return t, {"tars": [float(v) for v in tars], "auc": auc, "scores": scores, "one_n": one_n}


def _number(value):
    return float(value) if isinstance(value, np.floating | float) else value


def time_meta_reading(gen, p) -> float:
    from resvision.datasets.face.ijb import read_ijb_meta

    with tempfile.TemporaryDirectory() as folder:
        gen.write_meta(Path(folder), p)
        _, took = _timed(read_ijb_meta, folder, "IJBC")
    return float(took[0])


def bench_ijb(*, scale: float = 1.0, dim: int = 512, reference: bool = True, files: bool = True):
    """Print the timing table and whether every figure is identical; returns the rows."""
    t0 = time.perf_counter()
    gen, p = generate_protocol(scale, dim)
    templates = len(np.unique(p.templates))
    print(
        f"\nIJB-C protocol from {dim}-d image features: {len(p.templates):,} images, "
        f"{templates:,} templates, {len(p.labels):,} pairs ({int(p.labels.sum()):,} genuine), "
        f"1:N galleries {len(np.unique(p.galleries[0][0])):,} / "
        f"{len(np.unique(p.galleries[1][0])):,} templates, {len(np.unique(p.probes[0])):,} "
        f"probes (generated in {time.perf_counter() - t0:.0f} s)\n"
    )
    ours, got = run_ours(p)
    theirs, expected = run_reference(p) if reference else ({}, None)
    one_to_one = [s for s in ours if not s.startswith("1:N")]
    ours["1:1 total"] = sum(ours[s] for s in one_to_one)
    if theirs:
        theirs["1:1 total"] = sum(theirs[s] for s in one_to_one)
    rows = []
    for step in [*one_to_one, "1:1 total", "1:N (G1, G2)"]:
        mine = ours[step]
        loop = theirs.get(step)
        rows.append(
            [step, *(loop if loop is not None else ["-", "-"]), *mine]
            + [loop[0] / max(mine[0], 1e-9) if loop is not None else "-"]
        )
    headers = ("step", "loops s", "loops CPU s", "resvision s", "resvision CPU s", "speed-up")
    print(format_table(headers, [[r[0], *map(_number, r[1:])] for r in rows], floatfmt=".2f"))
    print(
        "(s: wall clock; CPU s: the process's CPU time over its threads, which the machine's "
        "load moves less; the matrix products use 2 threads)"
    )
    if files:
        print(
            f"\nreading the meta files (the pairs by np.loadtxt): {time_meta_reading(gen, p):.1f} s"
        )
    table = [["TAR %", *[100 * v for v in got["tars"]], 100 * got["auc"]]]
    keys = ("TPIR@FPIR=0.01", "TPIR@FPIR=0.1", "rank1", "rank5", "rank10")
    print(
        "\n"
        + format_table(
            ["FAR", "1e-06", "1e-05", "0.0001", "0.001", "0.01", "0.1", "AUC %"],
            table,
            floatfmt=".2f",
        )
    )
    print(
        format_table(["%", *keys], [["", *[100 * got["one_n"][k] for k in keys]]], floatfmt=".2f")
    )
    if expected is not None:
        same_11 = got["tars"] == expected["tars"] and got["auc"] == expected["auc"]
        same_1n = all(got["one_n"][k] == expected["one_n"][k] for k in keys)
        diff = float(np.abs(got["scores"] - expected["scores"]).max())
        print(
            f"\nidentical to the loops: TAR@FAR and AUC {'yes' if same_11 else 'NO'}, "
            f"1:N TPIR and rank-N {'yes' if same_1n else 'NO'}; pair cosines within {diff:.1e} "
            "(matrix product vs the loop's sum)"
        )
    return rows
