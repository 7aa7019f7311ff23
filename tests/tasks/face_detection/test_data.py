"""Face-detection data: the label.txt and json readers (and their errors), synthetic scenes whose
landmarks are where the eyes are drawn, the port's augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resvision.datasets.detection import AnnotationError
from resvision.datasets.face import norm_crop
from resvision.datasets.face_detection import (
    FaceDetectionDataset,
    RetinaFaceTrainTransform,
    SyntheticFaceScenes,
    read_coco_faces,
    read_retinaface_labels,
)

LABELS = "\n".join(
    [
        "# 0--Parade/0_Parade_marchingband_1_849.jpg",
        "449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 "
        "485.174 425.893 0.0 538.357 431.491 0.0 0.82",
        "361 98 263 339" + " -1.0" * 16,
        "# 0--Parade/0_Parade_Parade_0_904.jpg",
        "78 221 7 8",
        "10 10 0 5",
    ]
)


def test_retinaface_labels(tmp_path):
    path = tmp_path / "label.txt"
    path.write_text(LABELS)
    ann = read_retinaface_labels(path)
    assert [ann.file_name(i) for i in range(len(ann))] == [
        "0--Parade/0_Parade_marchingband_1_849.jpg",
        "0--Parade/0_Parade_Parade_0_904.jpg",
    ]
    assert ann.offsets.tolist() == [0, 2, 3]  # the zero-width face is left out
    np.testing.assert_allclose(ann.boxes[0], [449, 330, 571, 479])
    np.testing.assert_allclose(ann.landmarks[0, 4], [538.357, 431.491], rtol=1e-6)
    assert ann.has_landmarks.tolist() == [True, False, False]


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("# a.jpg\n1 2 3 x\n", 2, "not a row of numbers"),
        ("# a.jpg\n1 2 3 4\n1 2 3 4 5 6\n", 3, "got 6"),
        ("1 2 3 4\n# a.jpg\n", 1, "before any"),
        ("# a.jpg\n#\n", 2, "followed by an image path"),
    ],
)
def test_bad_label_lines_name_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "label.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=rf"label\.txt'?, line {line}: .*{what}"):
        read_retinaface_labels(path)


def test_coco_faces_with_keypoints(tmp_path):
    kp = [float(v) for p in range(5) for v in (10 + p, 20 + p, 2)]
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "height": 100, "width": 120}],
        "categories": [{"id": 1, "name": "face"}, {"id": 2, "name": "hand"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [5, 6, 30, 40], "keypoints": kp},
            {
                "id": 2,
                "image_id": 7,
                "category_id": 1,
                "bbox": [50, 6, 30, 40],
                "keypoints": [0] * 15,
            },
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 99, 99], "iscrowd": 1},
            {"id": 4, "image_id": 7, "category_id": 2, "bbox": [1, 1, 5, 5]},
        ],
    }
    (tmp_path / "faces.json").write_text(json.dumps(data))
    ann = read_coco_faces(tmp_path / "faces.json")
    assert ann.num_boxes == 3 and ann.image_ids.tolist() == [7]
    assert ann.has_landmarks.tolist() == [True, False, False]
    assert ann.ignore.tolist() == [False, False, True]
    np.testing.assert_allclose(ann.landmarks[0, 2], [12, 22])
    data["annotations"][0]["keypoints"] = kp[:12]
    (tmp_path / "faces.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"annotation 1: keypoints must be 15 numbers"):
        read_coco_faces(tmp_path / "faces.json")


def test_synthetic_scenes_are_deterministic_and_sized():
    a = SyntheticFaceScenes(seed=2, min_side=96, max_side=128, min_face=12)
    b = SyntheticFaceScenes(seed=2, min_side=96, max_side=128, min_face=12, cache=False)
    ann = a.annotations(12)
    for i in range(12):
        s, t = a.scene(i), b.scene(i)
        assert np.array_equal(s.image, t.image) and np.array_equal(s.landmarks, t.landmarks)
        np.testing.assert_array_equal(ann.boxes[ann.rows(i)], s.boxes)
        heights = s.boxes[:, 3] - s.boxes[:, 1]
        assert len(s.boxes) >= 1 and (heights > 11).all()
        assert (heights <= 0.5 * min(s.image.shape[:2]) + 1).all()
    assert ann.identities.min() >= 0 and ann.has_landmarks.all()


def test_synthetic_landmarks_are_where_the_eyes_are_drawn():
    """Each eye landmark of a large face sits on its iris and pupil: the darkest point (lightly
    smoothed) within 3 px of it is at most a pixel or so away, for nearly every eye."""
    import cv2

    scenes = SyntheticFaceScenes(seed=4, min_side=224, max_side=256, min_face=100, max_faces=2)
    distances = []
    for i in range(12):
        s = scenes.scene(i)
        grey = cv2.GaussianBlur(s.image.astype(np.float32).sum(-1), (3, 3), 0.8)
        for points in s.landmarks:
            assert norm_crop(s.image, points, 112).shape == (112, 112, 3)
            for x, y in points[:2]:
                cx, cy = round(x), round(y)
                window = grey[cy - 3 : cy + 4, cx - 3 : cx + 4]
                dy, dx = np.unravel_index(window.argmin(), window.shape)
                distances.append(np.hypot(cx - 3 + dx - x, cy - 3 + dy - y))
    distances = np.array(distances)
    assert len(distances) >= 20
    assert np.median(distances) < 0.8 and (distances <= 1.5).mean() >= 0.9


def test_augmentation_keeps_faces_and_mirrors_landmarks():
    """Seeded; faces inside the square output; about half the samples mirrored (told by a
    left-to-right brightness ramp), and mirrored or not, the image's left eye and mouth corner
    stay on the left (the flip swaps left and right landmarks)."""
    scenes = SyntheticFaceScenes(seed=1, min_side=128, max_side=160)
    transform = RetinaFaceTrainTransform(image_size=96, photometric=False)
    mirrored = 0
    for seed in range(24):
        s = scenes.scene(seed % 6)
        ramp = np.linspace(0.2, 1.0, s.image.shape[1])[None, :, None]
        image = (s.image * ramp).astype(np.uint8)
        has = np.ones(len(s.boxes), bool)
        out, boxes, points, kept = transform(image, s.boxes, s.landmarks, has, seed)
        again = transform(image, s.boxes, s.landmarks, has, seed)
        assert np.array_equal(out, again[0]) and np.array_equal(boxes, again[1])
        assert out.shape == (96, 96, 3) and len(boxes) == len(points) == len(kept) >= 1
        assert (boxes >= -1e-3).all() and (boxes <= 96 + 1e-3).all()
        assert (points[:, 0, 0] < points[:, 1, 0]).all() and (
            points[:, 3, 0] < points[:, 4, 0]
        ).all()
        mirrored += int(out[:, :48].mean() > out[:, 48:].mean())
    assert 4 <= mirrored <= 20


def test_training_items_drop_crowd_faces(tmp_path):
    import cv2

    image = np.full((64, 80, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    kp = [float(v) for p in range(5) for v in (20 + p, 20 + p, 2)]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 64, "width": 80}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "keypoints": kp},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [45, 10, 30, 30], "iscrowd": 1},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    ds = FaceDetectionDataset(read_coco_faces(tmp_path / "a.json"), tmp_path)
    train = ds[(0, 5)]
    evaluation = ds[0]
    assert len(train["boxes"]) == 1 and len(evaluation["boxes"]) == 2
    assert train["landmarks"].shape == (1, 5, 2) and train["has_landmarks"].tolist() == [True]
    assert evaluation["image"].shape == (3, 64, 80)
