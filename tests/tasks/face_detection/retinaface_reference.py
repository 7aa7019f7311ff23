"""The PyTorch port of RetinaFace (biubug6/Pytorch_Retinaface) re-implemented as the reference
for parity tests and benchmarks: its ResNet-50 model (torchvision's ResNet-50 body through
``IntermediateLayerGetter``, FPN, SSH, heads) with its module names, so ``state_dict()`` has the
layout of ``Resnet50_Final.pth``; its normalized prior boxes, decoding and ``py_cpu_nms``; the
per-image inference of its ``detect.py``; and its per-image ``match`` + ``MultiBoxLoss``.

Written from the port's published behaviour, kept deliberately close to it (loops, numpy on
the host) because that is what is being compared against.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

CFG_RE50 = {
    "min_sizes": [[16, 32], [64, 128], [256, 512]],
    "steps": [8, 16, 32],
    "variance": [0.1, 0.2],
    "clip": False,
    "return_layers": {"layer2": 1, "layer3": 2, "layer4": 3},
    "in_channel": 256,
    "out_channel": 256,
}


# -- the network -------------------------------------------------------------------------------
def conv_bn(inp, oup, stride=1, leaky=0.0):
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


def conv_bn_no_relu(inp, oup, stride=1):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup))


def conv_bn1x1(inp, oup, stride=1, leaky=0.0):
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, stride, padding=0, bias=False),
        nn.BatchNorm2d(oup),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class PortSSH(nn.Module):
    def __init__(self, in_channel, out_channel):
        super().__init__()
        leaky = 0.1 if out_channel <= 64 else 0.0
        self.conv3X3 = conv_bn_no_relu(in_channel, out_channel // 2)
        self.conv5X5_1 = conv_bn(in_channel, out_channel // 4, leaky=leaky)
        self.conv5X5_2 = conv_bn_no_relu(out_channel // 4, out_channel // 4)
        self.conv7X7_2 = conv_bn(out_channel // 4, out_channel // 4, leaky=leaky)
        self.conv7x7_3 = conv_bn_no_relu(out_channel // 4, out_channel // 4)

    def forward(self, x):
        c3 = self.conv3X3(x)
        c5_1 = self.conv5X5_1(x)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([c3, c5, c7], dim=1))


class PortFPN(nn.Module):
    def __init__(self, in_channels_list, out_channels):
        super().__init__()
        leaky = 0.1 if out_channels <= 64 else 0.0
        self.output1 = conv_bn1x1(in_channels_list[0], out_channels, leaky=leaky)
        self.output2 = conv_bn1x1(in_channels_list[1], out_channels, leaky=leaky)
        self.output3 = conv_bn1x1(in_channels_list[2], out_channels, leaky=leaky)
        self.merge1 = conv_bn(out_channels, out_channels, leaky=leaky)
        self.merge2 = conv_bn(out_channels, out_channels, leaky=leaky)

    def forward(self, inputs):
        inputs = list(inputs.values())
        o1 = self.output1(inputs[0])
        o2 = self.output2(inputs[1])
        o3 = self.output3(inputs[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=[o2.size(2), o2.size(3)], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=[o1.size(2), o1.size(3)], mode="nearest"))
        return [o1, o2, o3]


class _Head(nn.Module):
    def __init__(self, inchannels, num_anchors, width):
        super().__init__()
        self.width = width
        self.conv1x1 = nn.Conv2d(inchannels, num_anchors * width, kernel_size=1)

    def forward(self, x):
        out = self.conv1x1(x).permute(0, 2, 3, 1).contiguous()
        return out.view(out.shape[0], -1, self.width)


class PortRetinaFace(nn.Module):
    """The port's ``RetinaFace(cfg=cfg_re50, phase='test')`` (softmax scores in test phase)."""

    def __init__(self, cfg=CFG_RE50, phase="test"):
        super().__init__()
        self.phase = phase
        backbone = torchvision.models.resnet50(weights=None)
        self.body = IntermediateLayerGetter(backbone, cfg["return_layers"])
        c = cfg["in_channel"]
        out = cfg["out_channel"]
        self.fpn = PortFPN([c * 2, c * 4, c * 8], out)
        self.ssh1 = PortSSH(out, out)
        self.ssh2 = PortSSH(out, out)
        self.ssh3 = PortSSH(out, out)
        self.ClassHead = nn.ModuleList(_Head(out, 2, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(out, 2, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(out, 2, 10) for _ in range(3))

    def forward(self, inputs):
        fpn = self.fpn(self.body(inputs))
        features = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([self.BboxHead[i](f) for i, f in enumerate(features)], dim=1)
        conf = torch.cat([self.ClassHead[i](f) for i, f in enumerate(features)], dim=1)
        ldm = torch.cat([self.LandmarkHead[i](f) for i, f in enumerate(features)], dim=1)
        if self.phase == "train":
            return loc, conf, ldm
        return loc, F.softmax(conf, dim=-1), ldm


def randomized_port_model(seed: int = 0) -> PortRetinaFace:
    """The port's model with seeded random weights and batch-norm statistics (eval mode), and
    class-head biases that make most priors background, as a trained model's are."""
    torch.manual_seed(seed)
    net = PortRetinaFace().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        for head in net.ClassHead:
            head.conv1x1.bias.copy_(torch.tensor([2.5, -2.5] * 2))
    return net


# -- priors, decoding, NMS ---------------------------------------------------------------------
class PriorBox:
    def __init__(self, cfg, image_size):
        self.min_sizes = cfg["min_sizes"]
        self.steps = cfg["steps"]
        self.clip = cfg["clip"]
        self.image_size = image_size
        self.feature_maps = [
            [math.ceil(image_size[0] / step), math.ceil(image_size[1] / step)]
            for step in self.steps
        ]

    def forward(self):
        anchors = []
        for k, f in enumerate(self.feature_maps):
            for i, j in itertools.product(range(f[0]), range(f[1])):
                for min_size in self.min_sizes[k]:
                    s_kx = min_size / self.image_size[1]
                    s_ky = min_size / self.image_size[0]
                    cx = (j + 0.5) * self.steps[k] / self.image_size[1]
                    cy = (i + 0.5) * self.steps[k] / self.image_size[0]
                    anchors += [cx, cy, s_kx, s_ky]
        output = torch.Tensor(anchors).view(-1, 4)
        if self.clip:
            output.clamp_(max=1, min=0)
        return output


def decode(loc, priors, variances):
    boxes = torch.cat(
        (
            priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
            priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1]),
        ),
        1,
    )
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def decode_landm(pre, priors, variances):
    return torch.cat(
        [
            priors[:, :2] + pre[:, 2 * k : 2 * k + 2] * variances[0] * priors[:, 2:]
            for k in range(5)
        ],
        dim=1,
    )


def py_cpu_nms(dets, thresh):
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def port_detect(
    net: PortRetinaFace,
    image_bgr: np.ndarray,
    *,
    confidence_threshold: float = 0.02,
    top_k: int = 5000,
    nms_threshold: float = 0.4,
    keep_top_k: int = 750,
    device: str = "cpu",
) -> np.ndarray:
    """``detect.py`` on one BGR uint8 image at its own size: ``(D, 15)`` rows of box, score,
    five landmarks (x, y), best first."""
    img = np.float32(image_bgr)
    im_height, im_width, _ = img.shape
    img -= (104, 117, 123)
    img = torch.from_numpy(img.transpose(2, 0, 1)).unsqueeze(0).to(device)
    with torch.no_grad():
        loc, conf, landms = net(img)
    priors = PriorBox(CFG_RE50, image_size=(im_height, im_width)).forward().to(device)
    return port_postprocess(
        loc[0],
        conf[0],
        landms[0],
        priors,
        (im_height, im_width),
        confidence_threshold=confidence_threshold,
        top_k=top_k,
        nms_threshold=nms_threshold,
        keep_top_k=keep_top_k,
    )


def port_postprocess(
    loc,
    conf,
    landms,
    priors,
    size: tuple[int, int],
    *,
    confidence_threshold: float = 0.02,
    top_k: int = 5000,
    nms_threshold: float = 0.4,
    keep_top_k: int = 750,
) -> np.ndarray:
    """``detect.py``'s steps after the forward pass, for one image's outputs."""
    im_height, im_width = size
    device = loc.device
    variances = CFG_RE50["variance"]
    scale = torch.Tensor([im_width, im_height] * 2).to(device)
    boxes = (decode(loc.data, priors, variances) * scale).cpu().numpy()
    scores = conf.data.cpu().numpy()[:, 1]
    landms = decode_landm(landms.data, priors, variances)
    scale1 = torch.Tensor([im_width, im_height] * 5).to(device)
    landms = (landms * scale1).cpu().numpy()
    inds = np.where(scores > confidence_threshold)[0]
    boxes, landms, scores = boxes[inds], landms[inds], scores[inds]
    order = scores.argsort()[::-1][:top_k]
    boxes, landms, scores = boxes[order], landms[order], scores[order]
    dets = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = py_cpu_nms(dets, nms_threshold)
    dets, landms = dets[keep, :], landms[keep]
    dets, landms = dets[:keep_top_k, :], landms[:keep_top_k, :]
    return np.concatenate((dets, landms), axis=1)


# -- training targets and loss -----------------------------------------------------------------
def point_form(boxes):
    return torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1)


def jaccard(box_a, box_b):
    a, b = box_a.size(0), box_b.size(0)
    max_xy = torch.min(
        box_a[:, 2:].unsqueeze(1).expand(a, b, 2), box_b[:, 2:].unsqueeze(0).expand(a, b, 2)
    )
    min_xy = torch.max(
        box_a[:, :2].unsqueeze(1).expand(a, b, 2), box_b[:, :2].unsqueeze(0).expand(a, b, 2)
    )
    inter = torch.clamp(max_xy - min_xy, min=0)
    inter = inter[:, :, 0] * inter[:, :, 1]
    area_a = (
        ((box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    )
    area_b = (
        ((box_b[:, 2] - box_b[:, 0]) * (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    )
    return inter / (area_a + area_b - inter)


def encode(matched, priors, variances):
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= variances[0] * priors[:, 2:]
    g_wh = torch.log((matched[:, 2:] - matched[:, :2]) / priors[:, 2:]) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def encode_landm(matched, priors, variances):
    matched = matched.reshape(matched.size(0), 5, 2)
    p = priors[:, None, :].expand(matched.size(0), 5, 4)
    g = (matched - p[:, :, :2]) / (variances[0] * p[:, :, 2:])
    return g.reshape(g.size(0), -1)


def match(threshold, truths, priors, variances, labels, landms, loc_t, conf_t, landm_t, idx):
    overlaps = jaccard(truths, point_form(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    valid_gt_idx = best_prior_overlap[:, 0] >= 0.2
    best_prior_idx_filter = best_prior_idx[valid_gt_idx, :]
    if best_prior_idx_filter.shape[0] <= 0:
        loc_t[idx] = 0
        conf_t[idx] = 0
        return
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_idx_filter.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx_filter, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx]
    conf[best_truth_overlap < threshold] = 0
    loc_t[idx] = encode(matches, priors, variances)
    conf_t[idx] = conf
    landm_t[idx] = encode_landm(landms[best_truth_idx], priors, variances)


def port_multibox_loss(predictions, priors, targets, threshold=0.35, negpos_ratio=3, device="cpu"):
    """``MultiBoxLoss(2, 0.35, True, 0, True, 7, 0.35, False)`` of ``train.py``: the port's
    targets are rows ``[x1, y1, x2, y2, 10 landmark values, label]`` normalized by the image
    size, ``priors`` its normalized ``PriorBox`` output; targets are built on the host, as
    there, and moved to ``device``. Returns ``(loss_l, loss_c, loss_landm)``."""
    loc_data, conf_data, landm_data = predictions
    num, num_priors = loc_data.size(0), priors.size(0)
    variance = [0.1, 0.2]
    loc_t = torch.zeros(num, num_priors, 4)
    landm_t = torch.zeros(num, num_priors, 10)
    conf_t = torch.zeros(num, num_priors, dtype=torch.long)
    for idx in range(num):
        truths = targets[idx][:, :4].data
        labels = targets[idx][:, -1].data
        landms = targets[idx][:, 4:14].data
        match(threshold, truths, priors.data, variance, labels, landms, loc_t, conf_t, landm_t, idx)
    loc_t, conf_t, landm_t = loc_t.to(device), conf_t.to(device), landm_t.to(device)
    zeros = torch.tensor(0, device=device)
    pos1 = conf_t > zeros
    n1 = max(pos1.long().sum().float(), 1)
    pos_idx1 = pos1.unsqueeze(pos1.dim()).expand_as(landm_data)
    loss_landm = F.smooth_l1_loss(
        landm_data[pos_idx1].view(-1, 10), landm_t[pos_idx1].view(-1, 10), reduction="sum"
    )
    pos = conf_t != zeros
    conf_t[pos] = 1
    pos_idx = pos.unsqueeze(pos.dim()).expand_as(loc_data)
    loss_l = F.smooth_l1_loss(
        loc_data[pos_idx].view(-1, 4), loc_t[pos_idx].view(-1, 4), reduction="sum"
    )
    batch_conf = conf_data.view(-1, 2)
    x_max = batch_conf.data.max()
    lse = torch.log(torch.sum(torch.exp(batch_conf - x_max), 1, keepdim=True)) + x_max
    loss_c = lse - batch_conf.gather(1, conf_t.view(-1, 1))
    loss_c[pos.view(-1, 1)] = 0
    loss_c = loss_c.view(num, -1)
    _, loss_idx = loss_c.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_pos = pos.long().sum(1, keepdim=True)
    num_neg = torch.clamp(negpos_ratio * num_pos, max=pos.size(1) - 1)
    neg = idx_rank < num_neg.expand_as(idx_rank)
    pos_idx = pos.unsqueeze(2).expand_as(conf_data)
    neg_idx = neg.unsqueeze(2).expand_as(conf_data)
    conf_p = conf_data[(pos_idx + neg_idx).gt(0)].view(-1, 2)
    targets_weighted = conf_t[(pos + neg).gt(0)]
    loss_c = F.cross_entropy(conf_p, targets_weighted, reduction="sum")
    n = max(num_pos.data.sum().float(), 1)
    return loss_l / n, loss_c / n, loss_landm / n1
