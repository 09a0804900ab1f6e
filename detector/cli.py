"""The detector command line: train, detect, eval, data, bench, serve, client, export, demo.

Every error is one line on stderr and a non-zero exit status, never a traceback: 2 for a bad
argument, a bad input file or a refused request; 1 for a gRPC error from a server, or for an
internal error (set ``DETECTOR_DEBUG=1`` to see its traceback); 130 when interrupted.
Argument ranges are checked by the parser (:mod:`detector.cli_args`), before any work, and
output paths are checked before the work that would fill them. ``--json`` output uses one
vocabulary across commands (:mod:`detector.report_json`).
"""
import argparse
import inspect
import json
import os
import sys
import time

from . import cli_args as arg
from .messages import error_message, one_line


class _Help(argparse.HelpFormatter):
    """Help that shows each option's default, unless it has none or is an on/off flag (a help
    text then says what happens without it)."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        if (not action.option_strings or default is None or default is argparse.SUPPRESS
                or isinstance(default, bool) or "%(default)" in text):
            return text
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one line: what is wrong and where to read more."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _command(commands, name, text):
    return commands.add_parser(name, help=text, description=text, formatter_class=_Help)


def _version():
    from importlib import metadata

    try:
        return metadata.version("detector")
    except metadata.PackageNotFoundError:
        import detector

        return getattr(detector, "__version__", "unknown")


def _detect_options(p):
    from .detect import MODES, DetectOptions

    d = DetectOptions()
    p.add_argument("--model", help="checkpoint (.npz) (default: the shipped model)")
    p.add_argument("--mode", choices=MODES, default=d.mode,
                   help="fcn: the fully convolutional net; sliding: each window classified alone")
    p.add_argument("--stride", type=arg.count,
                   help="pixels between windows in each level (default: the net's total stride)")
    p.add_argument("--threshold", type=arg.probability, default=d.score_threshold, help="smallest score kept")
    p.add_argument("--nms-iou", type=arg.probability, default=d.nms_iou,
                   help="overlap above which NMS suppresses")
    p.add_argument("--class-agnostic", action="store_true", help="NMS across classes too")
    p.add_argument("--max-detections", type=arg.count, default=d.max_detections,
                   help="keep the best N after NMS (a cut is reported)")
    p.add_argument("--min-size", type=arg.positive, default=d.min_size,
                   help="smallest object sought: its longer side in pixels")
    p.add_argument("--max-size", type=arg.positive,
                   help="largest object sought, in pixels (default: the image's longer side)")
    p.add_argument("--scale-step", type=arg.scale_step, default=d.scale_step,
                   help="ratio of neighbouring pyramid levels")


def _budget_options(p):
    from .budget import Budget

    p.add_argument("--max-pixels", type=arg.count, default=Budget.max_pixels,
                   help="largest image in pixels, checked from its header before decoding")
    p.add_argument("--max-gflops", type=arg.positive, default=Budget.max_gflops,
                   help="most work per image, in GFLOP over all pyramid levels, estimated before any")
    p.add_argument("--max-memory-mb", type=arg.positive, default=Budget.max_memory_mb,
                   help="most memory per image, in MB, estimated before any work")


def _detect_options_of(args, **changes):
    from .detect import DetectOptions

    return DetectOptions(mode=args.mode, stride=args.stride, score_threshold=args.threshold, nms_iou=args.nms_iou,
                         class_agnostic=args.class_agnostic, max_detections=args.max_detections,
                         min_size=args.min_size, max_size=args.max_size, scale_step=args.scale_step, **changes)


def _parser():
    from detector_server import app

    from .architecture import DEFAULT_SPEC
    from .train import TrainConfig

    parser = _Parser(prog="detector", description=__doc__.split("\n")[0], formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"detector {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = _command(commands, "train", "train the classifier on the built-in digits or your own data")
    d = TrainConfig(out="")
    train.add_argument("--out", required=True, help="checkpoint to write (.npz), the best model on validation")
    train.add_argument("--data", default=d.data,
                       help="'digits' (built in), a COCO instances JSON, or a folder of class sub-folders of crops")
    train.add_argument("--images", help="folder of a COCO data set's images (default: the JSON's folder)")
    train.add_argument("--background", default=d.background, help="name of the crop folder's background class")
    train.add_argument("--negatives", help="folder of images with none of the objects: more background, and mined")
    train.add_argument("--channels", type=int, choices=(1, 3), default=d.channels, help="1: gray, 3: BGR colour")
    train.add_argument("--object-size", type=arg.number(0, 1, low_open=True),
                       help="an object's longer side as a fraction of the window (default: 0.65 for COCO, "
                            "1 for crops; the digits' own)")
    train.add_argument("--val-fraction", type=arg.fraction, default=d.val_fraction,
                       help="images held out for validation")
    train.add_argument("--windows-per-box", type=arg.count, default=d.windows_per_box,
                       help="jittered training windows cut around each box")
    train.add_argument("--skip-bad", action="store_true",
                       help="skip unreadable images and bad annotations (counted in the log) instead of stopping")
    train.add_argument("--no-box-regression", action="store_true", help="no box-regression head")
    train.add_argument("--epochs", type=arg.count, default=d.epochs, help="passes over the training windows")
    train.add_argument("--batch-size", type=arg.count, default=d.batch_size, help="windows per SGD step")
    train.add_argument("--lr", type=arg.positive, default=d.lr, help="peak learning rate")
    train.add_argument("--momentum", type=arg.number(0, 1, high_open=True), default=d.momentum, help="SGD momentum")
    train.add_argument("--weight-decay", type=arg.non_negative_number, default=d.weight_decay, help="L2 penalty")
    train.add_argument("--seed", type=arg.non_negative, default=d.seed, help="initialisation, shuffling and data seeds")
    train.add_argument("--spec", default=DEFAULT_SPEC, help="architecture; its last fc is set to the classes")
    train.add_argument("--train-size", type=arg.count, default=d.train_size, help="training patches (digits)")
    train.add_argument("--val-size", type=arg.count, default=d.val_size, help="validation patches (digits)")
    train.add_argument("--mine-rounds", type=arg.non_negative, default=d.mine_rounds,
                       help="rounds of hard-negative mining on the training images after training")
    train.add_argument("--mine-scenes", type=arg.count, default=d.mine_scenes,
                       help="generated scenes per round (digits)")
    train.add_argument("--mine-epochs", type=arg.count, default=d.mine_epochs, help="epochs of retraining per round")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    detect = _command(commands, "detect", "find the model's objects in images")
    detect.add_argument("images", nargs="+", metavar="PATH",
                        help="PNG, JPEG, BMP, TIFF or WebP files, folders (searched recursively), globs "
                             "or @list.txt (one path a line); more than one image runs a batch")
    _detect_options(detect)
    _budget_options(detect)
    detect.add_argument("--json", action="store_true", help="print the detections as JSON")
    detect.add_argument("--out", help="write the image with boxes, labels and scores (PNG)")
    detect.add_argument("--heatmap", help="write the score maps as a colour overlay (PNG)")
    detect.add_argument("--heatmap-class", help="show this class's probability (default: the best object class)")
    detect.add_argument("--coco-json", help="write the detections in the COCO results format")
    detect.add_argument("--image-id", type=arg.non_negative, default=0, help="image_id for --coco-json")
    detect.add_argument("--jsonl", help="batch: stream one JSON object per image to this file as it finishes")
    detect.add_argument("--resume", action="store_true",
                        help="batch: skip the images --jsonl already holds without an error")
    detect.add_argument("--out-dir", help="batch: write each image with its boxes here (PNG)")
    detect.add_argument("--workers", type=arg.count, default=1,
                        help="batch: processes, each with the model loaded once and cores / N kernel threads")
    detect.add_argument("--scheduler", metavar="ADDRESS",
                        help="batch: run on this Dask distributed scheduler (tcp://host:8786); the workers "
                             "read the model and the images by path")
    detect.add_argument("--no-progress", action="store_true", help="batch: no progress bar")

    evaluate = _command(commands, "eval", "average precision on scenes or on a COCO data set")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--scenes", help="folder written by 'detector data scenes'")
    source.add_argument("--coco", help="COCO instances JSON with the ground truth")
    source.add_argument("--digits", action="store_true",
                        help="a digit model on held-out fonts, held-out photographs and generated scenes")
    evaluate.add_argument("--n", type=arg.count, default=200, help="generated scenes per split (--digits)")
    evaluate.add_argument("--images", help="folder of the COCO data set's images (default: the JSON's folder)")
    _detect_options(evaluate)
    evaluate.add_argument("--coco-json", dest="results_json",
                          help="write the detections as COCO results, with the data set's category ids")
    evaluate.add_argument("--json", action="store_true", help="print the figures as one JSON object")

    data = _command(commands, "data", "generate and look at data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="WHAT")
    preview = _command(data_commands, "preview", "draw a labelled grid of training patches")
    preview.add_argument("--out", required=True, help="PNG to write")
    preview.add_argument("--n", type=arg.count, default=160, help="how many patches")
    preview.add_argument("--seed", type=arg.non_negative, default=0, help="patch i is drawn from this seed")
    scenes = _command(data_commands, "scenes", "write scenes with ground truth for 'detector eval'")
    scenes.add_argument("--n", type=arg.count, default=200, help="how many scenes")
    scenes.add_argument("--seed", type=arg.non_negative, default=500000, help="scene i is drawn from seed + i")
    scenes.add_argument("--out", required=True, help="folder for the PNGs and annotations.json")
    scenes.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1: gray, 3: colour")
    scenes.add_argument("--held-out", action="store_true", help="draw with the fonts and photos training never sees")
    shapes = _command(data_commands, "shapes", "write a COCO data set of coloured shapes (a demo of your own data)")
    shapes.add_argument("--n", type=arg.count, default=300, help="how many images")
    shapes.add_argument("--seed", type=arg.non_negative, default=0, help="seed of the drawing")
    shapes.add_argument("--out", required=True, help="folder for the PNGs and annotations.json")
    shapes.add_argument("--photos", choices=("none", "train", "held-out"), default="none",
                        help="backgrounds: drawn, or crops of the bundled photographs of this split")
    shapes.add_argument("--size", type=arg.image_size, default="320x240", help="image size WxH")

    bench = _command(commands, "bench", "measure speed on this machine")
    targets = bench.add_subparsers(dest="target", required=True, metavar="TARGET")
    layers = _command(targets, "layers", "forward and backward of each layer kernel against NumPy and PyTorch")
    layers.add_argument("--json", action="store_true", help="print one JSON object")
    balg = _command(targets, "algorithms", "each inference convolution kernel over layer shapes, "
                                           "against the cost model's choice")
    balg.add_argument("--threads", type=arg.count, default=1, help="kernel threads")
    balg.add_argument("--json", action="store_true", help="print one JSON object")
    bfcn = _command(targets, "fcn", "the shipped model's fully convolutional pass against PyTorch and ONNX Runtime")
    bfcn.add_argument("--threads", type=arg.whole_list(1), default="1,2", help="thread counts, comma-separated")
    bfcn.add_argument("--sizes", type=arg.whole_list(32), default="256,512,1024,2048",
                      help="square image sides, comma-separated, each at least the 32-pixel window")
    bfcn.add_argument("--json", action="store_true", help="print one JSON object")
    btrain = _command(targets, "train", "a training step of the default architecture against PyTorch")
    btrain.add_argument("--threads", type=arg.whole_list(1), default="1,2", help="thread counts, comma-separated")
    btrain.add_argument("--batch", type=arg.count, default=64, help="windows per step")
    btrain.add_argument("--json", action="store_true", help="print one JSON object")
    bdetect = _command(targets, "detect", "sliding windows against the fully convolutional net")
    bdetect.add_argument("--sizes", type=arg.whole_list(32), default="128,256,512,1024",
                         help="image sides, comma-separated, each at least the 32-pixel window")
    bdetect.add_argument("--large", type=arg.non_negative, default=4096,
                         help="side of the image for the FCN's peak memory (0: skip)")
    bdetect.add_argument("--json", action="store_true", help="print one JSON object")
    bdetect.add_argument("--plot", help="write a plot of time against size (PNG)")

    bserve = _command(targets, "serve", "served throughput and latency under concurrent load")
    bserve.add_argument("--addr", help="a running server's gRPC address (default: start one on loopback)")
    bserve.add_argument("--http-addr", help="that server's HTTP face, http://HOST:PORT (with --addr)")
    bserve.add_argument("--protocol", type=arg.choice_list(("grpc", "http")), default="grpc",
                        help="grpc, http or grpc,http: each concurrency over each, in turns, with their ratio")
    bserve.add_argument("--rounds", type=arg.count, default=1,
                        help="runs of each concurrency per protocol; the throughput is their median")
    bserve.add_argument("--concurrency", type=arg.whole_list(1), default="1,4,16",
                        help="client threads, comma-separated")
    bserve.add_argument("--requests", type=arg.count, default=200, help="requests per concurrency level")
    bserve.add_argument("--mode", choices=("fcn", "sliding"), default="fcn", help="detection mode")
    bserve.add_argument("--size", type=arg.image_size, default="640x480", help="image size WxH")
    bserve.add_argument("--json", action="store_true", help="print one JSON object")
    overload = _command(targets, "overload", "health checks under overload, shutdown times and peak memory "
                                             "of a real server process")
    overload.add_argument("--clients", type=arg.count, default=64, help="clients sending Detect calls back to back")
    overload.add_argument("--probes", type=arg.count, default=300, help="health checks timed under that load")
    overload.add_argument("--in-flight", type=arg.count, default=8, help="Detect calls running at SIGTERM")
    overload.add_argument("--json", action="store_true", help="print one JSON object")

    serve = _command(commands, "serve", "serve detection over gRPC (detector.v1), and HTTP/JSON with a page")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    serve.add_argument("--port", type=arg.port, default=50051, help="0 takes a free port")
    serve.add_argument("--http-port", type=arg.port,
                       help="also serve HTTP/JSON, Prometheus metrics and the page on this port (0: a free one)")
    serve.add_argument("--model", help="checkpoint (.npz) (default: the shipped model)")
    serve.add_argument("--workers", type=arg.count, help="requests run at once (default: the cores)")
    serve.add_argument("--threads", type=arg.count, help="kernel threads per request (default: cores / workers)")
    serve.add_argument("--max-message-mb", type=arg.message_mb,
                       default=inspect.signature(app.start_server).parameters["max_message_mb"].default,
                       help="largest request or reply")
    _budget_options(serve)
    serve.add_argument("--max-concurrent", type=arg.count,
                       help="calls in the server at once, running or queued (default: 8 x workers)")
    serve.add_argument("--max-request-seconds", type=arg.seconds, default=app.DEFAULT_MAX_REQUEST_SECONDS,
                       help="longest a call may run before DEADLINE_EXCEEDED")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--token", help="require 'authorization: Bearer TOKEN' (default: $DETECTOR_TOKEN)")
    serve.add_argument("--notice", type=arg.seconds_or_zero, default=app.DEFAULT_NOTICE,
                       help="seconds between NOT_SERVING and refusing new calls on SIGTERM")
    serve.add_argument("--grace", type=arg.seconds_or_zero, default=app.DEFAULT_GRACE,
                       help="seconds calls in flight get to finish on SIGTERM")

    client = _command(commands, "client", "call a detector server")
    client.add_argument("image", help="PNG, JPEG, BMP, TIFF or WebP file")
    client.add_argument("--addr", default="127.0.0.1:50051", help="the server, host:port")
    client.add_argument("--mode", choices=("fcn", "sliding"), default="fcn", help="detection mode")
    client.add_argument("--threshold", type=arg.probability, help="smallest score kept (default: the server's)")
    client.add_argument("--class-agnostic", action="store_true", help="NMS across classes too")
    client.add_argument("--json", action="store_true", help="print the reply as JSON")
    client.add_argument("--out", help="write the image with boxes (PNG)")
    client.add_argument("--token", help="send 'authorization: Bearer TOKEN' (default: $DETECTOR_TOKEN)")
    client.add_argument("--tls-ca", help="PEM root certificates: connect with TLS")
    client.add_argument("--timeout", type=arg.seconds, default=60.0, help="seconds before DEADLINE_EXCEEDED")

    export = _command(commands, "export", "write the model as ONNX, for other runtimes")
    export.add_argument("--onnx", required=True, help="the .onnx file to write")
    export.add_argument("--model", help="checkpoint (.npz) (default: the shipped model)")
    export.add_argument("--classifier", action="store_true",
                        help="the window classifier, (N, C, window) -> (N, classes), instead of the "
                             "fully convolutional net over images of any size")

    demo = _command(commands, "demo", "draw a scene, detect with both modes, compare")
    demo.add_argument("--out", default="demo-output", help="folder for the pictures")
    demo.add_argument("--seed", type=arg.non_negative, default=7, help="seed of the scene")
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
    """Refuse, before any work, an output path that is a folder or whose folder does not
    exist or cannot be written."""
    for path in paths:
        if not path:
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise ValueError(f"cannot write {path}: it is a folder; give a file name")
        if not os.path.isdir(folder):
            raise ValueError(f"cannot write {path}: its folder does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write {path}: its folder is not writable")


def _check_picture(*paths):
    """Refuse, before any work, a picture path that cannot be written or whose extension
    OpenCV cannot encode."""
    import cv2

    _check_writable(*paths)
    for path in paths:
        if path and not cv2.haveImageWriter(path):
            raise ValueError(f"cannot write {path}: OpenCV writes no such format; use a .png path")


def _write_picture(path, picture):
    import cv2

    try:
        written = cv2.imwrite(path, picture)
    except cv2.error as error:
        raise OSError(f"could not write {path}: {str(error).strip().splitlines()[-1]}") from None
    if not written:
        raise OSError(f"could not write {path}")


def _read_file(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise OSError(f"cannot read {what} {path}: {error.strerror or error}") from None


def _is_batch(args):
    """Whether ``detector detect`` runs a batch: more than one path, a folder, a glob, a list,
    or a batch option."""
    import glob as globbing

    first = args.images[0]
    return (len(args.images) > 1 or os.path.isdir(first) or first.startswith("@") or globbing.has_magic(first)
            or bool(args.jsonl or args.out_dir or args.resume or args.workers > 1 or args.scheduler))


def _detect(args):
    if _is_batch(args):
        return _detect_batch(args)
    from . import DEFAULT_MODEL, draw, images, load_model
    from .budget import Budget, OverBudget
    from .detect import detect
    from .report_json import model_json, result_json

    args.image = args.images[0]
    _check_picture(args.out, args.heatmap)
    _check_writable(args.coco_json)
    budget = Budget(args.max_pixels, args.max_gflops, args.max_memory_mb)
    options = _detect_options_of(args, return_maps=bool(args.heatmap))
    model_path = str(args.model or DEFAULT_MODEL)
    net = load_model(model_path)
    if args.heatmap_class is not None and args.heatmap_class not in net.objects:
        raise ValueError(f"--heatmap-class {args.heatmap_class!r} is not one of the model's classes {net.objects}")
    start = time.perf_counter()
    try:
        image = images.read(args.image, args.max_pixels)
    except images.ImageTooLarge as error:
        raise images.ImageTooLarge(f"{error} (--max-pixels)") from None
    decoded = time.perf_counter()
    try:
        result = detect(image, net, options, budget=budget)
    except OverBudget as error:
        raise OverBudget(f"{error} (limits: --max-gflops, --max-memory-mb)") from None
    report = {"image": args.image,
              **result_json(result, (decoded - start) * 1e3, (time.perf_counter() - start) * 1e3),
              "model": model_json(model_path)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for d in result.detections:
            print(f"{d.label} {d.score:.3f} " + " ".join(f"{v:.1f}" for v in d.box))
        print(f"{len(result.detections)} detections in {report['timings_ms']['total_ms']:.0f} ms ({args.mode})")
    if result.truncated:
        print(f"detector: kept the best {len(result.detections)} of {len(result.detections) + result.truncated} "
              "detections: raise --max-detections to see them all", file=sys.stderr)
    if args.out:
        _write_picture(args.out, draw.boxes(image, result.detections, net.classes))
    if args.heatmap:
        _write_picture(args.heatmap, draw.heatmap(image, result.levels, net.window, net.classes, net.background,
                                                  only=args.heatmap_class))
    if args.coco_json:
        from .datasets.coco import atomic_write_json, results_json

        atomic_write_json(args.coco_json, results_json([(args.image_id, [(d.box, d.label, d.score)
                                                                          for d in result.detections])],
                                                       _category_ids(net)))
    return 0


def _detect_batch(args):
    from . import DEFAULT_MODEL, load_model
    from .batch import Job, expand, latest_records, run
    from .budget import Budget
    from .report_json import model_json
    from .threads import get_num_threads

    for flag, value in (("--out", args.out), ("--heatmap", args.heatmap)):
        if value:
            raise ValueError(f"{flag} draws one image; a batch writes its pictures with --out-dir")
    if args.resume and not args.jsonl:
        raise ValueError("--resume needs --jsonl: the file of the run to resume")
    if args.scheduler and args.workers > 1:
        raise ValueError("--workers and --scheduler both say where to run: give one")
    if args.scheduler and args.out_dir:
        raise ValueError("--out-dir writes on this machine: it does not run with --scheduler")
    _check_writable(args.jsonl, args.coco_json)
    if args.out_dir and not os.path.isdir(args.out_dir):
        raise ValueError(f"--out-dir {args.out_dir}: no such folder")
    paths = expand(args.images)
    model_path = str(args.model or DEFAULT_MODEL)
    net = load_model(model_path)  # a model that cannot be read fails here, once
    job = Job(model_path, _detect_options_of(args), Budget(args.max_pixels, args.max_gflops, args.max_memory_mb),
              args.max_pixels, threads=max(1, get_num_threads() // args.workers) if args.workers > 1 else 0,
              out_dir=args.out_dir, _net=net)
    kept = []  # without a JSONL, the records --coco-json needs

    def show(record):
        if args.coco_json and not args.jsonl:
            kept.append(record)
        if args.jsonl:
            return
        if args.json:
            print(json.dumps(record))
        elif "error" in record:  # the message names the image
            print(f"error: {record['error']}")
        else:
            print(f"{record['image']}: {len(record['detections'])} detections in {record['timings_ms']['total_ms']:.0f} ms")
        sys.stdout.flush()

    summary = run(paths, job, args.jsonl, args.resume, args.workers, progress=not args.no_progress, on_record=show,
                  scheduler=args.scheduler)
    if args.coco_json:  # the whole batch, the images of earlier runs resumed from included
        from .datasets.coco import atomic_write_json, results_json

        done = [r for r in (latest_records(args.jsonl) if args.jsonl else kept) if "error" not in r]
        atomic_write_json(args.coco_json, results_json(
            [(r["image_id"], [(d["box"], d["label"], d["score"]) for d in r["detections"]]) for r in done],
            _category_ids(net)))
    model = model_json(model_path)
    where = f"on {args.scheduler}" if args.scheduler else f"{args.workers} worker{'s' if args.workers > 1 else ''}"
    print(f"detector: {summary['images']} images in {summary['seconds']:.1f} s ({summary['images_per_s']:.1f} images/s, "
          f"{where}), {summary['failed']} failed, "
          f"{summary['skipped']} skipped as done; model {model['name']} {model['checksum'][:12]}", file=sys.stderr)
    return 2 if summary["failed"] else 0


def _category_ids(net):
    """The COCO category id of each class: the training data's, or the class's index."""
    return net.data.get("category_ids") or {c: i for i, c in enumerate(net.classes)}


def _ground_truth(args, net):
    """(image id, image, boxes, labels, crowd flags) of each image of ``--coco`` or
    ``--scenes``, and the category id of each class name."""
    import numpy as np

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
    import numpy as np

    from . import load_model
    from .detect import detect
    from .evaluate import coco_average_precision, mean_average_precision

    _check_writable(args.results_json)
    net = load_model(args.model)
    options = _detect_options_of(args)
    if args.digits:
        from .digit_report import report

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
    if args.data_command == "scenes":
        from .scenes import write_scenes

        entries = write_scenes(args.n, args.seed, args.out, channels=args.channels,
                               split="held-out" if args.held_out else "train")
        print(f"wrote {len(entries)} scenes and annotations.json to {args.out}")
        return 0
    if args.data_command == "shapes":
        from .datasets import photos
        from .datasets.shapes import write_shapes

        backgrounds = None if args.photos == "none" else [photos.load(n, 3) for n in photos.photos(args.photos)]
        path = write_shapes(args.out, args.n, args.seed, size=args.size, photos=backgrounds)
        print(f"wrote {args.n} images and {path}")
        return 0
    from .datasets import digits

    _check_picture(args.out)
    x, labels, _ = digits.patches(args.n, args.seed)
    _write_picture(args.out, digits.preview(x, labels))
    print(f"wrote {args.out}: {args.n} patches, seed {args.seed}")
    return 0


def _bench(args):
    if args.target in ("serve", "overload"):
        from detector_server import bench, overload

        return (bench if args.target == "serve" else overload).main(args)
    import importlib

    if args.target == "detect":
        _check_picture(args.plot)
    return importlib.import_module(f".bench.{args.target}", __package__).main(args)


def _token(args):
    return args.token if args.token is not None else os.environ.get("DETECTOR_TOKEN")


def _serve(args):
    from detector_server import serve

    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    # read before anything loads: a missing file fails at once, not after the model
    tls = (_read_file(args.tls_cert, "--tls-cert"), _read_file(args.tls_key, "--tls-key")) if args.tls_cert else None
    return serve(grace=args.grace, notice=args.notice, model=args.model, host=args.host, port=args.port,
                 workers=args.workers, threads=args.threads, max_message_mb=args.max_message_mb,
                 max_pixels=args.max_pixels, max_gflops=args.max_gflops, max_memory_mb=args.max_memory_mb,
                 max_concurrent=args.max_concurrent, max_request_seconds=args.max_request_seconds,
                 token=_token(args), tls=tls, http_port=args.http_port)


def _client(args):
    from detector_server import DetectorClient, reply_to_dict

    from .images import MAX_PIXELS

    options = {"class_agnostic": args.class_agnostic}
    if args.threshold is not None:
        options["score_threshold"] = args.threshold
    _check_picture(args.out)
    encoded = _read_file(args.image, "the image")
    ca = _read_file(args.tls_ca, "--tls-ca") if args.tls_ca else None
    # gRPC errors (grpc.RpcError) reach main(), which prints their status in one line
    with DetectorClient(args.addr, token=_token(args), root_certificates=ca, timeout=args.timeout) as client:
        reply = client.detect(encoded, mode=args.mode, **options)
        classes = list(client.model_info().classes) if args.out else None  # one colour per class
    result = {"image": args.image, **reply_to_dict(reply)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for d in result["detections"]:
            print(f"{d['label']} {d['score']:.3f} " + " ".join(f"{v:.1f}" for v in d["box"]))
        print(f"{len(result['detections'])} detections, {result['timings_ms']['total_ms']:.0f} ms on "
              f"{result['served_by']} ({result['model']['name']} {result['model']['checksum'][:12]})")
    if args.out:
        from . import draw, images
        from .detect import Detection

        found = [Detection(tuple(d["box"]), d["label"], d["score"]) for d in result["detections"]]
        # the server took the image: so does the drawing, even past this machine's default limit
        image = images.read(args.image, max(MAX_PIXELS, reply.image_width * reply.image_height))
        _write_picture(args.out, draw.boxes(image, found, classes))
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


def _export(args):
    from . import DEFAULT_MODEL, load_model
    from .atomic import atomic_write
    from .export import onnx_model
    from .report_json import model_json

    _check_writable(args.onnx)
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ValueError("detector export needs the onnx package: pip install 'detector[onnx]'") from None
    model_path = str(args.model or DEFAULT_MODEL)
    net = load_model(model_path)
    model = onnx_model(net, classifier=args.classifier, source_sha256=model_json(model_path)["checksum"])
    with atomic_write(args.onnx) as f:
        f.write(model.SerializeToString())
    kind = "window classifier" if args.classifier else "fully convolutional net"
    print(f"wrote {args.onnx}: the {kind} of {model_path} ({', '.join(net.classes)})")
    return 0


HANDLERS = {"train": _train, "detect": _detect, "eval": _eval, "data": _data, "bench": _bench,
            "serve": _serve, "client": _client, "demo": _demo, "export": _export}


def _debug():
    return os.environ.get("DETECTOR_DEBUG", "") not in ("", "0")


def _rpc_status(error):
    """"CODE: details" of a gRPC error, or None for any other exception."""
    grpc = sys.modules.get("grpc")
    if grpc is None or not isinstance(error, grpc.RpcError) or not callable(getattr(error, "code", None)):
        return None
    return f"{error.code().name}: {error.details()}"


def _fail(status, line):
    print(line, file=sys.stderr)
    sys.exit(status)


def main(argv=None):
    """Run the command line (``argv`` without the program's name); return its exit status.
    Errors end in :class:`SystemExit` after one line on stderr."""
    # gRPC's C core logs handshake failures and the like on stderr, beside the one line we print
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        args = _parser().parse_args(argv)
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        _fail(130, "detector: interrupted")
    except BrokenPipeError:
        # the reader of stdout went away (| head): nothing more to say, and nothing to flush
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        sys.exit(1)
    except (ValueError, TypeError, OSError) as error:
        if _debug():
            raise
        _fail(2, f"detector: error: {error_message(error)}")
    except Exception as error:  # the last resort: still one line, and the way to see more
        if _debug():
            raise
        status = _rpc_status(error)
        if status is not None:
            _fail(1, f"detector: error: {one_line(status)}")
        _fail(1, f"detector: internal error: {type(error).__name__}: {error_message(error)}; "
                 "set DETECTOR_DEBUG=1 for the traceback")


if __name__ == "__main__":
    sys.exit(main())
