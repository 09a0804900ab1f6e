"""Average precision of detections against ground truth, as PASCAL VOC computes it:
all-point interpolated AP at IoU >= 0.5 per class, and their mean (mAP)."""
import numpy as np

from .nms import iou


def average_precision(tp, scores, positives):
    """All-point AP of detections (true/false positive flags with their scores) against
    ``positives`` ground-truth objects."""
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(tp, np.float64)[order]
    tps, fps = np.cumsum(tp), np.cumsum(1 - tp)
    recall = tps / positives
    precision = tps / np.maximum(tps + fps, 1e-12)
    # the precision envelope, then the area under it at every change of recall
    r = np.concatenate([[0], recall, [1]])
    p = np.concatenate([[0], precision, [0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def match(det_boxes, det_scores, gt_boxes, iou_threshold=0.5):
    """True-positive flags of one image's detections of one class: best score first, each
    takes the unclaimed ground-truth box it overlaps most, if that overlap is enough."""
    flags = np.zeros(len(det_boxes), bool)
    claimed = np.zeros(len(gt_boxes), bool)
    for i in np.argsort(-np.asarray(det_scores), kind="stable"):
        if not len(gt_boxes):
            break
        overlaps = iou(np.asarray(det_boxes[i]), np.asarray(gt_boxes))
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold and not claimed[best]:
            flags[i] = claimed[best] = True
    return flags


def mean_average_precision(images, classes, iou_threshold=0.5):
    """``images``: (detections, gt_boxes, gt_labels) per image, detections a list of
    (box, label, score). Returns {"map": mean AP, "ap": {class: AP}} over the classes
    that have ground truth."""
    flags = {c: [] for c in classes}
    scores = {c: [] for c in classes}
    positives = {c: 0 for c in classes}
    for detections, gt_boxes, gt_labels in images:
        gt_boxes, gt_labels = np.asarray(gt_boxes, np.float64).reshape(-1, 4), np.asarray(gt_labels)
        for c in classes:
            mine = [d for d in detections if d[1] == c]
            truth = gt_boxes[gt_labels == c]
            positives[c] += len(truth)
            flags[c].extend(match([d[0] for d in mine], [d[2] for d in mine], truth, iou_threshold))
            scores[c].extend(d[2] for d in mine)
    ap = {c: average_precision(flags[c], scores[c], positives[c]) for c in classes if positives[c]}
    return {"map": float(np.mean(list(ap.values()))) if ap else float("nan"), "ap": ap}
