"""The detector command line: train, detect, eval, data, bench, serve, client, demo."""
import argparse
import json
import os
import sys


def _detect_options(p):
    p.add_argument("--model", help="checkpoint (.npz); default: the shipped model")
    p.add_argument("--mode", choices=("fcn", "sliding"), default="fcn")
    p.add_argument("--stride", type=int, help="pixels between windows in each level (default: the net's)")
    p.add_argument("--threshold", type=float, default=0.5, help="smallest score kept")
    p.add_argument("--nms-iou", type=float, default=0.3, help="overlap above which NMS suppresses")
    p.add_argument("--class-agnostic", action="store_true", help="NMS across classes too")
    p.add_argument("--max-detections", type=int, default=100)
    p.add_argument("--min-size", type=float, default=16, help="smallest digit height sought, in pixels")
    p.add_argument("--max-size", type=float, help="largest digit height sought (default: the image)")
    p.add_argument("--scale-step", type=float, default=2 ** (1 / 3), help="ratio of neighbouring pyramid levels")


def _detect_kwargs(args):
    return dict(mode=args.mode, stride=args.stride, score_threshold=args.threshold, nms_iou=args.nms_iou,
                class_agnostic=args.class_agnostic, max_detections=args.max_detections,
                min_size=args.min_size, max_size=args.max_size, scale_step=args.scale_step)


def _parser():
    from .model import DEFAULT_SPEC
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="detector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the classifier on generated patches")
    d = TrainConfig(out="")
    train.add_argument("--out", required=True, help="checkpoint to write (.npz), the best model on validation")
    train.add_argument("--epochs", type=int, default=d.epochs)
    train.add_argument("--batch-size", type=int, default=d.batch_size)
    train.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    train.add_argument("--momentum", type=float, default=d.momentum)
    train.add_argument("--weight-decay", type=float, default=d.weight_decay)
    train.add_argument("--seed", type=int, default=d.seed, help="initialisation, shuffling and data seeds")
    train.add_argument("--spec", default=DEFAULT_SPEC, help=f"architecture (default: {DEFAULT_SPEC!r})")
    train.add_argument("--train-size", type=int, default=d.train_size, help="training patches")
    train.add_argument("--val-size", type=int, default=d.val_size, help="validation patches")
    train.add_argument("--mine-rounds", type=int, default=d.mine_rounds,
                       help="rounds of hard-negative mining on generated scenes after training")
    train.add_argument("--mine-scenes", type=int, default=d.mine_scenes, help="scenes searched per round")
    train.add_argument("--mine-epochs", type=int, default=d.mine_epochs, help="epochs of retraining per round")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    detect = commands.add_parser("detect", help="find digits in an image")
    detect.add_argument("image", help="PNG, JPEG or any image OpenCV reads")
    _detect_options(detect)
    detect.add_argument("--json", action="store_true", help="print the detections as JSON")
    detect.add_argument("--out", help="write the image with boxes, labels and scores (PNG)")
    detect.add_argument("--heatmap", help="write the score maps as a colour overlay (PNG)")
    detect.add_argument("--coco-json", help="write the detections in the COCO results format")
    detect.add_argument("--image-id", type=int, default=0, help="image_id for --coco-json")

    evaluate = commands.add_parser("eval", help="average precision on a folder of scenes")
    evaluate.add_argument("--scenes", required=True, help="folder written by 'detector data scenes'")
    _detect_options(evaluate)
    evaluate.add_argument("--json", action="store_true", help='print {"map": ..., "ap": {class: ...}}')

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

    config = TrainConfig(out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         momentum=args.momentum, weight_decay=args.weight_decay, seed=args.seed,
                         spec=args.spec, train_size=args.train_size, val_size=args.val_size,
                         mine_rounds=args.mine_rounds, mine_scenes=args.mine_scenes,
                         mine_epochs=args.mine_epochs, progress=not args.no_progress)
    net, summary = train(config)
    print(format_summary(summary, net.classes))
    print(f"wrote {args.out}")
    return 130 if summary["interrupted"] else 0


def _read_image(path):
    import cv2
    import numpy as np

    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read an image from {path}")
    if image.dtype == np.uint16:
        image = image.astype(np.float32) / 65535
    return image


def _detect(args):
    import cv2

    from . import draw, load_model
    from .detect import as_gray, detect

    net = load_model(args.model)
    image = _read_image(args.image)
    result = detect(image, net, return_maps=bool(args.heatmap), **_detect_kwargs(args))
    if args.json:
        print(json.dumps({"image": args.image, "size": list(result.image_size), "timings": result.timings,
                          "detections": [{"box": list(d.box), "label": d.label, "score": d.score}
                                         for d in result.detections]}, indent=2))
    else:
        for d in result.detections:
            print(f"{d.label} {d.score:.3f} " + " ".join(f"{v:.1f}" for v in d.box))
        print(f"{len(result.detections)} detections in {sum(result.timings.values()) * 1e3:.0f} ms ({args.mode})")
    pictures = ((args.out, lambda gray: draw.boxes(gray, result.detections)),
                (args.heatmap, lambda gray: draw.heatmap(gray, result.levels, net.window)))
    for path, picture in pictures:
        if path and not cv2.imwrite(path, picture((as_gray(image) * 255).round().astype("uint8"))):
            raise ValueError(f"could not write {path}: use a .png path in an existing folder")
    if args.coco_json:
        coco = [{"image_id": args.image_id, "category_id": net.classes.index(d.label),
                 "bbox": [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]], "score": d.score}
                for d in result.detections]
        with open(args.coco_json, "w") as f:
            json.dump(coco, f)
    return 0


def _eval(args):
    from . import load_model
    from .detect import detect
    from .evaluate import mean_average_precision
    from .scenes import read_scenes

    net = load_model(args.model)
    images = []
    for image, boxes, labels in read_scenes(args.scenes):
        found = detect(image, net, **_detect_kwargs(args)).detections
        images.append(([(d.box, d.label, d.score) for d in found], boxes, labels))
    result = mean_average_precision(images, net.classes[1:])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, ap in result["ap"].items():
            print(f"AP {name}: {ap:.4f}")
        print(f"mAP@0.5 over {len(images)} scenes ({args.mode}): {result['map']:.4f}")
    return 0


def _data(args):
    import cv2

    from . import data
    from .scenes import write_scenes

    if args.data_command == "scenes":
        entries = write_scenes(args.n, args.seed, args.out)
        print(f"wrote {len(entries)} scenes and annotations.json to {args.out}")
        return 0
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    x, labels = data.patches(args.n, args.seed)
    if not cv2.imwrite(args.out, data.preview(x, labels)):
        raise ValueError(f"could not write {args.out}: use a .png path in an existing folder")
    print(f"wrote {args.out}: {args.n} patches, seed {args.seed}")
    return 0


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
    ca = open(args.tls_ca, "rb").read() if args.tls_ca else None
    with DetectorClient(args.addr, token=args.token, root_certificates=ca, timeout=args.timeout) as client:
        try:
            reply = client.detect(args.image, mode=args.mode, **options)
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
        picture = draw.boxes(cv2.imread(args.image, cv2.IMREAD_GRAYSCALE), found)
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
