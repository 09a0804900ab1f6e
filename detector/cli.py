"""The detector command line: train, detect, eval, data, bench, serve, client, demo."""
import argparse
import json
import os
import sys

import numpy as np


def _detect_options(p):
    from .detect import MODES, DetectOptions

    d = DetectOptions()
    p.add_argument("--model", help="checkpoint (.npz); default: the shipped model")
    p.add_argument("--mode", choices=MODES, default=d.mode)
    p.add_argument("--stride", type=int, help="pixels between windows in each level (default: the net's)")
    p.add_argument("--threshold", type=float, default=d.score_threshold, help="smallest score kept")
    p.add_argument("--nms-iou", type=float, default=d.nms_iou, help="overlap above which NMS suppresses")
    p.add_argument("--class-agnostic", action="store_true", help="NMS across classes too")
    p.add_argument("--max-detections", type=int, default=d.max_detections,
                   help="keep the best N after NMS (a cut is reported)")
    p.add_argument("--min-size", type=float, default=d.min_size,
                   help="smallest object sought: its longer side in pixels")
    p.add_argument("--max-size", type=float, help="largest object sought (default: the image's longer side)")
    p.add_argument("--scale-step", type=float, default=d.scale_step, help="ratio of neighbouring pyramid levels")


def _detect_options_of(args, **changes):
    from .detect import DetectOptions

    return DetectOptions(mode=args.mode, stride=args.stride, score_threshold=args.threshold, nms_iou=args.nms_iou,
                         class_agnostic=args.class_agnostic, max_detections=args.max_detections,
                         min_size=args.min_size, max_size=args.max_size, scale_step=args.scale_step, **changes)


def _parser():
    from .architecture import DEFAULT_SPEC
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="detector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the classifier on the built-in digits or your own data",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = TrainConfig(out="")
    train.add_argument("--out", required=True, help="checkpoint to write (.npz), the best model on validation")
    train.add_argument("--data", default=d.data,
                       help="'digits' (built in), a COCO instances JSON, or a folder of class sub-folders of crops")
    train.add_argument("--images", help="folder of a COCO data set's images (default: the JSON's folder)")
    train.add_argument("--background", default=d.background, help="name of the crop folder's background class")
    train.add_argument("--negatives", help="folder of images with none of the objects: more background, and mined")
    train.add_argument("--channels", type=int, choices=(1, 3), default=d.channels, help="1: gray, 3: BGR colour")
    train.add_argument("--object-size", type=float,
                       help="an object's longer side as a fraction of the window (default: 0.65 for COCO, "
                            "1 for crops; the digits' own)")
    train.add_argument("--val-fraction", type=float, default=d.val_fraction, help="images held out for validation")
    train.add_argument("--windows-per-box", type=int, default=d.windows_per_box,
                       help="jittered training windows cut around each box")
    train.add_argument("--skip-bad", action="store_true",
                       help="skip unreadable images and bad annotations (counted in the log) instead of stopping")
    train.add_argument("--no-box-regression", action="store_true", help="no box-regression head")
    train.add_argument("--epochs", type=int, default=d.epochs)
    train.add_argument("--batch-size", type=int, default=d.batch_size)
    train.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    train.add_argument("--momentum", type=float, default=d.momentum)
    train.add_argument("--weight-decay", type=float, default=d.weight_decay)
    train.add_argument("--seed", type=int, default=d.seed, help="initialisation, shuffling and data seeds")
    train.add_argument("--spec", default=DEFAULT_SPEC, help="architecture; its last fc is set to the classes")
    train.add_argument("--train-size", type=int, default=d.train_size, help="training patches (digits)")
    train.add_argument("--val-size", type=int, default=d.val_size, help="validation patches (digits)")
    train.add_argument("--mine-rounds", type=int, default=d.mine_rounds,
                       help="rounds of hard-negative mining on the training images after training")
    train.add_argument("--mine-scenes", type=int, default=d.mine_scenes, help="generated scenes per round (digits)")
    train.add_argument("--mine-epochs", type=int, default=d.mine_epochs, help="epochs of retraining per round")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    detect = commands.add_parser("detect", help="find the model's objects in an image")
    detect.add_argument("image", help="PNG, JPEG or any image OpenCV reads")
    _detect_options(detect)
    detect.add_argument("--json", action="store_true", help="print the detections as JSON")
    detect.add_argument("--out", help="write the image with boxes, labels and scores (PNG)")
    detect.add_argument("--heatmap", help="write the score maps as a colour overlay (PNG)")
    detect.add_argument("--heatmap-class", help="show this class's probability (default: the best object class)")
    detect.add_argument("--coco-json", help="write the detections in the COCO results format")
    detect.add_argument("--image-id", type=int, default=0, help="image_id for --coco-json")

    evaluate = commands.add_parser("eval", help="average precision on scenes or on a COCO data set")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenes", help="folder written by 'detector data scenes'")
    source.add_argument("--coco", help="COCO instances JSON with the ground truth")
    source.add_argument("--digits", action="store_true",
                        help="a digit model on held-out fonts, held-out photographs and generated scenes")
    evaluate.add_argument("--n", type=int, default=200, help="generated scenes per split (--digits)")
    evaluate.add_argument("--images", help="folder of the COCO data set's images (default: the JSON's folder)")
    _detect_options(evaluate)
    evaluate.add_argument("--coco-json", dest="results_json",
                          help="write the detections as COCO results, with the data set's category ids")
    evaluate.add_argument("--json", action="store_true", help="print the figures as one JSON object")

    data = commands.add_parser("data", help="generate and look at data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    preview = data_commands.add_parser("preview", help="draw a labelled grid of training patches")
    preview.add_argument("--out", required=True, help="PNG to write")
    preview.add_argument("--n", type=int, default=160, help="how many patches")
    preview.add_argument("--seed", type=int, default=0)
    scenes = data_commands.add_parser("scenes", help="write scenes with ground truth for 'detector eval'")
    scenes.add_argument("--n", type=int, default=200)
    scenes.add_argument("--seed", type=int, default=500000, help="scene i is drawn from seed + i")
    scenes.add_argument("--out", required=True, help="folder for the PNGs and annotations.json")
    scenes.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1: gray, 3: colour")
    scenes.add_argument("--held-out", action="store_true", help="draw with the fonts and photos training never sees")
    shapes = data_commands.add_parser("shapes", help="write a COCO data set of coloured shapes (a demo of your own data)")
    shapes.add_argument("--n", type=int, default=300, help="how many images")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--out", required=True, help="folder for the PNGs and annotations.json")
    shapes.add_argument("--photos", choices=("none", "train", "held-out"), default="none",
                        help="backgrounds: drawn, or crops of the bundled photographs of this split")
    shapes.add_argument("--size", default="320x240", help="image size WxH")

    bench = commands.add_parser("bench", help="measure speed on this machine")
    targets = bench.add_subparsers(dest="target", required=True)
    layers = targets.add_parser("layers", help="forward and backward of each layer kernel against NumPy")
    layers.add_argument("--json", action="store_true", help="print one JSON object")
    bdetect = targets.add_parser("detect", help="sliding windows against the fully convolutional net")
    bdetect.add_argument("--sizes", default="128,256,512,1024", help="image sides, comma-separated")
    bdetect.add_argument("--large", type=int, default=4096, help="side of the image for the FCN's peak memory (0: skip)")
    bdetect.add_argument("--json", action="store_true", help="print one JSON object")
    bdetect.add_argument("--plot", help="write a plot of time against size (PNG)")

    bserve = targets.add_parser("serve", help="served throughput and latency under concurrent load")
    bserve.add_argument("--addr", help="a running server (default: start one on loopback)")
    bserve.add_argument("--concurrency", default="1,4,16", help="client threads, comma-separated")
    bserve.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    bserve.add_argument("--mode", choices=("fcn", "sliding"), default="fcn")
    bserve.add_argument("--size", default="640x480", help="image size WxH")
    bserve.add_argument("--json", action="store_true", help="print one JSON object")

    serve = commands.add_parser("serve", help="serve detection over gRPC (detector.v1)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=50051, help="0 takes a free port")
    serve.add_argument("--model", help="checkpoint (.npz); default: the shipped model")
    serve.add_argument("--workers", type=int, help="requests run at once (default: the cores)")
    serve.add_argument("--threads", type=int, help="kernel threads per request (default: cores / workers)")
    serve.add_argument("--max-message-mb", type=float, default=16, help="largest request or reply")
    serve.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image, checked before decoding")
    serve.add_argument("--max-concurrent", type=int, help="calls in the server at once, running or queued (default: 8 x workers)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--token", default=os.environ.get("DETECTOR_TOKEN"),
                       help="require 'authorization: Bearer TOKEN' (default: $DETECTOR_TOKEN)")
    serve.add_argument("--grace", type=float, default=30, help="seconds calls in flight get on SIGTERM")

    client = commands.add_parser("client", help="call a detector server")
    client.add_argument("image", help="PNG or JPEG file")
    client.add_argument("--addr", default="127.0.0.1:50051")
    client.add_argument("--mode", choices=("fcn", "sliding"), default="fcn")
    client.add_argument("--threshold", type=float, help="smallest score kept (server default 0.5)")
    client.add_argument("--class-agnostic", action="store_true")
    client.add_argument("--json", action="store_true", help="print the reply as JSON")
    client.add_argument("--out", help="write the image with boxes (PNG)")
    client.add_argument("--token", default=os.environ.get("DETECTOR_TOKEN"))
    client.add_argument("--tls-ca", help="PEM root certificates: connect with TLS")
    client.add_argument("--timeout", type=float, default=60, help="seconds before DEADLINE_EXCEEDED")

    demo = commands.add_parser("demo", help="draw a scene, detect with both modes, compare")
    demo.add_argument("--out", default="demo-output", help="folder for the pictures")
    demo.add_argument("--seed", type=int, default=7)
    return parser


def _train(args):
    from .train import TrainConfig, format_summary, train

    _check_writable(args.out)
    config = TrainConfig(out=args.out, data=args.data, channels=args.channels, images=args.images,
                         background=args.background, negatives=args.negatives, object_size=args.object_size,
                         val_fraction=args.val_fraction, windows_per_box=args.windows_per_box,
                         skip_bad=args.skip_bad, box_regression=not args.no_box_regression,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay, seed=args.seed,
                         spec=args.spec, train_size=args.train_size, val_size=args.val_size,
                         mine_rounds=args.mine_rounds, mine_scenes=args.mine_scenes,
                         mine_epochs=args.mine_epochs, progress=not args.no_progress)
    net, summary = train(config)
    print(format_summary(summary, net.classes))
    print(f"wrote {args.out}")
    return 130 if summary["interrupted"] else 0


def _check_writable(*paths):
    """Refuse, before any work, an output path that is a folder or whose folder does not exist."""
    for path in paths:
        if path and os.path.isdir(path):
            raise ValueError(f"cannot write {path}: it is a folder; give a file name")
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise ValueError(f"cannot write {path}: its folder does not exist")


def _read_image(path):
    """The image as it is stored (gray, BGR or BGRA; 16 bits become float in [0, 1])."""
    from .datasets.annotations import read_image

    image = read_image(path)
    return image.astype(np.float32) / 65535 if image.dtype == np.uint16 else image


def _detect(args):
    import cv2

    from . import draw, load_model
    from .detect import detect

    _check_writable(args.out, args.heatmap, args.coco_json)
    net = load_model(args.model)
    if args.heatmap_class is not None and args.heatmap_class not in net.objects:
        raise ValueError(f"--heatmap-class {args.heatmap_class!r} is not one of the model's classes {net.objects}")
    image = _read_image(args.image)
    result = detect(image, net, _detect_options_of(args, return_maps=bool(args.heatmap)))
    if args.json:
        print(json.dumps({"image": args.image, "size": list(result.image_size), "timings": result.timings,
                          "truncated": result.truncated,
                          "detections": [{"box": list(d.box), "label": d.label, "score": d.score}
                                         for d in result.detections]}, indent=2))
    else:
        for d in result.detections:
            print(f"{d.label} {d.score:.3f} " + " ".join(f"{v:.1f}" for v in d.box))
        print(f"{len(result.detections)} detections in {sum(result.timings.values()) * 1e3:.0f} ms ({args.mode})")
    if result.truncated:
        print(f"detector: kept the best {len(result.detections)} of {len(result.detections) + result.truncated} "
              "detections: raise --max-detections to see them all", file=sys.stderr)
    pictures = ((args.out, lambda: draw.boxes(image, result.detections, net.classes)),
                (args.heatmap, lambda: draw.heatmap(image, result.levels, net.window, net.classes, net.background,
                                                    only=args.heatmap_class)))
    for path, picture in pictures:
        if path and not cv2.imwrite(path, picture()):
            raise ValueError(f"could not write {path}: use a .png path in an existing folder")
    if args.coco_json:
        from .datasets.coco import results_json

        from .datasets.coco import atomic_write_json

        ids = net.data.get("category_ids") or {c: i for i, c in enumerate(net.classes)}
        atomic_write_json(args.coco_json, results_json([(args.image_id, [(d.box, d.label, d.score)
                                                                   for d in result.detections])], ids))
    return 0


def _ground_truth(args, net):
    """(image id, image, boxes, labels, crowd flags) of each image of ``--coco`` or
    ``--scenes``, and the category id of each class name."""
    if args.scenes:
        from .scenes import read_scenes

        scenes = ((i, image, boxes, labels, [False] * len(boxes))
                  for i, (image, boxes, labels) in enumerate(read_scenes(args.scenes)))
        return scenes, {c: i for i, c in enumerate(net.classes)}
    from .datasets.annotations import load_annotated
    from .datasets.coco import read_coco

    coco = read_coco(args.coco, images_dir=args.images, every_class_labelled=False)
    unknown = sorted(set(net.objects) - set(coco.classes))
    if unknown:
        raise ValueError(f"{args.coco} has no categories {unknown} of the model's classes {net.objects}")
    # crowd boxes are neither found nor missed, as COCOeval counts them
    scenes = ((r.image_id, load_annotated(r, 3), np.concatenate([r.boxes, r.ignore_boxes]),
               np.array(r.labels + r.ignore_labels, str), [False] * len(r.boxes) + [True] * len(r.ignore_boxes))
              for r in coco.images)
    return scenes, coco.category_id


def _eval(args):
    from . import load_model
    from .detect import detect
    from .evaluate import coco_average_precision, mean_average_precision

    _check_writable(args.results_json)
    net = load_model(args.model)
    options = _detect_options_of(args)
    if args.digits:
        from .digit_report import report

        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        figures = report(net, options, args.n, log=(lambda *_: None) if args.json else print)
        if args.json:
            print(json.dumps(figures, indent=2))
        return 0
    scenes, ids = _ground_truth(args, net)
    voc_images, coco_images, found = [], [], []
    for image_id, image, boxes, labels, crowd in scenes:
        detections = [(d.box, d.label, d.score) for d in detect(image, net, options).detections]
        plain = ~np.array(crowd, bool)
        voc_images.append((detections, boxes[plain], labels[plain]))
        coco_images.append((detections, boxes, labels, crowd))
        found.append((image_id, detections))
    voc = mean_average_precision(voc_images, net.objects)
    coco_ap = coco_average_precision(coco_images, net.objects)
    if args.results_json:
        from .datasets.coco import atomic_write_json, results_json

        atomic_write_json(args.results_json, results_json(found, ids))
    result = {"images": len(found), "mode": options.mode, "voc_map50": voc["map"], "ap50": coco_ap["ap50"],
              "ap": coco_ap["ap"], "ap75": coco_ap["ap75"],
              "per_class": {c: {"voc_ap50": voc["ap"].get(c), **coco_ap["per_class"].get(c, {})} for c in net.objects}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'class':>12} {'VOC AP50':>9} {'AP50':>7} {'AP':>7}")
        for name, row in result["per_class"].items():
            if row["voc_ap50"] is not None:
                print(f"{name:>12} {row['voc_ap50']:9.4f} {row['ap50']:7.4f} {row['ap']:7.4f}")
        print(f"over {len(found)} images ({options.mode}): VOC mAP@0.5 {voc['map']:.4f}, "
              f"COCO AP@0.5 {coco_ap['ap50']:.4f}, AP@[.5:.95] {coco_ap['ap']:.4f}")
    return 0


def _data(args):
    import cv2

    if args.data_command == "scenes":
        from .scenes import write_scenes

        entries = write_scenes(args.n, args.seed, args.out, channels=args.channels,
                               split="held-out" if args.held_out else "train")
        print(f"wrote {len(entries)} scenes and annotations.json to {args.out}")
        return 0
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.data_command == "shapes":
        from .datasets.shapes import write_shapes

        from .datasets import photos

        backgrounds = None if args.photos == "none" else [photos.load(n, 3) for n in photos.photos(args.photos)]
        path = write_shapes(args.out, args.n, args.seed, size=_size(args.size), photos=backgrounds)
        print(f"wrote {args.n} images and {path}")
        return 0
    from .datasets import digits

    _check_writable(args.out)
    x, labels, _ = digits.patches(args.n, args.seed)
    if not cv2.imwrite(args.out, digits.preview(x, labels)):
        raise ValueError(f"could not write {args.out}: use a .png path in an existing folder")
    print(f"wrote {args.out}: {args.n} patches, seed {args.seed}")
    return 0


def _size(text):
    """(width, height) from "WxH"."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must be WxH in pixels, such as 640x480, got {text!r}") from None
    if not (32 <= width <= 8192 and 32 <= height <= 8192):
        raise ValueError(f"size must be between 32x32 and 8192x8192, got {text!r}")
    return width, height


def _bench(args):
    if args.target == "serve":
        from detector_server import bench

        return bench.main(args)
    from .bench import detect, layers

    return (layers if args.target == "layers" else detect).main(args)


def _serve(args):
    from detector_server import serve

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    tls = None
    if args.tls_cert:
        with open(args.tls_cert, "rb") as cert, open(args.tls_key, "rb") as key:
            tls = (cert.read(), key.read())
    return serve(grace=args.grace, model=args.model, host=args.host, port=args.port, workers=args.workers,
                 threads=args.threads, max_message_mb=args.max_message_mb, max_pixels=args.max_pixels,
                 max_concurrent=args.max_concurrent, token=args.token, tls=tls)


def _client(args):
    import grpc

    from detector_server import DetectorClient, reply_to_dict

    options = {"class_agnostic": args.class_agnostic}
    if args.threshold is not None:
        options["score_threshold"] = args.threshold
    _check_writable(args.out)
    ca = open(args.tls_ca, "rb").read() if args.tls_ca else None
    with DetectorClient(args.addr, token=args.token, root_certificates=ca, timeout=args.timeout) as client:
        try:
            reply = client.detect(args.image, mode=args.mode, **options)
            classes = list(client.model_info().classes) if args.out else None  # one colour per class
        except grpc.RpcError as error:
            print(f"detector: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    result = reply_to_dict(reply)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for d in result["detections"]:
            print(f"{d['label']} {d['score']:.3f} " + " ".join(f"{v:.1f}" for v in d["box"]))
        print(f"{len(result['detections'])} detections, {result['timings_ms']['total_ms']:.0f} ms on "
              f"{result['served_by']} ({result['model']['name']} {result['model']['checksum'][:12]})")
    if args.out:
        import cv2

        from . import draw
        from .detect import Detection

        found = [Detection(tuple(d["box"]), d["label"], d["score"]) for d in result["detections"]]
        picture = draw.boxes(_read_image(args.image), found, classes)
        if not cv2.imwrite(args.out, picture):
            raise ValueError(f"could not write {args.out}")
    return 0


def _demo(args):
    from detector_server import DetectorClient, reply_to_dict, start_server

    from .demo import run

    run(args.out, args.seed)
    # the same scene through the service: a server on a free loopback port, one call, shut down
    running = start_server(port=0)
    try:
        with DetectorClient(running.address, timeout=60) as client:
            reply = reply_to_dict(client.detect(os.path.join(args.out, "scene.png")))
    finally:
        running.stop(grace=5).wait()
    print(f"\ngRPC: a server on {running.address} answered {len(reply['detections'])} detections "
          f"in {reply['timings_ms']['total_ms']:.0f} ms ({reply['model']['name']} "
          f"{reply['model']['checksum'][:12]}), then shut down:")
    for d in reply["detections"]:
        print(f"  {d['label']} {d['score']:.3f} ({', '.join(f'{v:.0f}' for v in d['box'])})")
    return 0


HANDLERS = {"train": _train, "detect": _detect, "eval": _eval, "data": _data, "bench": _bench,
            "serve": _serve, "client": _client, "demo": _demo}


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return HANDLERS[args.command](args)
    except (ValueError, TypeError, OSError) as error:
        parser.exit(2, f"detector: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
