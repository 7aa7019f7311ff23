"""The WIDER FACE validation protocol as its official evaluation code runs it (the kit's
``evaluation.py`` with its Cython ``bbox_overlaps``): loops over events, images, predictions
and thresholds, written plainly as the reference for the vectorized evaluator. It reads the
ground truth from the .mat files and the predictions from the per-image txt folders."""

from __future__ import annotations

import os

import numpy as np
from scipy.io import loadmat


def get_gt_boxes(gt_dir):
    gt_mat = loadmat(os.path.join(gt_dir, "wider_face_val.mat"))
    hard_mat = loadmat(os.path.join(gt_dir, "wider_hard_val.mat"))
    medium_mat = loadmat(os.path.join(gt_dir, "wider_medium_val.mat"))
    easy_mat = loadmat(os.path.join(gt_dir, "wider_easy_val.mat"))
    return (
        gt_mat["face_bbx_list"],
        gt_mat["event_list"],
        gt_mat["file_list"],
        hard_mat["gt_list"],
        medium_mat["gt_list"],
        easy_mat["gt_list"],
    )


def read_pred_file(filepath):
    with open(filepath) as f:
        lines = f.readlines()
        img_file = lines[0].rstrip("\n\r")
        lines = lines[2:]
    boxes = []
    for line in lines:
        line = line.rstrip("\r\n").split(" ")
        if line[0] == "":
            continue
        boxes.append(
            [float(line[0]), float(line[1]), float(line[2]), float(line[3]), float(line[4])]
        )
    return img_file.split("/")[-1], np.array(boxes)


def get_preds(pred_dir):
    boxes = {}
    for event in os.listdir(pred_dir):
        current = {}
        for txt in os.listdir(os.path.join(pred_dir, event)):
            name, b = read_pred_file(os.path.join(pred_dir, event, txt))
            current[name.rstrip(".jpg")] = b
        boxes[event] = current
    return boxes


def norm_score(pred):
    max_score, min_score = 0, 1
    for _, k in pred.items():
        for _, v in k.items():
            if len(v) == 0:
                continue
            max_score = max(np.max(v[:, -1]), max_score)
            min_score = min(np.min(v[:, -1]), min_score)
    diff = max_score - min_score
    for _, k in pred.items():
        for _, v in k.items():
            if len(v) == 0:
                continue
            v[:, -1] = (v[:, -1] - min_score) / diff


def bbox_overlaps(boxes, query_boxes):
    n, k = boxes.shape[0], query_boxes.shape[0]
    overlaps = np.zeros((n, k), dtype=np.float64)
    for kk in range(k):
        box_area = (query_boxes[kk, 2] - query_boxes[kk, 0] + 1) * (
            query_boxes[kk, 3] - query_boxes[kk, 1] + 1
        )
        for nn in range(n):
            iw = min(boxes[nn, 2], query_boxes[kk, 2]) - max(boxes[nn, 0], query_boxes[kk, 0]) + 1
            if iw > 0:
                ih = (
                    min(boxes[nn, 3], query_boxes[kk, 3])
                    - max(boxes[nn, 1], query_boxes[kk, 1])
                    + 1
                )
                if ih > 0:
                    ua = float(
                        (boxes[nn, 2] - boxes[nn, 0] + 1) * (boxes[nn, 3] - boxes[nn, 1] + 1)
                        + box_area
                        - iw * ih
                    )
                    overlaps[nn, kk] = iw * ih / ua
    return overlaps


def image_eval(pred, gt, ignore, iou_thresh):
    _pred, _gt = pred.copy(), gt.copy()
    pred_recall = np.zeros(_pred.shape[0])
    recall_list = np.zeros(_gt.shape[0])
    proposal_list = np.ones(_pred.shape[0])
    _pred[:, 2] = _pred[:, 2] + _pred[:, 0]
    _pred[:, 3] = _pred[:, 3] + _pred[:, 1]
    _gt[:, 2] = _gt[:, 2] + _gt[:, 0]
    _gt[:, 3] = _gt[:, 3] + _gt[:, 1]
    overlaps = bbox_overlaps(_pred[:, :4], _gt)
    for h in range(_pred.shape[0]):
        gt_overlap = overlaps[h]
        max_overlap, max_idx = gt_overlap.max(), gt_overlap.argmax()
        if max_overlap >= iou_thresh:
            if ignore[max_idx] == 0:
                recall_list[max_idx] = -1
                proposal_list[h] = -1
            elif recall_list[max_idx] == 0:
                recall_list[max_idx] = 1
        pred_recall[h] = len(np.where(recall_list == 1)[0])
    return pred_recall, proposal_list


def img_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    pr_info = np.zeros((thresh_num, 2)).astype("float")
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r_index = np.where(pred_info[:, 4] >= thresh)[0]
        if len(r_index) == 0:
            pr_info[t, 0] = 0
            pr_info[t, 1] = 0
        else:
            r_index = r_index[-1]
            p_index = np.where(proposal_list[: r_index + 1] == 1)[0]
            pr_info[t, 0] = len(p_index)
            pr_info[t, 1] = pred_recall[r_index]
    return pr_info


def dataset_pr_info(thresh_num, pr_curve, count_face):
    _pr_curve = np.zeros((thresh_num, 2))
    for i in range(thresh_num):
        _pr_curve[i, 0] = pr_curve[i, 1] / pr_curve[i, 0]
        _pr_curve[i, 1] = pr_curve[i, 1] / count_face
    return _pr_curve


def voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def evaluation(pred_dir, gt_dir, iou_thresh=0.5):
    """``(easy, medium, hard)`` AP of the txt predictions under ``pred_dir``."""
    pred = get_preds(pred_dir)
    norm_score(pred)
    facebox_list, event_list, file_list, hard, medium, easy = get_gt_boxes(gt_dir)
    thresh_num = 1000
    aps = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for gt_list in (easy, medium, hard):
            count_face = 0
            pr_curve = np.zeros((thresh_num, 2)).astype("float")
            for i in range(len(event_list)):
                event_name = str(event_list[i][0][0])
                img_list = file_list[i][0]
                pred_list = pred[event_name]
                sub_gt_list = gt_list[i][0]
                gt_bbx_list = facebox_list[i][0]
                for j in range(len(img_list)):
                    pred_info = pred_list[str(img_list[j][0][0])]
                    gt_boxes = gt_bbx_list[j][0].astype("float")
                    keep_index = sub_gt_list[j][0]
                    count_face += len(keep_index)
                    if len(gt_boxes) == 0 or len(pred_info) == 0:
                        continue
                    ignore = np.zeros(gt_boxes.shape[0])
                    if len(keep_index) != 0:
                        ignore[keep_index - 1] = 1
                    pred_recall, proposal_list = image_eval(pred_info, gt_boxes, ignore, iou_thresh)
                    pr_curve += img_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
            pr_curve = dataset_pr_info(thresh_num, pr_curve, count_face)
            aps.append(voc_ap(pr_curve[:, 1], pr_curve[:, 0]))
    return aps
