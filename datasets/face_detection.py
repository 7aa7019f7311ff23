"""Face-detection data: WIDER FACE (RetinaFace's ``label.txt`` and the official validation
``.mat`` files), COCO-style json with five keypoints, synthetic scenes with exact landmarks,
and RetinaFace's training augmentation.

Faces live in flat numpy arrays (:class:`FaceAnnotations`), as detection's boxes do. Boxes are
``x1, y1, x2, y2`` pixel edges; landmarks are pixel coordinates (pixel ``k``'s centre is ``k``,
the convention of ``norm_crop``'s template) in the order left eye, right eye, nose tip, left
and right mouth corner, "left" meaning the image's left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .annotations import BoxAnnotations, offsets_of
from .detection import AnnotationError, _load_json
from .face.synthetic import SyntheticFaces, render_face_parts
from .images import read_first_readable, read_rgb
from .synthetic import make_scene
from .transforms import photometric

log = logging.getLogger(__name__)

WIDER_SETTINGS = ("easy", "medium", "hard")
MIRRORED = [1, 0, 2, 4, 3]  # landmark order after a horizontal flip (left <-> right)


@dataclass
class FaceAnnotations(BoxAnnotations):
    """:class:`~.annotations.BoxAnnotations` of faces (sizes 0 where the source does not say,
    as in ``label.txt``) with each face's landmarks, ignore flag and identity."""

    landmarks: np.ndarray  # (M, 5, 2) float32; zeros where a face has none
    has_landmarks: np.ndarray  # (M,) bool
    ignore: np.ndarray  # (M,) bool: crowd regions, left out of training
    identities: np.ndarray  # (M,) int64: who the face is (synthetic scenes), else -1


def pack_faces(
    file_names: list[str],
    faces: list[list[tuple]],
    *,
    heights: list[int] | None = None,
    widths: list[int] | None = None,
    image_ids: list[int] | None = None,
) -> FaceAnnotations:
    """Per image, a list of ``(box xyxy, landmarks (5, 2) or None, ignore, identity)``."""
    counts = [len(f) for f in faces]
    rows = [face for image in faces for face in image]
    m = len(rows)
    landmarks = np.zeros((m, 5, 2), np.float32)
    has = np.zeros(m, bool)
    for j, row in enumerate(rows):
        if row[1] is not None:
            landmarks[j] = row[1]
            has[j] = True
    n = len(file_names)
    return FaceAnnotations(
        file_names=np.array([f.encode("utf-8") for f in file_names], dtype=bytes),
        image_ids=np.asarray(image_ids if image_ids is not None else range(1, n + 1), np.int64),
        heights=np.asarray(heights if heights is not None else [0] * n, np.int32),
        widths=np.asarray(widths if widths is not None else [0] * n, np.int32),
        offsets=offsets_of(counts),
        boxes=np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
        landmarks=landmarks,
        has_landmarks=has,
        ignore=np.array([bool(r[2]) for r in rows], bool),
        identities=np.array([r[3] for r in rows], np.int64),
    )


# -- WIDER FACE in RetinaFace's label.txt ------------------------------------------------------
def read_retinaface_labels(path: str | os.PathLike) -> FaceAnnotations:
    """RetinaFace's WIDER FACE annotations: ``# relative/path.jpg`` lines, each followed by one
    line per face, ``x y w h`` then either nothing (no landmarks) or five ``x y visibility``
    triples and a score. Landmarks of -1 mean none (the port's rule: the first x is negative):
    such faces train score and box, not landmarks. Faces of zero width or height are left out
    with a warning; anything else malformed is an error that names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file {str(path)!r} does not exist")
    names: list[str] = []
    faces: list[list[tuple]] = []
    degenerate = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        where = f"{str(path)!r}, line {number}"
        if line.startswith("#"):
            name = line[1:].strip()
            if not name:
                raise AnnotationError(f"{where}: '#' must be followed by an image path")
            names.append(name)
            faces.append([])
            continue
        if not names:
            raise AnnotationError(f"{where}: a face line before any '# image/path.jpg' line")
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise AnnotationError(f"{where}: not a row of numbers: {line!r}") from None
        if len(values) not in (4, 19, 20) or not np.isfinite(values).all():
            raise AnnotationError(
                f"{where}: expected 4 numbers (x y w h) or 20 (x y w h, five landmarks as x y "
                f"visibility, score), got {len(values)}: {line!r}"
            )
        x, y, w, h = values[:4]
        if w <= 0 or h <= 0:
            degenerate += 1
            continue
        points = None
        if len(values) > 4 and values[4] >= 0:
            points = np.array(values[4:19], np.float32).reshape(5, 3)[:, :2]
        faces[-1].append(([x, y, x + w, y + h], points, False, -1))
    if not names:
        raise AnnotationError(f"{str(path)!r} names no image ('# path' lines)")
    if degenerate:
        log.warning("%s: %d faces of zero width or height left out", path, degenerate)
    return pack_faces(names, faces)


# -- COCO-style json with five keypoints -------------------------------------------------------
def read_coco_faces(path: str | os.PathLike) -> FaceAnnotations:
    """A COCO-format json whose annotations are faces with ``bbox`` and, optionally,
    ``keypoints`` (15 numbers: five ``x, y, v``; a face has landmarks when all five ``v`` are
    positive). When a category is named "face" only its annotations are read. Crowd
    annotations are kept as ignored regions."""
    path = Path(path)
    try:
        data = _load_json(path)
    except FileNotFoundError:
        raise AnnotationError(f"annotation file {str(path)!r} does not exist") from None
    except ValueError as e:
        raise AnnotationError(f"annotation file {str(path)!r} is not valid json: {e}") from None
    for key in ("images", "annotations"):
        if key not in data:
            raise AnnotationError(f"{str(path)!r} has no '{key}' list: is it a COCO-format file?")
    face_ids = {c["id"] for c in data.get("categories", []) if c.get("name") == "face"}
    try:
        index = {im["id"]: n for n, im in enumerate(data["images"])}
        names = [im["file_name"] for im in data["images"]]
        heights = [int(im["height"]) for im in data["images"]]
        widths = [int(im["width"]) for im in data["images"]]
    except KeyError as e:
        raise AnnotationError(f"{str(path)!r}: an image entry lacks {e}") from None
    faces: list[list[tuple]] = [[] for _ in names]
    for a in data["annotations"]:
        if face_ids and a.get("category_id") not in face_ids:
            continue
        what = f"{str(path)!r}: annotation {a.get('id')}"
        if a.get("image_id") not in index:
            raise AnnotationError(f"{what} names unknown image id {a.get('image_id')}")
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            raise AnnotationError(f"{what} has no bbox of 4 numbers") from None
        points = None
        kp = a.get("keypoints")
        if kp:
            if len(kp) != 15:
                raise AnnotationError(
                    f"{what}: keypoints must be 15 numbers (five x, y, v), got {len(kp)}"
                )
            triples = np.asarray(kp, np.float32).reshape(5, 3)
            if (triples[:, 2] > 0).all():
                points = triples[:, :2]
        faces[index[a["image_id"]]].append(
            ([x, y, x + w, y + h], points, bool(a.get("iscrowd", 0)), -1)
        )
    return pack_faces(
        names, faces, heights=heights, widths=widths, image_ids=[im["id"] for im in data["images"]]
    )


# -- the WIDER FACE validation protocol's ground truth -----------------------------------------
@dataclass
class WiderValSet:
    """The official WIDER FACE val ground truth, image by image in the files' order.

    ``boxes[i]`` is ``(K, 4)`` ``x, y, w, h`` as the .mat stores it; ``keep[setting][i]`` the
    1-based indices of the faces that count in ``setting`` (easy, medium, hard).
    """

    events: list[str]
    names: list[str]  # file names without extension
    boxes: list[np.ndarray]
    keep: dict[str, list[np.ndarray]]

    def __len__(self) -> int:
        return len(self.names)

    def relative_path(self, i: int) -> str:
        return f"{self.events[i]}/{self.names[i]}.jpg"

    def annotations(self) -> FaceAnnotations:
        """The images and boxes as :class:`FaceAnnotations` (no landmarks)."""
        faces = [
            [([x, y, x + w, y + h], None, False, -1) for x, y, w, h in b.reshape(-1, 4)]
            for b in self.boxes
        ]
        return pack_faces([self.relative_path(i) for i in range(len(self))], faces)


def read_wider_val(folder: str | os.PathLike) -> WiderValSet:
    """``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat`` from ``folder`` (the
    evaluation kit's ``ground_truth``), read with scipy."""
    from scipy.io import loadmat

    folder = Path(folder)
    files = ["wider_face_val.mat"] + [f"wider_{s}_val.mat" for s in WIDER_SETTINGS]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise AnnotationError(
            f"{str(folder)!r} lacks {', '.join(missing)}: point data.val_mat_dir at the WIDER "
            "FACE evaluation kit's ground_truth folder"
        )
    try:
        gt = loadmat(str(folder / files[0]))
        settings = {s: loadmat(str(folder / f"wider_{s}_val.mat")) for s in WIDER_SETTINGS}
        events, names, boxes = [], [], []
        keep: dict[str, list[np.ndarray]] = {s: [] for s in WIDER_SETTINGS}
        for e in range(len(gt["event_list"])):
            event = str(gt["event_list"][e][0][0])
            files_e = gt["file_list"][e][0]
            boxes_e = gt["face_bbx_list"][e][0]
            for j in range(len(files_e)):
                events.append(event)
                names.append(str(files_e[j][0][0]))
                boxes.append(np.asarray(boxes_e[j][0], np.float64).reshape(-1, 4))
                for s in WIDER_SETTINGS:
                    kept = np.asarray(settings[s]["gt_list"][e][0][j][0], np.int64).reshape(-1)
                    keep[s].append(kept)
    except (KeyError, IndexError, ValueError) as e:
        raise AnnotationError(
            f"{str(folder)!r}: the .mat files do not have the WIDER FACE layout "
            f"(event_list, file_list, face_bbx_list, gt_list): {e}"
        ) from None
    return WiderValSet(events, names, boxes, keep)


# -- synthetic scenes --------------------------------------------------------------------------
@dataclass
class FaceScene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (K, 4) float32 xyxy
    landmarks: np.ndarray  # (K, 5, 2) float32
    identities: np.ndarray  # (K,) int64


@dataclass
class SyntheticFaceScenes:
    """Scenes of the face task's synthetic people pasted over cluttered backgrounds (the
    detection task's textured shapes and lines), deterministic by seed: 1 to ``max_faces``
    faces per scene, face heights log-uniform from ``min_face`` pixels to half the shorter
    side, never overlapping, with the exact landmarks and box of each. Identities come from
    ``SyntheticFaces(num_identities, seed=identity_seed)``."""

    seed: int = 0
    min_side: int = 128
    max_side: int = 192
    max_faces: int = 5
    min_face: int = 12
    num_identities: int = 100
    identity_seed: int = 1
    cache: bool = True  # keep drawn scenes (about 90 kB each at 160 px): each is drawn once

    def __post_init__(self) -> None:
        self.people = SyntheticFaces(self.num_identities, 1, seed=self.identity_seed)
        self._drawn: dict[int, FaceScene] = {}

    def size(self, index: int) -> tuple[int, int]:
        rng = np.random.default_rng([self.seed, index, 0])
        h, w = rng.integers(self.min_side, self.max_side + 1, size=2)
        return int(h), int(w)

    def scene(self, index: int) -> FaceScene:
        if index in self._drawn:
            return self._drawn[index]
        scene = self._draw(index)
        if self.cache:
            self._drawn[index] = scene
        return scene

    def _draw(self, index: int) -> FaceScene:
        h, w = self.size(index)
        image = make_scene(self.seed * 1_000_003 + index, h, w, max_objects=4).image
        image = image.astype(np.float32)
        rng = np.random.default_rng([self.seed, index, 1])
        boxes, points, who = [], [], []
        for _ in range(int(rng.integers(1, self.max_faces + 1))):
            largest = max(self.min_face, 0.5 * min(h, w))
            target = float(np.exp(rng.uniform(np.log(self.min_face), np.log(largest))))
            person = int(rng.integers(self.num_identities))
            face = render_face_parts(self.people.identity(person), rng, 112)
            scale = target / float(face.box[3] - face.box[1])
            size = max(8, round(112 * scale))
            face = _resized(face, size)
            for _attempt in range(10):
                x0 = round(rng.uniform(-face.box[0], w - face.box[2]))
                y0 = round(rng.uniform(-face.box[1], h - face.box[3]))
                box = face.box + np.array([x0, y0, x0, y0], np.float32)
                if all(not _overlap(box, b, margin=0.15) for b in boxes):
                    break
            else:
                continue
            _paste(image, face.image, face.mask, x0, y0)
            boxes.append(np.clip(box, 0, [w, h, w, h]))
            points.append(face.landmarks + np.array([x0, y0], np.float32))
            who.append(person)
        return FaceScene(
            image=np.clip(image, 0, 255).astype(np.uint8),
            boxes=np.array(boxes, np.float32).reshape(-1, 4),
            landmarks=np.array(points, np.float32).reshape(-1, 5, 2),
            identities=np.array(who, np.int64),
        )

    def annotations(self, num_images: int) -> FaceAnnotations:
        """The faces of scenes ``0 .. num_images - 1`` (each scene is drawn to find them)."""
        faces, heights, widths = [], [], []
        for i in range(num_images):
            s = self.scene(i)
            faces.append(
                [(b, p, False, int(k)) for b, p, k in zip(s.boxes, s.landmarks, s.identities)]
            )
            heights.append(s.image.shape[0])
            widths.append(s.image.shape[1])
        names = [f"synthetic_{i:06d}.png" for i in range(num_images)]
        return pack_faces(names, faces, heights=heights, widths=widths)


def _resized(face, size: int):
    """A rendered 112 px face at ``size`` px (image, mask, landmarks and box moved along)."""
    if size == 112:
        return face
    scale = size / 112
    interpolation = cv2.INTER_AREA if size < 112 else cv2.INTER_LINEAR
    return type(face)(
        image=cv2.resize(face.image, (size, size), interpolation=interpolation),
        landmarks=((face.landmarks + 0.5) * scale - 0.5).astype(np.float32),
        box=(face.box * scale).astype(np.float32),
        mask=cv2.resize(face.mask, (size, size), interpolation=cv2.INTER_LINEAR),
    )


def _overlap(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Whether ``a`` meets ``b`` grown by ``margin`` of its size on every side."""
    gw, gh = (b[2] - b[0]) * margin, (b[3] - b[1]) * margin
    return not (a[2] <= b[0] - gw or a[0] >= b[2] + gw or a[3] <= b[1] - gh or a[1] >= b[3] + gh)


def _paste(canvas: np.ndarray, image: np.ndarray, mask: np.ndarray, x0: int, y0: int) -> None:
    """Blend ``image`` into ``canvas`` (float) at ``(x0, y0)`` through ``mask``, clipped."""
    h, w = canvas.shape[:2]
    s = image.shape[0]
    x1, y1, x2, y2 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    if x1 >= x2 or y1 >= y2:
        return
    part = image[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0].astype(np.float32)
    alpha = mask[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0, None]
    canvas[y1:y2, x1:x2] = canvas[y1:y2, x1:x2] * (1 - alpha) + part * alpha


# -- RetinaFace's training augmentation --------------------------------------------------------
@dataclass
class RetinaFaceTrainTransform:
    """The PyTorch port's ``preproc``, seeded per sample:

    1. a random square crop of 0.3-1.0 of the shorter side (the whole side one time in five)
       that contains at least one face entirely, keeping the faces whose centre lies inside
       (boxes clipped, landmarks clamped to the crop); 250 tries, else the whole image padded
       to a square with ``fill``;
    2. photometric distortion (brightness, contrast, saturation, hue; albumentations);
    3. a horizontal flip half the time, which swaps left and right landmarks;
    4. a resize to ``image_size`` square with one of five interpolations, drawn.

    The crop rule (faces kept by their centre, the crop chosen to contain a whole face) and
    the landmark swap have no albumentations equivalent and are written out here.
    """

    image_size: int = 840
    min_scale: float = 0.3
    photometric: bool = True
    mirror: bool = True
    fill: tuple[int, int, int] = (123, 117, 104)  # the port's BGR mean, as RGB

    def __post_init__(self) -> None:
        self.colour = A.Compose(photometric()) if self.photometric else None

    def __call__(self, image, boxes, landmarks, has_landmarks, seed: int):
        rng = np.random.default_rng(seed)
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        landmarks = np.asarray(landmarks, np.float32).reshape(-1, 5, 2)
        has_landmarks = np.asarray(has_landmarks, bool)
        image, boxes, landmarks, has_landmarks, cropped = self.crop(
            image, boxes, landmarks, has_landmarks, rng
        )
        if self.colour is not None:
            self.colour.set_random_seed(int(rng.integers(2**31)))
            image = self.colour(image=np.ascontiguousarray(image))["image"]
        if not cropped:
            image = self.pad_square(image)
        if self.mirror and rng.random() < 0.5:
            w = image.shape[1]
            image = image[:, ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
            landmarks = landmarks[:, MIRRORED].copy()
            landmarks[..., 0] = w - 1 - landmarks[..., 0]
        h, w = image.shape[:2]
        methods = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST)
        method = (*methods, cv2.INTER_LANCZOS4)[int(rng.integers(5))]
        s = self.image_size
        image = cv2.resize(np.ascontiguousarray(image), (s, s), interpolation=method)
        scale = np.array([s / w, s / h], np.float32)
        boxes = boxes * np.tile(scale, 2)
        landmarks = (landmarks + 0.5) * scale - 0.5
        return image, boxes.astype(np.float32), landmarks.astype(np.float32), has_landmarks

    def crop(self, image, boxes, landmarks, has_landmarks, rng: np.random.Generator):
        h, w = image.shape[:2]
        short = min(h, w)
        areas = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1)
        for _ in range(250 if len(boxes) else 0):
            scale = 1.0 if rng.random() <= 0.2 else rng.uniform(self.min_scale, 1.0)
            size = int(scale * short)
            left = 0 if w == size else int(rng.integers(w - size))
            top = 0 if h == size else int(rng.integers(h - size))
            roi = np.array([left, top, left + size, top + size], np.float32)
            lt = np.maximum(boxes[:, :2], roi[:2])
            rb = np.minimum(boxes[:, 2:], roi[2:])
            inter = np.prod(rb - lt, 1) * (lt < rb).all(1)
            if not (inter / areas >= 1).any():
                continue
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = ((roi[:2] < centres) & (centres < roi[2:])).all(1)
            if not inside.any():
                continue
            kept = np.concatenate(
                [np.maximum(boxes[inside, :2], roi[:2]), np.minimum(boxes[inside, 2:], roi[2:])], 1
            )
            points = np.clip(landmarks[inside] - roi[:2], 0, size)
            crop = image[top : top + size, left : left + size]
            return crop, kept - np.tile(roi[:2], 2), points, has_landmarks[inside], True
        return image, boxes, landmarks, has_landmarks, False

    def pad_square(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        side = max(h, w)
        out = np.empty((side, side, 3), image.dtype)
        out[:] = self.fill
        out[:h, :w] = image
        return out


# -- the dataset -------------------------------------------------------------------------------
class FaceDetectionDataset(Dataset):
    """Images and their faces; training keys ``(index, seed)`` get the seeded transform.

    Items: ``image`` (3, H, W) uint8, ``boxes`` (K, 4), ``landmarks`` (K, 5, 2),
    ``has_landmarks`` (K,), ``index`` and ``skipped`` (unreadable files replaced by the next
    image, when allowed). Ignored (crowd) faces are left out of training targets. ``wider``
    holds the official ground truth when the images are WIDER FACE val's.
    """

    def __init__(
        self,
        ann: FaceAnnotations,
        image_root: str | os.PathLike | None,
        *,
        transform: Callable | None = None,
        skip_bad_images: bool = False,
        scenes: SyntheticFaceScenes | None = None,
        wider: WiderValSet | None = None,
    ) -> None:
        self.ann = ann
        self.wider = wider  # the WIDER FACE val protocol's ground truth of these images
        self.root = Path(image_root) if image_root is not None else None
        self.transform = transform
        self.skip_bad_images = skip_bad_images
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.ann)

    def read_image(self, i: int) -> np.ndarray:
        if self.scenes is not None:
            return self.scenes.scene(i).image.copy()  # the drawn scene stays as it was
        return read_rgb(self.root / self.ann.file_name(i))

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        i, image, skipped = read_first_readable(
            self.read_image, index, len(self), self.skip_bad_images
        )
        rows = self.ann.rows(i)
        boxes, points = self.ann.boxes[rows], self.ann.landmarks[rows]
        has = self.ann.has_landmarks[rows]
        if seed is not None:
            keep = ~self.ann.ignore[rows]
            boxes, points, has = boxes[keep], points[keep], has[keep]
            if self.transform is not None:
                image, boxes, points, has = self.transform(image, boxes, points, has, seed)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(np.asarray(boxes, np.float32).reshape(-1, 4)),
            "landmarks": torch.from_numpy(np.asarray(points, np.float32).reshape(-1, 5, 2)),
            "has_landmarks": torch.from_numpy(np.asarray(has, bool)),
            "index": i,
            "skipped": skipped,
        }
