"""The Detector servicer: protobuf in, detector.detect, protobuf out. Nothing else."""
import time

import grpc
import numpy as np

from detector.detect import DetectOptions, detect

from . import detector_pb2 as pb
from . import detector_pb2_grpc
from .images import BadImage, ImageTooLarge, decode

MODES = {pb.MODE_UNSPECIFIED: "fcn", pb.FCN: "fcn", pb.SLIDING: "sliding"}


class _Stop(Exception):
    """The call's deadline expired or it was cancelled: stop the work."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _checker(context):
    def check():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise _Stop(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline expired: the work was stopped")
        if not context.is_active():
            raise _Stop(grpc.StatusCode.CANCELLED, "the call was cancelled: the work was stopped")
    return check


def detect_options(request):
    """The :class:`DetectOptions` of a request; unset fields keep their defaults."""
    if request.mode not in MODES:
        raise ValueError(f"unknown mode {request.mode}: use FCN or SLIDING")
    options = {"mode": MODES[request.mode], "class_agnostic": request.class_agnostic,
               "return_maps": request.return_score_maps}
    if request.stride:
        options["stride"] = request.stride
    if request.scales:
        options["scales"] = tuple(request.scales)
    if request.min_size:
        options["min_size"] = request.min_size
    if request.max_size:
        options["max_size"] = request.max_size
    if request.HasField("score_threshold"):
        options["score_threshold"] = request.score_threshold
    if request.HasField("nms_iou"):
        options["nms_iou"] = request.nms_iou
    if request.max_detections:
        options["max_detections"] = request.max_detections
    return DetectOptions(**options)


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(self, net, identity, max_pixels):
        self.net, self.max_pixels = net, max_pixels
        self.identity = pb.ModelIdentity(**identity)
        self.served_by = ""

    def Detect(self, request, context):
        start = time.perf_counter()
        code = message = None
        try:
            image = decode(request, self.max_pixels)
            decoded = time.perf_counter()
            result = detect(image, self.net, detect_options(request), check=_checker(context))
        except ImageTooLarge as error:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
        except _Stop as stop:
            code, message = stop.code, str(stop)
        except (BadImage, ValueError, TypeError) as error:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(error)
        if code is not None:
            context.abort(code, message)
        reply = pb.DetectReply(model=self.identity, served_by=self.served_by,
                               image_height=result.image_size[0], image_width=result.image_size[1],
                               truncated=result.truncated)
        for d in result.detections:
            reply.detections.add(box=pb.Box(x0=d.box[0], y0=d.box[1], x1=d.box[2], y1=d.box[3]),
                                 label=d.label, score=d.score)
        for level in result.levels:
            scores = np.ascontiguousarray(level.scores, "<f4")
            reply.score_maps.add(scale=level.scale, stride=level.stride, classes=scores.shape[0],
                                 height=scores.shape[1], width=scores.shape[2], data=scores.tobytes(),
                                 pad=level.pad)
        t = result.timings
        reply.timings.CopyFrom(pb.Timings(
            decode_ms=(decoded - start) * 1e3, pyramid_ms=t["pyramid"] * 1e3, inference_ms=t["inference"] * 1e3,
            nms_ms=t["nms"] * 1e3, total_ms=(time.perf_counter() - start) * 1e3))
        return reply

    def GetModelInfo(self, request, context):
        import json

        return pb.ModelInfo(
            model=self.identity, classes=self.net.classes, window_height=self.net.window[0],
            window_width=self.net.window[1], stride=self.net.total_stride[0], spec=self.net.spec,
            metrics_json=json.dumps(self.net.metrics), served_by=self.served_by, channels=self.net.channels,
            background=self.net.background, object_size=self.net.object_size, box_aspects=self.net.box_aspects,
            box_regression=self.net.box_regression)
