"""``detector demo``: draw a scene, detect with both modes, compare, and write pictures."""
import os
import time

import cv2

from . import draw, load_model
from .datasets import digits
from .detect import detect


def run(out_dir="demo-output", seed=7, size=(640, 480), log=print):
    os.makedirs(out_dir, exist_ok=True)
    image, boxes, labels = digits.scene(seed, size=size)
    net = load_model()
    log(f"scene: {size[0]}x{size[1]}, seed {seed}, digits {' '.join(labels)}")
    results = {}
    for mode in ("fcn", "sliding"):
        start = time.perf_counter()
        results[mode] = detect(image, net, mode=mode, return_maps=mode == "fcn")
        results[mode].seconds = time.perf_counter() - start
    fcn, sliding = results["fcn"], results["sliding"]
    log(f"\n{'label':>5} {'score':>6}  box (x0, y0, x1, y1)")
    for d in fcn.detections:
        log(f"{d.label:>5} {d.score:6.3f}  ({d.box[0]:.0f}, {d.box[1]:.0f}, {d.box[2]:.0f}, {d.box[3]:.0f})")
    same = [(d.label, round(d.score, 4)) for d in fcn.detections] == \
           [(d.label, round(d.score, 4)) for d in sliding.detections]
    log(f"\nsliding windows:     {sliding.seconds * 1e3:8.1f} ms ({len(sliding.detections)} detections)")
    log(f"fully convolutional: {fcn.seconds * 1e3:8.1f} ms ({len(fcn.detections)} detections)")
    log(f"speed-up {sliding.seconds / fcn.seconds:.1f}x; same detections in both modes: {'yes' if same else 'NO'}")
    cv2.imwrite(os.path.join(out_dir, "scene.png"), image)
    cv2.imwrite(os.path.join(out_dir, "boxes.png"), draw.boxes(image, fcn.detections, net.classes))
    cv2.imwrite(os.path.join(out_dir, "heat.png"), draw.heatmap(image, fcn.levels, net.window, net.classes,
                                                                net.background))
    log(f"wrote {out_dir}/scene.png, boxes.png and heat.png")
    return results
