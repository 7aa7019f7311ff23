"""The face-detection part of ``resvision demo``: RetinaFace trained on synthetic group photos,
then the whole pipeline (detect -> align -> embed -> cluster identities) on held-out photos of
people the embedding model never saw, with a printed figure and drawn pictures."""

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


def demo_face_detection(out: Path) -> None:
    import cv2
    import numpy as np

    from resvision.datasets.face_detection import SyntheticFaceScenes
    from resvision.tasks.engine.config import apply_overrides, load_yaml
    from resvision.tasks.engine.loop import train
    from resvision.tasks.face.config import FaceConfig
    from resvision.tasks.face.evaluation import purity
    from resvision.tasks.face.inference import Embedder, cluster
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
    vectors, people, owner = [], [], []  # the detections that are real faces
    truth = sum(len(s.boxes) for s in scenes)
    for i, (scene, r) in enumerate(zip(scenes, found)):
        for j, (box, vector) in enumerate(zip(r.boxes, r.embeddings)):
            lt = np.maximum(box[:2], scene.boxes[:, :2])
            rb = np.minimum(box[2:], scene.boxes[:, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), 1)
            union = np.prod(box[2:] - box[:2]) + np.prod(scene.boxes[:, 2:] - scene.boxes[:, :2], 1)
            iou = inter / (union - inter)
            if iou.max() >= 0.5:  # a real face: its person is known
                vectors.append(vector)
                people.append(int(scene.identities[iou.argmax()]))
                owner.append((i, j))
    ids = cluster(np.array(vectors), threshold) if vectors else np.zeros(0, int)
    p, inverse = purity(ids, people) if vectors else (0.0, 0.0)
    detected = sum(len(r.boxes) for r in found)
    print(
        f"\npipeline on {len(scenes)} held-out group photos ({truth} faces of {PIPELINE_PEOPLE} "
        f"people the embedding model never saw) in {took:.1f} s: {detected} faces detected, "
        f"aligned and embedded, {len(vectors)} of them true faces "
        f"({100 * len(vectors) / truth:.0f}% recall at IoU 0.5); clustered at cosine >= "
        f"{threshold:.2f} (FAR 1e-2 on held-out pairs): {len(set(ids.tolist()))} clusters for "
        f"{len(set(people))} people, purity "
        f"{100 * p:.1f}%, inverse purity {100 * inverse:.1f}%"
    )
    folder = run / "pipeline"
    folder.mkdir(parents=True, exist_ok=True)
    labels = [["?"] * len(r.boxes) for r in found]  # "?": not a real face
    for (i, j), c in zip(owner, ids):
        labels[i][j] = f"id {c}"
    for i in range(min(8, len(scenes))):
        drawn = draw_faces(scenes[i].image, found[i].boxes, found[i].landmarks, labels[i])
        cv2.imwrite(str(folder / f"photo_{i}.png"), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    print(f"photos with every face labelled by its cluster: {folder}")
