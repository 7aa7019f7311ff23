"""The commands as a new user meets them: no user file is ever lost, every input gets its own
output, one bad item does not stop a batch, errors are one line naming the file and the fix,
and every task's commands behave the same way. Numbers refer to the items of the issue that
asked for each behaviour ("Safe, consistent commands")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resvision.tasks.engine.config import apply_overrides
from resvision.tasks.engine.loop import train
from resvision.tools.cli import main


def _photo(path: Path, size=(40, 52), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = (np.random.default_rng(seed).random((*size, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """img.jpg, img.png, sub1/img.jpg, sub2/img.jpg: four inputs, one name."""
    root = tmp_path / "photos"
    for i, rel in enumerate(("img.jpg", "img.png", "sub1/img.jpg", "sub2/img.jpg")):
        _photo(root / rel, seed=i)
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


# -- 1. outputs never replace an input or an existing output ----------------------------------
@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_out_equal_to_or_inside_the_input_folder_is_refused(task, seg_run, det_run, photos, capsys):
    run = seg_run if task == "segmentation" else det_run
    before = _snapshot(photos)
    for out in (photos, photos / "sub1", photos / "pred"):
        argv = ["predict", task, str(photos), "--checkpoint", str(run), "--out", str(out)]
        assert main(argv) == 2
        assert "input folder" in capsys.readouterr().err
    assert _snapshot(photos) == before


def test_existing_outputs_need_overwrite(seg_run, photos, tmp_path, capsys):
    argv = ["predict", "segmentation", str(photos), "--checkpoint", str(seg_run)]
    assert main([*argv, "--out", str(tmp_path / "pred")]) == 0
    written = _snapshot(tmp_path / "pred")
    (tmp_path / "pred" / "img.jpg.png").write_bytes(b"mine")
    assert main([*argv, "--out", str(tmp_path / "pred")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "pred" / "img.jpg.png").read_bytes() == b"mine"
    assert main([*argv, "--out", str(tmp_path / "pred"), "--overwrite"]) == 0
    assert _snapshot(tmp_path / "pred").keys() == written.keys()


def test_convert_to_an_existing_rec_needs_overwrite(tmp_path, capsys):
    from resvision.datasets.face import RecordFaceDataset, SyntheticFaces

    faces = tmp_path / "faces"
    ds = SyntheticFaces(3, 2, image_size=112, seed=3)
    for person in range(3):
        for shot in range(2):
            (faces / f"person{person}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.render(person, shot)).save(faces / f"person{person}" / f"{shot}.jpg")
    rec = tmp_path / "data" / "train.rec"
    assert main(["face", "convert", str(faces), str(rec), "--to", "rec"]) == 0
    before = rec.read_bytes()
    assert main(["face", "convert", str(faces / "person0"), str(rec), "--to", "rec"]) == 2
    assert "--overwrite" in capsys.readouterr().err and rec.read_bytes() == before
    assert len(RecordFaceDataset(rec)) == 6
    # 17: identity names survive a round trip
    assert main(["face", "convert", str(rec), str(tmp_path / "back"), "--to", "folder"]) == 0
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [
        "person0",
        "person1",
        "person2",
    ]


def test_export_onto_an_existing_file_needs_overwrite(face_run, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"keep me")
    argv = ["export", "face", "--checkpoint", str(face_run), "--out", str(out)]
    assert main(argv) == 2 and out.read_bytes() == b"keep me"
    assert main([*argv, "--overwrite"]) == 0 and out.read_bytes() != b"keep me"


def test_training_into_a_folder_that_holds_a_run_needs_resume_or_overwrite(seg_run, capsys):
    assert main(["train", "segmentation", "--output-dir", str(seg_run)]) == 2
    assert "--resume" in capsys.readouterr().err


# -- 2, 3. every input its own output; a real COCO results file --------------------------------
def test_inputs_with_one_name_get_their_own_outputs(seg_run, det_run, photos, tmp_path):
    argv = ["--checkpoint", str(seg_run), "--out", str(tmp_path / "seg")]
    assert main(["predict", "segmentation", str(photos), *argv]) == 0
    labels = sorted(
        p.relative_to(tmp_path / "seg").as_posix() for p in (tmp_path / "seg").rglob("*.png")
    )
    assert labels == ["img.jpg.png", "img.png.png", "sub1/img.png", "sub2/img.png"]
    out = tmp_path / "det"
    argv = ["predict", "detection", str(photos), "--checkpoint", str(det_run), "--out", str(out)]
    assert main([*argv, "--score-threshold", "0"]) == 0
    drawn = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert drawn == ["img.jpg.jpg", "img.png.jpg", "sub1/img.jpg", "sub2/img.jpg"]
    images = json.loads((out / "coco_images.json").read_text())["images"]
    assert sorted(i["file_name"] for i in images) == [
        "img.jpg",
        "img.png",
        "sub1/img.jpg",
        "sub2/img.jpg",
    ]
    results = json.loads((out / "coco_results.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} == set(results[0])
    assert {r["image_id"] for r in results} <= {i["id"] for i in images}
    readable = json.loads((out / "detections.json").read_text())
    assert {r["file_name"] for r in readable} <= {i["file_name"] for i in images}


# -- 4. one unreadable image does not stop a batch ---------------------------------------------
@pytest.mark.parametrize("task", ["segmentation", "detection", "face"])
def test_an_unreadable_image_is_skipped_and_named(
    task, seg_run, det_run, face_run, photos, tmp_path, capsys, caplog
):
    run = {"segmentation": seg_run, "detection": det_run, "face": face_run}[task]
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / ("out.npz" if task == "face" else "out")
    argv = ["predict", task, str(photos), "--checkpoint", str(run), "--out", str(out)]
    assert main(argv) == 0
    assert "broken.jpg" in caplog.text and "1 unreadable input skipped" in capsys.readouterr().out
    if task == "face":
        assert len(np.load(out)["names"]) == 4
    else:
        assert len(list(out.rglob("*.jpg"))) == 4
    assert main([*argv[:-1], str(tmp_path / "strict"), "--strict"]) == 2
    # nothing readable at all: a non-zero exit
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"junk")
    assert (
        main(
            [
                "predict",
                task,
                str(bad),
                "--checkpoint",
                str(run),
                "--out",
                str(tmp_path / ("b.npz" if task == "face" else "b")),
            ]
        )
        == 1
    )


# -- 5. COCO evaluation equals pycocotools on the json as given -------------------------------
def _pycocotools_stats(gt_path: Path, rows: np.ndarray) -> np.ndarray:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(rows), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def _ours(gt_path: Path, rows: np.ndarray, backend: str) -> dict:
    from resvision.datasets.detection import coco_ground_truth, read_coco
    from resvision.tasks.detection.evaluation import COCOEvaluator

    return COCOEvaluator(read_coco(gt_path), backend, coco_ground_truth(gt_path)).evaluate(rows)


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_boxes_past_the_edge_and_tiny_boxes_score_as_pycocotools_scores_them(backend, tmp_path):
    from resvision.tasks.detection.evaluation import METRICS

    boxes = [[10, 10, 100, 100], [600, 200, 70, 60], [300, 300, 40, 0.8]]
    gt = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 480, "width": 640}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": 0,
            }
            for i, b in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    rows = np.array([[1, *b, 0.9, 1] for b in boxes], np.float64)
    ours = _ours(tmp_path / "gt.json", rows, backend)
    assert ours["AP"] == pytest.approx(1.0) and ours["AR100"] == pytest.approx(1.0)
    np.testing.assert_allclose(
        [ours[k] for k in METRICS], _pycocotools_stats(tmp_path / "gt.json", rows), atol=1e-12
    )


def test_generated_set_with_edge_tiny_and_crowd_boxes_equals_pycocotools(tmp_path):
    from resvision.tasks.detection.evaluation import METRICS

    rng = np.random.default_rng(5)
    images, anns, rows = [], [], []
    for i in range(1, 61):
        h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        images.append({"id": i, "file_name": f"{i}.jpg", "height": h, "width": w})
        for _ in range(int(rng.integers(0, 6))):
            x, y = rng.uniform(-20, w), rng.uniform(-20, h)
            bw, bh = rng.choice([rng.uniform(0.2, 2), rng.uniform(5, 150)], 2)
            crowd = int(rng.random() < 0.1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(rng.integers(1, 4)),
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh * 0.8,
                    "iscrowd": crowd,
                }
            )
            jitter = rng.normal(0, 2, 4) * [1, 1, 0.1, 0.1]
            rows.append(
                [
                    i,
                    x + jitter[0],
                    y + jitter[1],
                    bw + jitter[2],
                    bh + jitter[3],
                    rng.random(),
                    anns[-1]["category_id"],
                ]
            )
        for _ in range(3):
            rows.append([i, *rng.uniform(0, 150, 4), rng.random() * 0.5, int(rng.integers(1, 4))])
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]
    (tmp_path / "gt.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    rows = np.array(rows)
    ours = _ours(tmp_path / "gt.json", rows, "faster_coco_eval")
    np.testing.assert_allclose(
        [ours[k] for k in METRICS], _pycocotools_stats(tmp_path / "gt.json", rows), atol=1e-9
    )


# -- 6. the best score in last.pt is always current --------------------------------------------
def test_last_checkpoint_holds_the_best_score_of_its_own_iteration(tmp_path):
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks" / "engine"))
    from toy_task import ToyTask

    from resvision.tasks.engine.checkpoint import load_checkpoint

    cfg = apply_overrides(
        ToyTask().presets()["toy"](),
        [
            "schedule.iterations=4",
            "runtime.eval_period=4",
            "runtime.checkpoint_period=4",
            f"runtime.output_dir={tmp_path}",
        ],
    )
    train(ToyTask(), cfg)
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    assert last["progress"]["best_iteration"] == 4 == best["progress"]["best_iteration"]
    assert last["progress"]["best_metric"] == best["progress"]["best_metric"]
    assert all(torch.equal(a, b) for a, b in zip(last["model"].values(), best["model"].values()))


# -- 7. a huge image runs as sliding windows ---------------------------------------------------
def test_large_images_switch_to_sliding_windows(seg_run, caplog):
    import dataclasses

    from resvision.tasks.segmentation.inference import Segmenter

    seg = Segmenter.from_checkpoint(seg_run, device="cpu")
    image = (np.random.default_rng(0).random((150, 170, 3)) * 255).astype(np.uint8)
    seg.inference = dataclasses.replace(seg.inference, crop_size=(64, 64), stride=(48, 48))
    slide = Segmenter(
        seg.model, seg.class_names, inference=dataclasses.replace(seg.inference, mode="slide")
    )
    seg.inference = dataclasses.replace(seg.inference, max_whole_pixels=100 * 100)
    windows = []
    (auto,) = seg.predict(image, progress=lambda chunks, total: windows.append(total) or chunks)
    assert "sliding windows" in caplog.text and windows and windows[0] > 1
    assert np.array_equal(auto, slide.predict(image)[0])


# -- 8, 9. one line naming the problem ---------------------------------------------------------
def test_unwritable_outputs_and_typos_are_one_line_errors(
    seg_run, face_run, photos, tmp_path, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert (
        main(
            [
                "predict",
                "segmentation",
                str(photos),
                "--checkpoint",
                str(seg_run),
                "--out",
                str(blocker / "sub"),
            ]
        )
        == 2
    )
    assert "a_file" in capsys.readouterr().err
    assert main(["train", "segmentation", "--output-dir", str(blocker / "run")]) == 2
    assert "a_file" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "segmentation",
                str(photos),
                "--checkpoint",
                str(seg_run),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "gpu",
            ]
        )
        == 2
    )
    assert "'gpu' is not a device" in capsys.readouterr().err
    assert main(["face", "cluster", str(photos / "img.jpg")]) == 2
    assert "not an embedding file" in capsys.readouterr().err
    (tmp_path / "garbage.pt").write_bytes(os.urandom(2000))
    for verb in (["eval", "segmentation"], ["export", "segmentation"]):
        assert main([*verb, "--checkpoint", str(tmp_path / "garbage.pt")]) == 2
        err = capsys.readouterr().err
        assert "garbage.pt" in err and "corrupt" in err and "weights_only" not in err
    # a single file is an input like a folder
    one = tmp_path / "one.npz"
    assert (
        main(
            [
                "face",
                "embed",
                str(photos / "img.jpg"),
                "--checkpoint",
                str(face_run),
                "--out",
                str(one),
            ]
        )
        == 0
    )
    assert list(np.load(one)["names"]) == ["img.jpg"]


def test_pairs_file_with_a_bad_number_names_file_and_line(tmp_path):
    from resvision.datasets.face import read_pairs

    (tmp_path / "pairs.txt").write_text("1 2\nanna 1 2\nbob x 3\n")
    with pytest.raises(ValueError, match=r"pairs\.txt: line 3 .*'bob x 3'"):
        read_pairs(tmp_path / "pairs.txt", tmp_path)


# -- 10. stop signals reach the main process only ----------------------------------------------
def test_data_loader_workers_ignore_stop_signals():
    import signal

    import torch

    from resvision.tasks.engine.data import make_loader

    class Handlers(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return int(signal.getsignal(signal.SIGINT) == signal.SIG_IGN) + int(
                signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            )

    loader = make_loader(Handlers(), [[0], [1]], collate_fn=lambda x: x, num_workers=1)
    assert [b[0] for b in loader] == [2, 2]


# -- 11. progress without a terminal -----------------------------------------------------------
def test_progress_prints_periodic_lines_without_a_terminal(capsys):
    from resvision.tasks.engine.progress import progress

    assert list(progress(range(5), total=5, desc="images", every=0)) == list(range(5))
    err = capsys.readouterr().err
    assert "images: 1/5, eta" in err and "images: 4/5" in err


# -- 12, 16. help and --print-config are quick (no torch), defaults shown once ----------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["predict", "segmentation", "--help"],
        ["train", "--help"],
        ["face", "embed", "--help"],
        ["export", "detection", "--help"],
        ["demo", "--help"],
        ["benchmark", "--help"],
        ["train", "segmentation", "--print-config"],
        ["depth", "--help"],
    ],
)
def test_help_imports_no_torch_and_shows_defaults_once(argv):
    code = (
        "import sys\nfrom resvision.tools.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.rstrip().endswith("NO TORCH"), out[-500:]
    assert "(default: None)" not in out and ") (default:" not in out and "``" not in out
    if argv == ["train", "--help"]:
        assert "unet_r18_synthetic" in out and "faster_rcnn_r18_fpn_synthetic" in out


# -- 13, 14. one checkpoint rule; evaluation needs only validation data ------------------------
def test_a_run_folder_means_best_then_last_everywhere(tmp_path):
    from resvision.tasks.engine.checkpoint import RESUME_ORDER, resolve_checkpoint

    (tmp_path / "last.pt").write_bytes(b"")
    assert resolve_checkpoint(tmp_path) == tmp_path / "last.pt"
    (tmp_path / "best.pt").write_bytes(b"")
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.pt"
    assert resolve_checkpoint(tmp_path, RESUME_ORDER) == tmp_path / "last.pt"
    assert resolve_checkpoint(tmp_path / "last.pt") == tmp_path / "last.pt"


def test_coco_evaluation_needs_only_the_validation_json(det_run, voc_sample, capsys):
    """The run trained on synthetic shapes; evaluating it on a COCO json names no training
    data (before: "data.source=coco needs data.train_json")."""
    ann = voc_sample / "instances_coco.json"
    argv = [
        "eval",
        "detection",
        "--checkpoint",
        str(det_run),
        "--set",
        "data.source=coco",
        "data.train_json=",
        "data.train_images=",
        f"data.val_json={ann}",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    assert "AP50:" in capsys.readouterr().out


# -- 15. one behaviour across tasks ------------------------------------------------------------
def test_predictors_take_the_same_inputs(seg_run, det_run, face_run, photos):
    from resvision.tasks.detection.inference import Detector
    from resvision.tasks.face.inference import Embedder
    from resvision.tasks.segmentation.inference import Segmenter

    image = Image.open(photos / "img.png")
    array = np.asarray(image)
    for predictor in (
        Segmenter.from_checkpoint(seg_run, device="cpu"),
        Detector.from_checkpoint(det_run, device="cpu"),
        Embedder.from_checkpoint(face_run, device="cpu"),
    ):
        a, b, c = (predictor.predict(x) for x in (image, array, photos / "img.png"))
        first = lambda r: r[0]["scores"] if isinstance(r[0], dict) else r[0]  # noqa: E731
        assert np.array_equal(first(a), first(b)) and np.array_equal(first(b), first(c))


def test_segmentation_batches_give_the_same_labels(seg_run, photos, tmp_path):
    argv = ["predict", "segmentation", str(photos), "--checkpoint", str(seg_run)]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert main([*argv, "--out", str(tmp_path / "four"), "--batch-size", "4"]) == 0
    for p in (tmp_path / "one").rglob("*.png"):
        other = tmp_path / "four" / p.relative_to(tmp_path / "one")
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(other)))


def test_every_export_writes_model_onnx_with_its_contract(seg_run, face_run, capsys):
    import onnx

    for task, run in (("segmentation", seg_run), ("face", face_run)):
        assert main(["export", task, "--checkpoint", str(run), "--overwrite"]) == 0
        assert "pixels 0-255" in capsys.readouterr().out
        meta = {p.key: p.value for p in onnx.load(str(run / "model.onnx")).metadata_props}
        assert "contract" in meta
    meta = {p.key: p.value for p in onnx.load(str(seg_run / "model.onnx")).metadata_props}
    assert json.loads(meta["class_names"])[0] == "background"


# -- 17. output quality --------------------------------------------------------------------------
def test_overlay_colours_are_distinct_and_have_a_legend():
    from resvision.tasks.segmentation.visualize import add_legend, overlay, overlay_palette

    palette = overlay_palette(21)
    assert tuple(palette[1]) != (128, 0, 0)  # VOC's dark red: invisible on red objects
    colours = palette[1:21].astype(int)
    gaps = np.abs(colours[:, None] - colours[None]).sum(-1) + np.eye(20, dtype=int) * 999
    assert gaps.min() >= 60
    labels = np.zeros((30, 40), np.uint8)
    labels[5:15, 5:15] = 1
    image = np.full((30, 40, 3), 200, np.uint8)
    picture = add_legend(overlay(image, labels, palette), labels, ["background", "cat"], palette)
    assert picture.shape[0] > 30 and picture.shape[1] == 40


def test_ap_tables_and_plots_leave_out_cocos_minus_one(tmp_path):
    from resvision.tasks.detection.evaluation import METRICS, ap_table
    from resvision.tasks.engine.plots import plot_run

    metrics = dict.fromkeys(METRICS, 0.5) | {"APs": -1.0, "ARs": -1.0, "AP/cat": 0.5}
    table = ap_table(metrics, ("cat",))
    assert "-100" not in table and "| -" in table.replace("|      -", "| -")
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"iteration": 1, "val/APs": -1.0, "val/AP": 0.5}) + "\n"
    )
    assert any(p.name == "val.png" for p in plot_run(tmp_path))


def test_counts_read_as_english():
    from resvision.tools.outputs import plural

    assert plural(1, "image") == "1 image" and plural(2, "image") == "2 images"
    assert plural(1, "cluster") == "1 cluster"
