"""InsightFace's IJB evaluation written the way its scripts are: a Python loop per template and
per media, pair scores in chunks of 100,000, scikit-learn's ``roc_curve`` and a nearest-FPR
search over the reversed curve (arcface_torch's ``eval_ijbc.py``), and a loop per probe for 1:N
(``recognition/_evaluation_/ijb/ijb_evals.py``). The parity tests compare
``resvision.tasks.face.ijb`` with it; ``resvision benchmark face`` times it as the baseline.

Independent of the library on purpose: nothing here imports resvision."""

from __future__ import annotations

import numpy as np

X_LABELS = [10**-6, 10**-5, 10**-4, 10**-3, 10**-2, 10**-1]  # eval_ijbc.py's FAR columns


def prepare_features(img_feats, faceness, *, use_norm_score=True, use_detector_score=True):
    """eval_ijbc.py's switches on the (already flip-summed) image features: N1 keeps each
    feature's length, N0 divides it out; D1 multiplies by the faceness score."""
    feats = img_feats
    if not use_norm_score:
        feats = feats / np.sqrt(np.sum(feats**2, -1, keepdims=True))
    if use_detector_score:
        feats = feats * faceness[:, np.newaxis]
    return feats


def image2template_feature(img_feats, templates, medias, choose_templates=None, choose_ids=None):
    """Per template: the mean of each media's images, their sum, then scikit-learn's normalize.
    With ``choose_templates`` (1:N), only those templates, each with its first subject id."""
    from sklearn.preprocessing import normalize

    if choose_templates is not None:
        unique_templates, first = np.unique(choose_templates, return_index=True)
        unique_ids = choose_ids[first]
    else:
        unique_templates, unique_ids = np.unique(templates), None
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for k, template in enumerate(unique_templates):
        (rows,) = np.where(templates == template)
        feats, template_medias = img_feats[rows], medias[rows]
        media_ids, media_counts = np.unique(template_medias, return_counts=True)
        per_media = []
        for media, count in zip(media_ids, media_counts):
            (ind,) = np.where(template_medias == media)
            if count == 1:
                per_media.append(feats[ind])
            else:
                per_media.append(np.mean(feats[ind], axis=0, keepdims=True))
        per_media = np.array(per_media)
        template_feats[k] = np.sum(per_media, axis=0)
    return normalize(template_feats), unique_templates, unique_ids


def verification(template_norm_feats, unique_templates, p1, p2, chunk=100_000):
    """The cosine of each pair, 100,000 pairs at a time through a template-id lookup."""
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for k, template in enumerate(unique_templates):
        template2id[template] = k
    score = np.zeros((len(p1),))
    for start in range(0, len(p1), chunk):
        s = np.arange(start, min(start + chunk, len(p1)))
        feat1 = template_norm_feats[template2id[p1[s]]]
        feat2 = template_norm_feats[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()
    return score


def tpr_at_fpr(label, score, x_labels=X_LABELS):
    """``(tars, auc, fpr, tpr)``: the ROC's TPR at the point nearest each FAR, searched on the
    reversed curve with ``min`` over (distance, index)."""
    from sklearn.metrics import auc, roc_curve

    fpr, tpr, _ = roc_curve(label, score)
    area = auc(fpr, tpr)
    fpr_r, tpr_r = np.flipud(fpr), np.flipud(tpr)
    tars = []
    for x in x_labels:
        _, index = min(list(zip(abs(fpr_r - x), range(len(fpr_r)))))
        tars.append(tpr_r[index])
    return tars, area, fpr, tpr


def evaluation_1N(query_feats, gallery_feats, query_ids, reg_ids, fars):
    """One open-set gallery: rank-1/5/10 counts, and the TPIR at each FPIR."""
    similarity = np.dot(query_feats, gallery_feats.T)
    top1 = top5 = top10 = 0
    pos_sims, neg_sims, non_gallery_sims = [], [], []
    for index, query_id in enumerate(query_ids):
        if query_id in reg_ids:
            gallery_label = np.argwhere(reg_ids == query_id)[0, 0]
            index_sorted = np.argsort(similarity[index])[::-1]
            top1 += gallery_label in index_sorted[:1]
            top5 += gallery_label in index_sorted[:5]
            top10 += gallery_label in index_sorted[:10]
            pos_sims.append(similarity[index][reg_ids == query_id][0])
            neg_sims.append(similarity[index][reg_ids != query_id])
        else:
            non_gallery_sims.append(similarity[index])
    pos_sims, neg_sims = np.array(pos_sims), np.array(neg_sims)
    non_gallery_sims = np.array(non_gallery_sims)
    correct_pos_cond = pos_sims > neg_sims.max(1)
    non_gallery_sims_sorted = np.sort(non_gallery_sims.max(1))[::-1]
    recalls, threshes = [], []
    for far in fars:
        thresh = non_gallery_sims_sorted[max(int(non_gallery_sims_sorted.shape[0] * far) - 1, 0)]
        recalls.append(
            np.logical_and(correct_pos_cond, pos_sims > thresh).sum() / pos_sims.shape[0]
        )
        threshes.append(thresh)
    return top1, top5, top10, threshes, recalls


def fars_cal(npoints=100):
    """ijb_evals.py's FPIR grid: 10 ** k for k in arange(-4, 0, 4 / npoints), then 1."""
    return [10**k for k in np.arange(-4, 0, 4 / npoints)] + [1]


def run_1n(img_input_feats, templates, medias, g1, g2, probes):
    """ijb_evals.py's ``run_model_test_1N`` on prepared image features; ``g1``, ``g2`` and
    ``probes`` are ``(templates, subject ids)`` per CSV row. Returns the mean rank-1/5/10 over
    probe templates and the mean TPIR at FPIR 0.01 and 0.1 (grid points 50 and 75)."""
    fars = fars_cal()
    p_feats, _, p_ids = image2template_feature(img_input_feats, templates, medias, *probes)
    out = {"rank1": 0, "rank5": 0, "rank10": 0, "recalls": [], "threshes": []}
    for gallery in (g1, g2):
        g_feats, _, g_ids = image2template_feature(img_input_feats, templates, medias, *gallery)
        t1, t5, t10, threshes, recalls = evaluation_1N(p_feats, g_feats, p_ids, g_ids, fars)
        out["rank1"] += t1
        out["rank5"] += t5
        out["rank10"] += t10
        out["recalls"].append(recalls)
        out["threshes"].append(threshes)
    query_num = p_feats.shape[0]
    mean_tpirs = (np.array(out["recalls"][0]) + np.array(out["recalls"][1])) / 2
    return {
        "rank1": out["rank1"] / query_num,
        "rank5": out["rank5"] / query_num,
        "rank10": out["rank10"] / query_num,
        "TPIR@FPIR=0.01": mean_tpirs[50],
        "TPIR@FPIR=0.1": mean_tpirs[75],
        "fars": (fars[50], fars[75]),
        "recalls": out["recalls"],
        "threshes": out["threshes"],
    }


def evaluate_11(img_feats, faceness, templates, medias, p1, p2, label, **switches):
    """The 1:1 figures of eval_ijbc.py: ``(tars at X_LABELS, auc, scores, fpr, tpr)``."""
    feats = prepare_features(img_feats, faceness, **switches)
    template_norm_feats, unique_templates, _ = image2template_feature(feats, templates, medias)
    score = verification(template_norm_feats, unique_templates, p1, p2)
    tars, area, fpr, tpr = tpr_at_fpr(label, score)
    return tars, area, score, fpr, tpr
