"""The Detector servicer: protobuf in, detector.detect, protobuf out.

It runs on the server's asyncio event loop, so that a call costs no thread until it has
its whole request and a place to run: a client that sends half a message, or holds many
calls open, cannot starve the health checks. Every Detect call is checked before any work:
its options, its image's header against the pixel limit, the estimated work and memory
against the :class:`detector.budget.Budget`, and the score maps it asks for against the send
limit. It then waits for a place to run (:mod:`.admission`), and decodes and detects on a
worker thread, which checks between levels and tiles that the call's deadline has not
passed (the client's, or the server's ``max_request_seconds`` ceiling, whichever comes
first) and that the client is still there.
"""
import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from detector.budget import OverBudget
from detector.detect import DetectOptions, cost, detect

from . import detector_pb2 as pb
from . import detector_pb2_grpc
from .admission import Busy
from .images import BadImage, ImageTooLarge, RequestImage

SERVICE = pb.DESCRIPTOR.services_by_name["Detector"].full_name  # "detector.v1.Detector"
MODES = {pb.MODE_UNSPECIFIED: "fcn", pb.FCN: "fcn", pb.SLIDING: "sliding"}
# a reply's bytes beside its score maps: detections, timings, identity
REPLY_RESERVE = 64 * 1024
MAX_MESSAGE_CHARS = 1000


class Stop(Exception):
    """The call's deadline passed or it was cancelled: stop the work."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Failure(Exception):
    """A call that ends with a status other than OK: ``code`` (a ``grpc.StatusCode``, the
    vocabulary of both protocols) and ``message``. ``refused`` is set when the call was
    refused before any work: "busy" (the server is full: retry later) or "too_large" (the
    call is over a limit and never runs)."""

    def __init__(self, code, message, refused=None):
        super().__init__(message)
        self.code, self.message, self.refused = code, message, refused


class Deadline:
    """The end of a call: the client's deadline or the server's ceiling of ``limit``
    seconds, whichever comes first. ``check()``, safe from any thread, raises :class:`Stop`
    once it has passed or :meth:`cancel` was called (the client went away)."""

    def __init__(self, client_remaining, limit):
        now = time.monotonic()
        self.limit, self.ceiling = limit, now + limit
        self.client = None if client_remaining is None else now + client_remaining
        self.cancelled = threading.Event()

    def remaining(self):
        end = self.ceiling if self.client is None else min(self.ceiling, self.client)
        return end - time.monotonic()

    def cancel(self):
        self.cancelled.set()

    def check(self):
        now = time.monotonic()
        if self.client is not None and now >= self.client:
            raise Stop(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline expired: the work was stopped")
        if now >= self.ceiling:
            raise Stop(grpc.StatusCode.DEADLINE_EXCEEDED,
                       f"the call ran past the server's limit of {self.limit:g} s per call: the work was stopped")
        if self.cancelled.is_set():
            raise Stop(grpc.StatusCode.CANCELLED, "the call was cancelled: the work was stopped")


async def by_deadline(awaitable, deadline):
    """Await within the call's deadline; past it, :class:`Stop` names the deadline."""
    try:
        return await asyncio.wait_for(awaitable, max(0.0, deadline.remaining()))
    except asyncio.TimeoutError:
        deadline.check()
        raise


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


class Undecodable:
    """A request whose bytes are not the protobuf message its method takes: the handler
    answers INVALID_ARGUMENT (grpcio would answer UNKNOWN with a parser's traceback text)."""

    def __init__(self, size, name):
        self.size = size
        self.message = f"the request ({size:,} bytes) is not a valid {name} protobuf message"

    def ByteSize(self):
        return self.size


def _lenient(message_type):
    def parse(data):
        try:
            return message_type.FromString(data)
        except DecodeError:
            return Undecodable(len(data), message_type.DESCRIPTOR.full_name)
    return parse


def add_to_server(servicer, server):
    """Register the Detector service with lenient request parsers (see :class:`Undecodable`)."""
    methods = {"Detect": (pb.DetectRequest, pb.DetectReply), "GetModelInfo": (pb.ModelInfoRequest, pb.ModelInfo)}
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name), request_deserializer=_lenient(a),
                                                          response_serializer=b.SerializeToString)
                for name, (a, b) in methods.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    # registered methods get calls matched per method by gRPC's core: GetModelInfo never
    # waits in a queue behind a flood of Detect calls (as unregistered methods share one)
    server.add_registered_method_handlers(SERVICE, handlers)


def _bounded(error):
    """An error's message for the client, never unboundedly long."""
    text = str(error)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


class DetectorServicer(detector_pb2_grpc.DetectorServicer):
    def __init__(self, net, identity, budget, admission, max_send_bytes, max_request_seconds, metrics):
        self.net, self.budget, self.admission, self.metrics = net, budget, admission, metrics
        self.max_send_bytes, self.max_request_seconds = max_send_bytes, max_request_seconds
        # detection runs on threads of its own; the event loop stays free for the cheap calls
        self.workers = ThreadPoolExecutor(admission.running, "detect")
        self.identity = pb.ModelIdentity(**identity)
        self.served_by = ""
        self._info = None

    async def Detect(self, request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        deadline = Deadline(context.time_remaining(), self.max_request_seconds)
        context.add_done_callback(lambda _: deadline.cancel())
        try:
            return await self.detect_reply(request, deadline, "grpc")
        except Failure as failure:
            await context.abort(failure.code, failure.message)

    async def detect_reply(self, request, deadline, protocol, receive=None):
        """The :class:`DetectReply` of a request, whatever ``protocol`` brought it: admitted,
        detected on a worker thread and timed. Raises :class:`Failure` with the status.
        ``receive()``, for a protocol that reads the image itself (HTTP), gives the image's
        bytes within the deadline, before the call asks for a place: a client that sends
        slowly holds no worker."""
        try:
            if receive is not None:
                try:
                    request.encoded = await by_deadline(receive(), deadline)
                except Stop as stop:
                    raise Failure(stop.code, f"{stop} while the image was still arriving") from None
            return await self._detect_reply(request, deadline)
        except Failure as failure:
            if failure.refused and self.metrics:
                self.metrics.refused.labels(protocol, failure.refused).inc()
            raise

    async def _detect_reply(self, request, deadline):
        start = time.perf_counter()
        try:
            self.admission.enter()
            try:
                options, image, needed = self._admit(request)
                await by_deadline(self.admission.acquire(needed.memory_bytes), deadline)
                waited = time.perf_counter() - start
                work = asyncio.get_running_loop().run_in_executor(self.workers, self._work, image, options, deadline)
                # the place is given back when the thread is done, even if this call is cancelled first
                work.add_done_callback(lambda done: self._release(done, needed.memory_bytes))
                begun, decoded, timings, reply = await asyncio.shield(work)
            finally:
                self.admission.leave()
        except Busy as error:
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, _bounded(error), "busy") from None
        except (ImageTooLarge, OverBudget) as error:
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, _bounded(error), "too_large") from None
        except Stop as stop:
            raise Failure(stop.code, str(stop)) from None
        except (BadImage, ValueError, TypeError) as error:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, _bounded(error)) from None
        t = timings
        reply.timings.CopyFrom(pb.Timings(
            decode_ms=(decoded - begun) * 1e3, pyramid_ms=t["pyramid"] * 1e3, inference_ms=t["inference"] * 1e3,
            nms_ms=t["nms"] * 1e3, total_ms=(time.perf_counter() - start) * 1e3, queue_ms=waited * 1e3))
        if reply.ByteSize() > self.max_send_bytes:
            raise Failure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the reply is {reply.ByteSize():,} bytes, over the server's send limit of "
                          f"{self.max_send_bytes:,}: ask for fewer detections or no score maps")
        return reply

    def _release(self, work, nbytes):
        if not work.cancelled():
            work.exception()  # read, so that a call cancelled while it ran logs no warning
        self.admission.release(nbytes)

    def _work(self, image, options, deadline):
        """Decode, detect and build the reply (its score maps counted in the call's memory),
        on a worker thread."""
        deadline.check()
        begun = time.perf_counter()
        pixels = image.decode()
        decoded = time.perf_counter()
        deadline.check()
        result = detect(pixels, self.net, options, check=deadline.check)
        del pixels
        return begun, decoded, result.timings, self._reply(result)

    def _admit(self, request):
        """The options, the (undecoded) image and the estimated cost of a request, checked
        against the limits."""
        options = detect_options(request)
        image = RequestImage(request, self.budget.max_pixels)
        needed = cost(image.shape, self.net, options, image.sample_bytes)
        self.budget.check(needed)
        if options.return_maps and needed.map_bytes + REPLY_RESERVE > self.max_send_bytes:
            raise OverBudget(f"the score maps would take {needed.map_bytes:,} bytes ({needed.levels} levels), "
                             f"over the server's send limit of {self.max_send_bytes:,}: ask without "
                             "score maps, for fewer scales or for a smaller image")
        return options, image, needed

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

    async def GetModelInfo(self, request, context):
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        return self.model_info()

    def model_info(self):
        """The served model's :class:`ModelInfo`, built once: it never changes."""
        if self._info is None or self._info.served_by != self.served_by:
            net = self.net
            self._info = pb.ModelInfo(
                model=self.identity, classes=net.classes, window_height=net.window[0], window_width=net.window[1],
                stride=net.total_stride[0], spec=net.spec, metrics_json=json.dumps(net.metrics),
                served_by=self.served_by, channels=net.channels, background=net.background,
                object_size=net.object_size, box_aspects=net.box_aspects, box_regression=net.box_regression)
        return self._info
