"""Synthetic identities: procedurally drawn faces, several photos of each, deterministic by
seed (training and held-out verification pairs without any download)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from torch.utils.data import Dataset

from .alignment import resize_square, to_tensor
from .identities import train_augment
from .verification import VerificationSet


def _identity_params(rng: np.random.Generator) -> dict:
    def hsv(h: float, s: float, v: float) -> np.ndarray:
        return cv2.cvtColor(np.uint8([[[h % 180, s, v]]]), cv2.COLOR_HSV2RGB)[0, 0].astype(float)

    return {
        "skin": hsv(rng.uniform(5, 25), rng.uniform(40, 170), rng.uniform(90, 240)),
        "axes": (rng.uniform(27, 38), rng.uniform(36, 47)),
        "hair": hsv(rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(20, 230)),
        "hair_style": int(rng.integers(0, 4)),
        "eye_dx": rng.uniform(13, 21),
        "eye_y": rng.uniform(-10, -2),
        "eye_r": rng.uniform(2.5, 5.5),
        "iris": hsv(rng.uniform(0, 180), rng.uniform(80, 255), rng.uniform(40, 200)),
        "brow_tilt": rng.uniform(-0.35, 0.35),
        "brow_w": int(rng.integers(1, 4)),
        "nose_len": rng.uniform(6, 15),
        "nose_w": rng.uniform(3, 9),
        "mouth_w": rng.uniform(9, 22),
        "mouth_y": rng.uniform(15, 24),
        "mouth_curve": rng.uniform(-5, 5),
        "lips": hsv(rng.uniform(-10, 10), rng.uniform(80, 220), rng.uniform(80, 220)),
        "glasses": bool(rng.random() < 0.2),
        "mole": (rng.uniform(-20, 20), rng.uniform(-10, 25)) if rng.random() < 0.35 else None,
        "ears": rng.uniform(3, 8),
    }


@dataclass
class RenderedFace:
    """A rendered photo and where its face is, in the photo's pixel coordinates."""

    image: np.ndarray  # (size, size, 3) uint8 RGB
    landmarks: np.ndarray  # (5, 2) float32: eyes, nose tip, mouth corners (image left first)
    box: np.ndarray  # (4,) float32 xyxy: the face oval (ears and hair excluded)
    mask: np.ndarray  # (size, size) float32 in [0, 1]: the head (face, ears, hair), feathered


def render_face(identity: dict, rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """One photo of ``identity``: its features drawn at 112 px (eyes near the ArcFace template),
    then a random pose, lighting, colour cast, background, noise and blur."""
    return render_face_parts(identity, rng, size).image


def render_face_parts(identity: dict, rng: np.random.Generator, size: int = 112) -> RenderedFace:
    """:func:`render_face` (the same image from the same ``rng``) with the exact positions of
    its five landmarks, its face box and a mask of the head, moved by the same pose."""
    s = 2  # supersampling for smooth edges
    canvas = np.empty((112 * s, 112 * s, 3), np.float32)
    bg = rng.uniform(20, 235, 3)
    canvas[:] = bg
    gy = np.linspace(-1, 1, 112 * s, dtype=np.float32)[:, None, None]
    canvas += gy * rng.uniform(-30, 30, 3)  # background gradient
    p = identity
    cx, cy = 56.0, 66.0
    pt = lambda x, y: (int((cx + x) * s), int((cy + y) * s))  # noqa: E731
    ax = (int(p["axes"][0] * s), int(p["axes"][1] * s))
    for side in (-1, 1):  # ears
        cv2.ellipse(
            canvas,
            pt(side * p["axes"][0], 0),
            (int(p["ears"] * s), int(p["ears"] * 1.8 * s)),
            0,
            0,
            360,
            p["skin"] * 0.9,
            -1,
        )
    if p["hair_style"] == 2:  # long hair behind the face
        cv2.ellipse(canvas, pt(0, 5), (ax[0] + 8 * s, ax[1] + 6 * s), 0, 0, 360, p["hair"], -1)
    cv2.ellipse(canvas, pt(0, 0), ax, 0, 0, 360, p["skin"], -1)
    if p["hair_style"] in (1, 2):
        cv2.ellipse(
            canvas,
            pt(0, -p["axes"][1] * 0.55),
            (ax[0] + s, int(ax[1] * 0.55)),
            0,
            180,
            360,
            p["hair"],
            -1,
        )
    elif p["hair_style"] == 3:
        cv2.ellipse(
            canvas,
            pt(0, -p["axes"][1] * 0.6),
            (ax[0], int(ax[1] * 0.45)),
            0,
            160,
            380,
            p["hair"],
            -1,
        )
    for side in (-1, 1):
        ex, ey = side * p["eye_dx"], p["eye_y"] - 4
        cv2.ellipse(
            canvas,
            pt(ex, ey),
            (int(p["eye_r"] * 1.6 * s), int(p["eye_r"] * s)),
            0,
            0,
            360,
            (245, 245, 245),
            -1,
        )
        cv2.circle(canvas, pt(ex, ey), int(p["eye_r"] * 0.75 * s), p["iris"], -1)
        cv2.circle(canvas, pt(ex, ey), int(p["eye_r"] * 0.3 * s), (15, 15, 15), -1)
        tilt = side * p["brow_tilt"] * 6
        cv2.line(
            canvas,
            pt(ex - 6, ey - 7 + tilt),
            pt(ex + 6, ey - 7 - tilt),
            p["hair"] * 0.6,
            p["brow_w"] * s,
        )
        if p["glasses"]:
            cv2.circle(canvas, pt(ex, ey), int((p["eye_r"] + 4) * s), (30, 30, 30), s)
    nose = np.array(
        [pt(0, -2), pt(-p["nose_w"] / 2, p["nose_len"]), pt(p["nose_w"] / 2, p["nose_len"])],
        np.int32,
    )
    cv2.fillPoly(canvas, [nose], p["skin"] * 0.8)
    mouth = np.array(
        [
            pt(x, p["mouth_y"] + p["mouth_curve"] * (1 - (2 * x / p["mouth_w"]) ** 2))
            for x in np.linspace(-p["mouth_w"] / 2, p["mouth_w"] / 2, 9)
        ],
        np.int32,
    )
    cv2.polylines(canvas, [mouth], False, p["lips"], 3 * s)
    if p["mole"] is not None:
        cv2.circle(canvas, pt(*p["mole"]), int(1.6 * s), (60, 40, 30), -1)
    image = cv2.resize(canvas, (112, 112), interpolation=cv2.INTER_AREA)
    # pose: rotation, scale, shift; lighting; colour cast; noise; blur
    matrix = cv2.getRotationMatrix2D(
        (56 + rng.uniform(-3, 3), 60 + rng.uniform(-3, 3)),
        rng.uniform(-12, 12),
        rng.uniform(0.9, 1.1),
    )
    matrix[:, 2] += rng.uniform(-4, 4, 2)
    image = cv2.warpAffine(image, matrix, (112, 112), borderMode=cv2.BORDER_REPLICATE)
    gx = np.linspace(-1, 1, 112, dtype=np.float32)[None, :, None]
    image = image * rng.uniform(0.7, 1.25) * (1 + gx * rng.uniform(-0.25, 0.25)) + rng.uniform(
        -20, 20, 3
    )
    image = image + rng.normal(0, rng.uniform(2, 7), image.shape)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 1.0))
    image = np.clip(image, 0, 255).astype(np.uint8)

    # where the drawing put the landmarks: pt() truncates to the 2x canvas, whose pixel u is
    # at u / 2 - 0.25 in the 112 px image's pixel coordinates
    def exact(x: float, y: float) -> tuple[float, float]:
        return np.floor((cx + x) * s) / s - 0.25, np.floor((cy + y) * s) / s - 0.25

    ey = p["eye_y"] - 4
    points = np.array(
        [
            exact(-p["eye_dx"], ey),
            exact(p["eye_dx"], ey),
            exact(0, p["nose_len"]),
            exact(-p["mouth_w"] / 2, p["mouth_y"]),
            exact(p["mouth_w"] / 2, p["mouth_y"]),
        ]
    )
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    oval = np.stack([cx + p["axes"][0] * np.cos(angles), cy + p["axes"][1] * np.sin(angles)], 1)
    head = np.zeros((112, 112), np.float32)
    reach = (p["axes"][0] + p["ears"] + 2, p["axes"][1] + 8)
    cv2.ellipse(head, (56, 62), (int(reach[0]), int(reach[1])), 0, 0, 360, 1.0, -1)
    head = cv2.warpAffine(head, matrix, (112, 112))
    head = cv2.GaussianBlur(head, (5, 5), 1.0)
    moved = lambda pts: pts @ matrix[:, :2].T + matrix[:, 2]  # noqa: E731
    scale = size / 112
    to_size = lambda pts: (pts + 0.5) * scale - 0.5  # noqa: E731  (cv2.resize's mapping)
    corners = moved(oval)
    box = np.concatenate([corners.min(0), corners.max(0)])
    return RenderedFace(
        image=resize_square(image, size),
        landmarks=to_size(moved(points)).astype(np.float32),
        box=((box + np.array([0.5, 0.5, 0.5, 0.5])) * scale).astype(np.float32),
        mask=resize_square(head, size) if size != 112 else head,
    )


class SyntheticFaces(Dataset):
    """``num_identities`` procedurally generated people, ``images_per_identity`` photos each,
    deterministic by seed: each identity has its own face shape, skin, hair, eyes, brows, nose,
    mouth and marks; each photo its own pose, lighting, colour cast, background and noise."""

    def __init__(
        self,
        num_identities: int,
        images_per_identity: int,
        *,
        image_size: int = 112,
        seed: int = 0,
        augment: Callable | None = train_augment,
    ) -> None:
        self.num_identities = num_identities
        self.per_identity = images_per_identity
        self.image_size = image_size
        self.seed = seed
        self.augment = augment
        self._params: dict[int, dict] = {}

    @property
    def num_classes(self) -> int:
        return self.num_identities

    def __len__(self) -> int:
        return self.num_identities * self.per_identity

    def identity(self, label: int) -> dict:
        if label not in self._params:
            self._params[label] = _identity_params(np.random.default_rng([self.seed, label]))
        return self._params[label]

    def render(self, label: int, shot: int) -> np.ndarray:
        return render_face(
            self.identity(label),
            np.random.default_rng([self.seed, label, shot, 1]),
            self.image_size,
        )

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        label, shot = divmod(index, self.per_identity)
        image = self.render(label, shot)
        if seed is not None and self.augment is not None:
            image = self.augment(image, seed)
        return {"image": to_tensor(image), "label": label}

    def verification_set(self, num_pairs: int, *, seed: int = 1) -> VerificationSet:
        """``num_pairs`` pairs (half same, half different identity) of these identities."""
        rng = np.random.default_rng([self.seed, seed, 7])
        shots = []
        issame = []
        for k in range(num_pairs):
            a = int(rng.integers(self.num_identities))
            same = k % 2 == 0
            b = a if same else int((a + rng.integers(1, self.num_identities)) % self.num_identities)
            i, j = rng.choice(self.per_identity, 2, replace=False)
            shots += [(a, int(i)), (b, int(j))]
            issame.append(same)
        return VerificationSet(
            f"synthetic_{seed}",
            lambda n: self.render(*shots[n]),
            np.asarray(issame),
            image_size=self.image_size,
            count=len(shots),
        )
