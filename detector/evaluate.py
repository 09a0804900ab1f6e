"""Average precision of detections against ground truth, two ways: as PASCAL VOC computes
it (all-point interpolated AP at IoU >= 0.5 per class, and their mean, mAP), and as COCO's
reference evaluator does (101-point AP averaged over IoU 0.5:0.95), in NumPy alone."""
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


# COCOeval's recall sampling points, built exactly as it builds them so comparisons agree
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def coco_iou(det_boxes, gt_boxes, gt_crowd):
    """IoU (D, G) of (x0, y0, x1, y1) boxes as pycocotools computes it: from (x, y, w, h)
    with area w * h, and a crowd box's union being the detection's own area."""
    d, g = _xywh(det_boxes)[:, None], _xywh(gt_boxes)[None]
    # right and bottom edges rebuilt as x + w, not read back, so every rounding matches
    w = np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - np.maximum(d[..., 1], g[..., 1])
    overlap = (w > 0) & (h > 0)
    inter = w * h
    det_area, gt_area = d[..., 2] * d[..., 3], g[..., 2] * g[..., 3]
    union = np.where(gt_crowd, det_area, det_area + gt_area - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=overlap)


def _xywh(boxes):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.hstack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def coco_match(ious, gt_crowd, iou_thresholds):
    """Greedy matching of one image's detections of one class, best score first (the rows
    of ``ious``), at every threshold at once. Returns (T, D) flags: matched, and matched to
    a crowd box (such detections are neither true nor false positives)."""
    thresholds = np.minimum(np.asarray(iou_thresholds, np.float64), 1 - 1e-10)[:, None]
    n_det, n_gt = ious.shape
    matched = np.zeros((len(thresholds), n_det), bool)
    on_crowd = np.zeros_like(matched)
    if not n_gt:
        return matched, on_crowd
    claimed = np.zeros((len(thresholds), n_gt), bool)
    rows = np.arange(len(thresholds))
    for i in range(n_det):
        # a crowd box is never used up, and is taken only when no ordinary box is free
        free = (~claimed | gt_crowd) & (ious[i] >= thresholds)
        best = _last_best(ious[i], free & ~gt_crowd)
        best = np.where(best >= 0, best, _last_best(ious[i], free & gt_crowd))
        hit = best >= 0
        matched[hit, i] = True
        on_crowd[hit, i] = gt_crowd[best[hit]]
        claimed[rows[hit], best[hit]] = True
    return matched, on_crowd


def _last_best(overlaps, allowed):
    """Per row of ``allowed`` (T, G), the last allowed column of greatest overlap, or -1:
    COCOeval lets a later box of equal overlap take over from an earlier one."""
    masked = np.where(allowed, overlaps, -np.inf)
    last = allowed.shape[1] - 1 - np.argmax(masked[:, ::-1], axis=1)
    return np.where(allowed.any(axis=1), last, -1)


def coco_precision(matched, ignored, positives, recall_thresholds=RECALL_THRESHOLDS):
    """Precision (T, R) at each recall threshold, from (T, D) flags of detections best score
    first over all images: the precision envelope read at the first detection reaching that
    recall, 0 where recall never gets there."""
    counted = ~ignored
    tp = np.cumsum(matched & counted, axis=1, dtype=np.float64)
    fp = np.cumsum(~matched & counted, axis=1, dtype=np.float64)
    recall = tp / positives
    # COCOeval's epsilon, kept so results agree to the last bit (a perfect 1 is 1 - 2e-16)
    precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    sampled = np.zeros((len(matched), len(recall_thresholds)))
    for t in range(len(matched)):
        at = np.searchsorted(recall[t], recall_thresholds, side="left")
        reached = at < matched.shape[1]
        sampled[t, reached] = envelope[t, at[reached]]
    return sampled


def _class_precision(images, c, iou_thresholds, max_detections):
    """Precision (T, R) of class ``c`` over all images, or None if it has no (non-crowd)
    ground truth. Each image keeps its ``max_detections`` best of the class."""
    matched, ignored, scores, positives = [], [], [], 0
    for detections, gt_boxes, gt_labels, *gt_crowd in images:
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        mine = np.asarray(gt_labels, object).reshape(-1) == c
        crowd = (np.asarray(gt_crowd[0], bool) if gt_crowd else np.zeros(len(gt_boxes), bool))[mine]
        positives += int(np.count_nonzero(~crowd))
        dets = [d for d in detections if d[1] == c]
        order = np.argsort([-d[2] for d in dets], kind="stable")[:max_detections]
        dets = [dets[i] for i in order]
        ious = coco_iou([d[0] for d in dets], gt_boxes[mine], crowd)
        hit, on_crowd = coco_match(ious, crowd, iou_thresholds)
        matched.append(hit)
        ignored.append(on_crowd)
        scores.extend(d[2] for d in dets)
    if not positives:
        return None
    # images in the given order, each best first: a stable sort breaks ties as COCOeval does
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return coco_precision(np.hstack(matched)[:, order], np.hstack(ignored)[:, order], positives)


def coco_average_precision(images, classes, iou_thresholds=np.linspace(0.5, 0.95, 10), max_detections=100):
    """COCO box AP, equal to pycocotools' COCOeval (area "all", maxDets 100) on the same data.

    ``images``: (detections, gt_boxes, gt_labels) per image as for ``mean_average_precision``,
    optionally with a fourth item, crowd flags (G,) for the ground-truth boxes. Returns
    {"ap": AP over ``iou_thresholds``, "ap50": AP at IoU 0.5, "ap75": AP at IoU 0.75,
    "per_class": {class: {"ap", "ap50", "ap75"}}}, the means over the classes that have
    ground truth (nan if none does).

    >>> gt = [[0, 0, 100, 100]]
    >>> result = coco_average_precision([([((0, 0, 100, 70), "cat", 0.9)], gt, ["cat"])], ["cat"])
    >>> [round(result[k], 12) for k in ("ap", "ap50", "ap75")]  # IoU 0.7: 5 of 10 thresholds
    [0.5, 1.0, 0.0]
    """
    thresholds = np.concatenate([np.asarray(iou_thresholds, np.float64).reshape(-1), [0.5, 0.75]])
    precision = {c: p for c in classes
                 if (p := _class_precision(images, c, thresholds, max_detections)) is not None}
    if not precision:
        return {"ap": float("nan"), "ap50": float("nan"), "ap75": float("nan"), "per_class": {}}
    per_class = {c: _summary(p[None]) for c, p in precision.items()}
    return {**_summary(np.stack(list(precision.values()))), "per_class": per_class}


def _summary(precision):
    """AP over the given thresholds and at 0.5 and 0.75 (the last two rows of axis 1) from
    precision (K, T + 2, R), each the plain mean of its entries, as COCOeval takes it."""
    return {"ap": float(precision[:, :-2].mean()), "ap50": float(precision[:, -2].mean()),
            "ap75": float(precision[:, -1].mean())}
