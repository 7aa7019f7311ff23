"""The face-detection part of ``resvision demo``: RetinaFace trained on synthetic group photos,
then the whole pipeline (detect -> align -> embed -> a face gallery -> cluster identities) on
held-out photos of people the embedding model never saw, with printed figures (BCubed F of both
clustering methods) and drawn pictures."""

from __future__ import annotations

import time
from pathlib import Path

PIPELINE_PHOTOS = 24
PIPELINE_PEOPLE = 6


def train_face_model(out: Path) -> Path:
    """The face demo's embedding run (trained here if the face part did not run)."""
    from resvision.tasks.engine.config import apply_overrides
    from resvision.tasks.engine.loop import train
    from resvision.tasks.face.config import PRESETS
    from resvision.tasks.face.task import FaceTask

    run = out / "face"
    if not (run / "last.pt").is_file():
        print(f"(no face-embedding run in {run}: training the face demo's model first)")
        cfg = apply_overrides(PRESETS["iresnet18_synthetic"](), [f"runtime.output_dir={run}"])
        train(FaceTask(), cfg)
    return run


def cosine_threshold(face_run: Path, far: str = "1e-2") -> float:
    """The cosine that accepts ``far`` of the different-person pairs of the face run's held-out
    verification set (people never seen in training)."""
    from resvision.tasks.engine.config import load_yaml
    from resvision.tasks.face.config import FaceConfig
    from resvision.tasks.face.evaluation import evaluate_embeddings
    from resvision.tasks.face.inference import Embedder
    from resvision.tasks.face.task import FaceTask

    emb = Embedder.from_checkpoint(face_run / "last.pt", device="cpu")
    vset = FaceTask().build_val_set(load_yaml(FaceConfig, face_run / "config.yaml")).sets[0]
    vectors = emb.embed([vset.load(i) for i in range(len(vset))])
    return float(evaluate_embeddings(vectors, vset.issame)[f"threshold_cos@far{far}"])


def build_gallery(folder: Path, found, people: list[str]):
    """The demo's gallery of every detected face (the previous run's replaced): embeddings
    with photo, box, score and landmarks, labelled by person where the face is real."""
    import shutil

    import numpy as np

    from resvision.tasks.face.gallery import Gallery

    shutil.rmtree(folder, ignore_errors=True)  # the demo's own output of an earlier run
    gallery = Gallery.create(folder, found[0].embeddings.shape[1])
    faces = [(i, j) for i, r in enumerate(found) for j in range(len(r.boxes))]
    gallery.add(
        np.concatenate([r.embeddings for r in found]),
        [f"photo_{i}#{j}" for i, j in faces],
        people,
        photos=[f"photo_{i}" for i, _ in faces],
        face_index=[j for _, j in faces],
        boxes=np.concatenate([r.boxes for r in found]),
        scores=np.concatenate([r.scores for r in found]),
        landmarks=np.concatenate([r.landmarks for r in found]),
    )
    return gallery


def demo_face_detection(out: Path) -> None:
    import cv2
    import numpy as np

    from resvision.datasets.face_detection import SyntheticFaceScenes
    from resvision.tasks.engine.config import apply_overrides, load_yaml
    from resvision.tasks.engine.loop import train
    from resvision.tasks.face.clustering import METHODS, cluster_scores
    from resvision.tasks.face.config import FaceConfig
    from resvision.tasks.face.evaluation import purity
    from resvision.tasks.face.inference import Embedder
    from resvision.tasks.face_detection.config import PRESETS
    from resvision.tasks.face_detection.inference import FaceDetector
    from resvision.tasks.face_detection.task import FaceDetectionTask, synthetic_scenes
    from resvision.tasks.face_detection.visualize import draw_faces
    from resvision.tasks.pipelines.face import FacePipeline

    print(
        "\n== Face detection: RetinaFace (resnet18) with five landmarks on synthetic group "
        "photos, then photos -> faces -> embeddings -> identities, CPU ==\n"
    )
    run = out / "face_detection"
    cfg = apply_overrides(PRESETS["retinaface_r18_synthetic"](), [f"runtime.output_dir={run}"])
    t0 = time.perf_counter()
    result = train(FaceDetectionTask(), cfg)
    m = result.metrics
    print(
        f"\ntrained {result.iteration} iterations in {time.perf_counter() - t0:.0f} s: validation "
        f"face AP50 {100 * m['val/AP50']:.1f}, AP {100 * m['val/AP']:.1f}, landmark error "
        f"(NME) {m['val/NME']:.3f}"
    )
    det = FaceDetector.from_checkpoint(run, device="cpu")
    pictures = run / "predictions"
    pictures.mkdir(parents=True, exist_ok=True)
    val = synthetic_scenes(cfg, "val")
    for i in range(6):
        image = val.scene(i).image
        (r,) = det.detect(image, score_threshold=0.5)
        drawn = draw_faces(image, r["boxes"], r["landmarks"], [f"{s:.2f}" for s in r["scores"]])
        cv2.imwrite(str(pictures / f"val_{i}.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f"faces with landmarks drawn: {pictures}; AP table: {run / 'eval' / 'ap.md'}")

    face_run = train_face_model(out)
    face_cfg = load_yaml(FaceConfig, face_run / "config.yaml")
    threshold = cosine_threshold(face_run)
    # group photos of people the embedding model never saw (its held-out identities)
    photos = SyntheticFaceScenes(
        seed=4242,
        min_side=192,
        max_side=256,
        max_faces=4,
        min_face=28,
        num_identities=PIPELINE_PEOPLE,
        identity_seed=face_cfg.data.synthetic_seed + 1,
    )
    scenes = [photos.scene(i) for i in range(PIPELINE_PHOTOS)]
    pipeline = FacePipeline(det, Embedder.from_checkpoint(face_run, device="cpu"))
    t0 = time.perf_counter()
    found = pipeline([s.image for s in scenes], names=[f"photo_{i}" for i in range(len(scenes))])
    took = time.perf_counter() - t0
    people, owner = [], []  # who each detection is ("" for detections that are no face)
    truth = sum(len(s.boxes) for s in scenes)
    for i, (scene, r) in enumerate(zip(scenes, found)):
        for j, box in enumerate(r.boxes):
            lt = np.maximum(box[:2], scene.boxes[:, :2])
            rb = np.minimum(box[2:], scene.boxes[:, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), 1)
            union = np.prod(box[2:] - box[:2]) + np.prod(scene.boxes[:, 2:] - scene.boxes[:, :2], 1)
            iou = inter / (union - inter)
            # a real face (IoU >= 0.5): its person is known
            people.append(f"person {scene.identities[iou.argmax()]}" if iou.max() >= 0.5 else "")
            owner.append((i, j))
    gallery = build_gallery(run / "pipeline" / "people.gallery", found, people)
    real = np.array(people) != ""
    clusters, scores = {}, {}
    for method in METHODS:
        clusters[method] = gallery.cluster(threshold, method)
        scores[method] = cluster_scores(clusters[method][real], np.array(people)[real])
    who = np.unique(np.array(people)[real], return_inverse=True)[1]
    p, inverse = purity(clusters["threshold"][real], who) if real.any() else (0.0, 0.0)
    detected = sum(len(r.boxes) for r in found)
    print(
        f"\npipeline on {len(scenes)} held-out group photos ({truth} faces of {PIPELINE_PEOPLE} "
        f"people the embedding model never saw) in {took:.1f} s: {detected} faces detected, "
        f"aligned, embedded and added to the gallery {gallery.path} ({int(real.sum())} of them "
        f"true faces: {100 * real.sum() / truth:.0f}% recall at IoU 0.5); clustered from each "
        f"face's nearest neighbours at cosine > {threshold:.2f} (FAR 1e-2 on held-out pairs), "
        f"scored on the true faces against their people ({len(set(people) - {''})}):"
    )
    for method in METHODS:
        r = scores[method]
        print(
            f"  {method:17s} {r['clusters']:3d} clusters, BCubed F {100 * r['bcubed_f']:.1f} "
            f"(precision {100 * r['bcubed_precision']:.1f}, recall {100 * r['bcubed_recall']:.1f})"
            + (
                f", purity {100 * p:.1f}%, inverse purity {100 * inverse:.1f}%"
                if method == "threshold"
                else ""
            )
        )
    ids = clusters["chinese-whispers"]
    gallery.close()
    folder = run / "pipeline"
    folder.mkdir(parents=True, exist_ok=True)
    labels = [["?"] * len(r.boxes) for r in found]  # "?": not a real face
    for (i, j), c, person in zip(owner, ids, people):
        if person:
            labels[i][j] = f"id {c}"
    for i in range(min(8, len(scenes))):
        drawn = draw_faces(scenes[i].image, found[i].boxes, found[i].landmarks, labels[i])
        cv2.imwrite(str(folder / f"photo_{i}.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f"photos with every face labelled by its cluster (Chinese whispers): {folder}")
