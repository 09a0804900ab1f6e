"""The Detector servicer: protobuf in, detector.detect, protobuf out.

Every Detect call is checked before any work: its options, its image's header against the
pixel limit, the estimated work and memory against the :class:`detector.budget.Budget`, and
the score maps it asks for against the send limit. Then it waits for a running slot
(:mod:`.admission`), decodes and detects, checking between levels and tiles that its
deadline has not passed: the client's, or the server's ``max_request_seconds`` ceiling,
whichever comes first.
"""
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np

from detector.budget import OverBudget
from detector.detect import DetectOptions, cost, detect

from . import detector_pb2 as pb
from . import detector_pb2_grpc
from .admission import Busy
from .images import BadImage, ImageTooLarge, RequestImage

MODES = {pb.MODE_UNSPECIFIED: "fcn", pb.FCN: "fcn", pb.SLIDING: "sliding"}
# a reply's bytes beside its score maps: detections, timings, identity
REPLY_RESERVE = 64 * 1024
MAX_MESSAGE_CHARS = 1000
DETECT_NICENESS = 10  # 1/10 of a normal thread's share of a busy core


class Stop(Exception):
    """The call's deadline passed or it was cancelled: stop the work."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Deadline:
    """``check()`` raises :class:`Stop` once the client's deadline or the server's ceiling
    of ``limit`` seconds from now has passed, or the client has gone away."""

    def __init__(self, context, limit):
        self.context, self.limit = context, limit
        self.end = time.monotonic() + limit

    def check(self):
        remaining = self.context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise Stop(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline expired: the work was stopped")
        if time.monotonic() >= self.end:
            raise Stop(grpc.StatusCode.DEADLINE_EXCEEDED,
                       f"the call ran past the server's limit of {self.limit:g} s per call: the work was stopped")
        if not self.context.is_active():
            raise Stop(grpc.StatusCode.CANCELLED, "the call was cancelled: the work was stopped")


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


def _lower_priority():
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DETECT_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at the same priority
        pass


def _bounded(error):
    """An error's message for the client, never unboundedly long."""
    text = str(error)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(self, net, identity, budget, admission, max_send_bytes, max_request_seconds):
        self.net, self.budget, self.admission = net, budget, admission
        # Detection runs on threads of its own at a lower CPU priority: on a saturated
        # machine the threads answering health checks and metadata get a core at once
        self.workers = ThreadPoolExecutor(admission.running, "detect", initializer=_lower_priority)
        self.max_send_bytes, self.max_request_seconds = max_send_bytes, max_request_seconds
        self.identity = pb.ModelIdentity(**identity)
        self.served_by = ""

    def Detect(self, request, context):
        start = time.perf_counter()
        deadline = Deadline(context, self.max_request_seconds)
        try:
            with self.admission.enter():
                options, image = self._admit(request)
                with self.admission.slot(deadline.check) as waited:
                    begun, decoded, result = self.workers.submit(self._work, image, options, deadline).result()
        except (Busy, ImageTooLarge, OverBudget) as error:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, _bounded(error))
        except Stop as stop:
            context.abort(stop.code, str(stop))
        except (BadImage, ValueError, TypeError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _bounded(error))
        reply = self._reply(result)
        t = result.timings
        reply.timings.CopyFrom(pb.Timings(
            decode_ms=(decoded - begun) * 1e3, pyramid_ms=t["pyramid"] * 1e3, inference_ms=t["inference"] * 1e3,
            nms_ms=t["nms"] * 1e3, total_ms=(time.perf_counter() - start) * 1e3, queue_ms=waited * 1e3))
        if reply.ByteSize() > self.max_send_bytes:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the reply is {reply.ByteSize():,} bytes, over the server's send limit of "
                          f"{self.max_send_bytes:,}: ask for fewer detections or no score maps")
        return reply

    def _work(self, image, options, deadline):
        deadline.check()
        begun = time.perf_counter()
        pixels = image.decode()
        decoded = time.perf_counter()
        return begun, decoded, detect(pixels, self.net, options, check=deadline.check)

    def _admit(self, request):
        """The options and the (undecoded) image of a request, checked against the limits."""
        options = detect_options(request)
        image = RequestImage(request, self.budget.max_pixels)
        needed = cost(image.shape, self.net, options, image.sample_bytes)
        self.budget.check(needed)
        if options.return_maps and needed.map_bytes + REPLY_RESERVE > self.max_send_bytes:
            raise OverBudget(f"the score maps would take {needed.map_bytes:,} bytes ({needed.levels} levels), "
                             f"over the server's send limit of {self.max_send_bytes:,}: ask without "
                             "score maps, for fewer scales or for a smaller image")
        return options, image

    def _reply(self, result):
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
        return reply

    def GetModelInfo(self, request, context):
        net = self.net
        return pb.ModelInfo(
            model=self.identity, classes=net.classes, window_height=net.window[0], window_width=net.window[1],
            stride=net.total_stride[0], spec=net.spec, metrics_json=json.dumps(net.metrics),
            served_by=self.served_by, channels=net.channels, background=net.background,
            object_size=net.object_size, box_aspects=net.box_aspects, box_regression=net.box_regression)
