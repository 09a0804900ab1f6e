"""The HTTP/JSON face of the service, beside gRPC in the same process and on the same event
loop: one model, one admission queue and memory budget, one token, one drain.

Routes (the vocabulary of TensorFlow Serving's and Triton's HTTP APIs, kept small):

- ``POST /v1/detect``: the image as the body (``Content-Type: image/png``, ``image/jpeg``,
  any ``image/*`` or ``application/octet-stream``) or as the file field ``image`` of a
  ``multipart/form-data`` form; options as query parameters (:data:`PARAMETERS`). The JSON
  reply mirrors ``DetectReply`` in the vocabulary of :mod:`detector.report_json`
  (:func:`detector_server.reply_to_dict`), score maps as base64 float32 when asked for.
- ``GET /v1/model``: ``ModelInfo`` as JSON, its metrics as an object.
- ``GET /v1/sample``: a generated digits scene (PNG) to try the service on.
- ``GET /healthz``: alive; ``GET /readyz``: 200 while serving, 503 while draining.
- ``GET /metrics``: Prometheus' text exposition (:mod:`.metrics`), both protocols' calls.
- ``GET /``: the page (``page/``): the two modes side by side on the user's picture.

Errors are JSON, ``{"error": message, "code": gRPC code name}``, with the HTTP status that
gRPC's code maps to (:data:`HTTP_STATUS`). A full server answers 429 (retry later), a request
over a limit 413, an expired deadline 504. With a token, ``/v1/`` needs ``Authorization:
Bearer <token>``; health, metrics and the page stay open, as gRPC health is, so that probes
and scrapers need no secret.

aiohttp serves it: asyncio-native, so it runs on the gRPC server's own loop and shares its
admission (which has no locks) without threads in between; it parses multipart forms
itself, bounds bodies, and cancels a handler whose client hangs up, which stops the work.
"""
import asyncio
import base64
import hmac
import json
import logging
import os
import time
from argparse import ArgumentTypeError

import grpc
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf import json_format

from detector import cli_args

from . import detector_pb2 as pb
from .client import MODES, reply_to_dict
from .metrics import CONTENT_TYPE_LATEST
from .servicer import MODES as SERVICER_MODES
from .servicer import Deadline, Failure

log = logging.getLogger("detector_server")

C = grpc.StatusCode
HTTP_STATUS = {C.OK: 200, C.INVALID_ARGUMENT: 400, C.UNAUTHENTICATED: 401, C.PERMISSION_DENIED: 403,
               C.NOT_FOUND: 404, C.RESOURCE_EXHAUSTED: 413, C.CANCELLED: 499, C.UNIMPLEMENTED: 501,
               C.UNAVAILABLE: 503, C.DEADLINE_EXCEEDED: 504, C.INTERNAL: 500, C.UNKNOWN: 500}
BUSY_STATUS = 429  # RESOURCE_EXHAUSTED because the server is full: retry later, unlike 413
# the code name a status stands for, in the metrics and error bodies of aiohttp's own errors
CODE_OF_STATUS = {**{status: code.name for code, status in HTTP_STATUS.items()}, BUSY_STATUS: "RESOURCE_EXHAUSTED",
                  405: "UNIMPLEMENTED", 415: "INVALID_ARGUMENT", 500: "INTERNAL"}
PAGE = os.path.join(os.path.dirname(__file__), "page")
PAGE_FILES = {"/": ("index.html", "text/html"), "/page.js": ("page.js", "text/javascript"),
              "/page.css": ("page.css", "text/css")}
# nothing the page uses comes from another host, and nothing may
PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'"
SAMPLE_SIDES = (64, 1280)
# what a body that is not the image it claims to be raises while aiohttp reads it
UNREADABLE = (ValueError, LookupError, HttpProcessingError, RequestPayloadError)


def _flag(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ArgumentTypeError(f"must be true or false, got {text!r}")


def _mode(text):
    if text not in MODES:
        raise ArgumentTypeError(f"must be one of {', '.join(MODES)}, got {text!r}")
    return MODES[text]


def _scales(text):
    parse = cli_args.positive
    return [parse(part.strip()) for part in text.split(",")]


# query parameter: (DetectRequest field, parser); "timeout" is the client's deadline
PARAMETERS = {
    "mode": ("mode", _mode),
    "stride": ("stride", cli_args.whole(1, 1024)),
    "scales": ("scales", _scales),
    "min_size": ("min_size", cli_args.positive),
    "max_size": ("max_size", cli_args.positive),
    "threshold": ("score_threshold", cli_args.probability),
    "nms_iou": ("nms_iou", cli_args.probability),
    "max_detections": ("max_detections", cli_args.whole(1, 100_000)),
    "class_agnostic": ("class_agnostic", _flag),
    "maps": ("return_score_maps", _flag),
    "timeout": (None, cli_args.seconds),
}


def detect_request(query):
    """A ``DetectRequest`` (without its image) and the client's deadline in seconds (or
    None) from a query string's parameters; ValueError names a bad or unknown one."""
    request, timeout = pb.DetectRequest(), None
    for name in query:
        if name not in PARAMETERS:
            raise ValueError(f"unknown query parameter {name[:80]!r}: use {', '.join(PARAMETERS)}")
        values = query.getall(name)
        if len(values) > 1:
            raise ValueError(f"query parameter {name!r} is given {len(values)} times")
        field, parse = PARAMETERS[name]
        try:
            value = parse(values[0])
        except (ArgumentTypeError, ValueError) as error:
            raise ValueError(f"query parameter {name} {error}") from None
        if field is None:
            timeout = value
        elif field == "scales":
            request.scales.extend(value)
        else:
            setattr(request, field, value)
    return request, timeout


def error_response(code, message, status=None):
    return web.json_response({"error": message, "code": code.name if hasattr(code, "name") else code},
                             status=status or HTTP_STATUS.get(code, 500))


def _says(error, request):
    """The message of one of aiohttp's own errors."""
    where = f"{request.method} {request.path[:200]}"
    if error.status == 404:
        return f"no such path: {where} (see the routes of detector_server.http)"
    if error.status == 405:
        return f"method not allowed: {where}"
    return error.text or error.reason


def score_maps_json(reply):
    """The reply's score maps: shape (classes, height, width), float32 little-endian in
    base64, and where each window lies (see ``ScoreMap`` in the .proto)."""
    return [{"scale": m.scale, "stride": m.stride, "pad": m.pad, "shape": [m.classes, m.height, m.width],
             "dtype": "float32", "data": base64.b64encode(m.data).decode("ascii")} for m in reply.score_maps]


class HttpFace:
    """The aiohttp application over a :class:`DetectorServicer`; :meth:`start` on the
    server's loop, :meth:`stop` as part of its drain."""

    def __init__(self, servicer, health, metrics, max_body_bytes, token=None):
        self.servicer, self.health, self.metrics = servicer, health, metrics
        self.max_body_bytes = max_body_bytes
        self._token = token.encode() if token else None
        self.draining = False
        self._pages = {}
        for path, (name, kind) in PAGE_FILES.items():
            with open(os.path.join(PAGE, name), "rb") as f:
                self._pages[path] = (f.read(), kind)
        self.app = web.Application(middlewares=[self._middleware], client_max_size=max_body_bytes)
        routes = [web.post("/v1/detect", self.detect, name="Detect"),
                  web.get("/v1/model", self.model, name="GetModelInfo"),
                  web.get("/v1/sample", self.sample, name="sample"),
                  web.get("/healthz", self.healthz, name="healthz"),
                  web.get("/readyz", self.readyz, name="readyz"),
                  web.get("/metrics", self.prometheus, name="metrics")]
        routes += [web.get(path, self.page, name=f"page{i}") for i, path in enumerate(PAGE_FILES)]
        self.app.add_routes(routes)
        self._drawing = asyncio.Semaphore(1)
        # bodies being received hold at most this many bytes at once: four of the largest
        self.receive_budget, self.receiving = 4 * max_body_bytes, 0
        self.runner = self.site = None
        self._calls = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, sock, ssl_context=None):
        """Serve on a bound, listening socket (HTTPS with ``ssl_context``)."""
        # stop() has already given calls in flight their grace when the runner shuts down
        self.runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        self.site = web.SockSite(self.runner, sock, ssl_context=ssl_context)
        await self.site.start()

    async def stop(self, grace):
        """Refuse new detection calls (503) and stop listening; calls in flight get ``grace``
        seconds to finish, then every connection is closed."""
        self.draining = True
        if self.runner is None:
            return
        await self.site.stop()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:
            pass
        await self.runner.cleanup()  # what still runs is cancelled, its worker stopped at its next check

    @web.middleware
    async def _middleware(self, request, handler):
        """Token, JSON errors, the log line and the metrics of every call."""
        route = request.match_info.route.name or "-"
        method = "page" if route.startswith("page") else route
        start = time.perf_counter()
        self._calls += 1
        self._idle.clear()
        try:
            return await self._answer(request, handler, method, start)
        finally:
            self._calls -= 1
            if not self._calls:
                self._idle.set()

    async def _answer(self, request, handler, method, start):
        with self.metrics.call(method, "http") as record:
            try:
                if self._token and request.path.startswith("/v1/") and not self._authorized(request):
                    response = error_response(C.UNAUTHENTICATED,
                                              "missing or wrong token: send the header 'Authorization: Bearer <token>'")
                    response.headers["WWW-Authenticate"] = 'Bearer realm="detector"'
                else:
                    response = await handler(request)
            except Failure as failure:
                response = error_response(failure.code, failure.message,
                                          BUSY_STATUS if failure.refused == "busy" else None)
                if failure.refused == "busy":
                    response.headers["Retry-After"] = "1"
            except web.HTTPException as error:  # aiohttp's own: 404, 405, 413 for a body over the limit
                if error.status < 400:
                    raise
                response = error_response(CODE_OF_STATUS.get(error.status, "UNKNOWN"), _says(error, request),
                                          error.status)
            except asyncio.CancelledError:
                record["mode"], record["status"] = request.get("mode", "-"), "CANCELLED"  # the client hung up
                raise
            except Exception:
                log.exception("HTTP %s %s failed", request.method, request.raw_path[:200])
                response = error_response(C.INTERNAL, "the server failed on this request; it keeps serving")
            if response.status >= 400 and (request.get("close") or not request.content.at_eof()):
                response.force_close()  # what the client still sends is not worth reading
            record["mode"] = request.get("mode", "-")
            record["status"] = CODE_OF_STATUS.get(response.status, "OK" if response.status < 400 else "UNKNOWN")
            # the raw path: percent-escapes stay escaped, so a client cannot forge a log line
            log.info("HTTP %s %s bytes=%s mode=%s status=%s ms=%.1f", request.method, request.raw_path[:200],
                     request.content_length or 0, record["mode"], response.status,
                     (time.perf_counter() - start) * 1e3)
            return response

    def _authorized(self, request):
        """Whether the request carries ``Authorization: Bearer <token>`` (the scheme in any case)."""
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        # a header of undecodable bytes arrives with surrogates: compare it as those bytes
        return scheme.lower() == "bearer" and hmac.compare_digest(
            sent.strip().encode("utf-8", "surrogateescape"), self._token)

    async def detect(self, request):
        if self.draining:
            raise Failure(C.UNAVAILABLE, "the server is shutting down: send the call to another replica")
        try:
            message, timeout = detect_request(request.query)
        except ValueError as error:
            raise Failure(C.INVALID_ARGUMENT, str(error)) from None
        request["mode"] = SERVICER_MODES[message.mode]
        deadline = Deadline(timeout, self.servicer.max_request_seconds)
        try:
            reply = await self.servicer.detect_reply(message, deadline, "http", lambda: self._image_bytes(request))
        except asyncio.CancelledError:
            deadline.cancel()  # the client hung up: the worker stops at its next check
            raise
        out = reply_to_dict(reply)
        if message.return_score_maps:
            out["score_maps"] = score_maps_json(reply)
        return web.json_response(out)

    async def _image_bytes(self, request):
        """The image's bytes: the body, or a multipart form's ``image`` field. The body is
        bounded by the server's message limit, and the bytes of all bodies being received at
        once by ``receive_budget``: a call takes no detection place until its image has
        arrived, so clients that send slowly hold memory, within that bound, but no worker."""
        kind = request.content_type
        if not (kind.startswith("image/") or kind in ("application/octet-stream", "multipart/form-data")):
            raise Failure(C.INVALID_ARGUMENT, f"unsupported Content-Type {kind[:100]!r}: send image/png or "
                                              "image/jpeg, or a multipart/form-data form with a field 'image'")
        body = _Body(self)
        try:
            if kind != "multipart/form-data":
                return await body.collect(request.content, keep=True)
            reader, image = await request.multipart(), None
            async for part in reader:
                if isinstance(part, BodyPartReader):  # a nested form is passed over as it streams
                    kept = await body.collect(part, keep=part.name == "image" and image is None)
                    image = image if kept is None else kept
            if image is None:
                raise Failure(C.INVALID_ARGUMENT, "the multipart form has no field 'image'")
            return image
        except UNREADABLE as error:
            # the rest cannot be read either: end the body here, so that aiohttp does not read
            # on after the answer (and log the same error again), and close the connection
            request.content.feed_eof()
            request["close"] = True
            raise Failure(C.INVALID_ARGUMENT, f"the request body cannot be read as {kind}: "
                                              f"{str(error)[:200] or type(error).__name__}") from None
        finally:
            self.receiving -= body.held

    async def model(self, request):
        info = json_format.MessageToDict(self.servicer.model_info(), preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
        info["metrics"] = json.loads(info.pop("metrics_json") or "{}")
        return web.json_response(info)

    async def sample(self, request):
        """A digits scene, PNG: ``seed``, ``width`` and ``height`` (default 640x480)."""
        try:
            seed = cli_args.whole(0, 2**31)(request.query.get("seed", "0"))
            side = cli_args.whole(*SAMPLE_SIDES)
            width, height = side(request.query.get("width", "640")), side(request.query.get("height", "480"))
        except ArgumentTypeError as error:
            raise Failure(C.INVALID_ARGUMENT, f"seed, width and height {error}") from None
        async with self._drawing:  # one at a time: drawing is no detection, and must not crowd it out
            png = await asyncio.get_running_loop().run_in_executor(None, _sample_png, seed, width, height)
        return web.Response(body=png, content_type="image/png")

    async def healthz(self, request):
        return web.json_response({"status": "alive"})

    async def readyz(self, request):
        serving = self.health.serving() and not self.draining
        return web.json_response({"status": "SERVING" if serving else "NOT_SERVING"}, status=200 if serving else 503)

    async def prometheus(self, request):
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def page(self, request):
        body, kind = self._pages[request.path]
        return web.Response(body=body, content_type=kind, charset="utf-8",
                            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})


class _Body:
    """One request's body as it arrives: every byte counts against the message limit, and
    the bytes kept against the server's budget for bodies being received."""

    def __init__(self, face):
        self.face, self.taken, self.held = face, 0, 0

    async def collect(self, stream, keep):
        """The bytes of ``stream`` (a StreamReader or a multipart part) if ``keep``, else None."""
        face, data = self.face, bytearray()
        read = stream.read_chunk if isinstance(stream, BodyPartReader) else stream.read
        while chunk := await read(1 << 16):
            self.taken += len(chunk)
            if self.taken > face.max_body_bytes:
                raise Failure(C.RESOURCE_EXHAUSTED, f"the request body is over the server's limit of "
                                                    f"{face.max_body_bytes:,} bytes", "too_large")
            if not keep:
                continue
            if face.receiving + len(chunk) > face.receive_budget:
                raise Failure(C.RESOURCE_EXHAUSTED, f"the server is receiving {face.receiving:,} bytes of images "
                                                    f"already, its limit is {face.receive_budget:,}: retry later",
                                                    "busy")
            face.receiving += len(chunk)
            self.held += len(chunk)
            data += chunk
        return bytes(data) if keep else None


def _sample_png(seed, width, height):
    import cv2

    from detector.datasets import digits

    return cv2.imencode(".png", digits.scene(seed, size=(width, height))[0])[1].tobytes()
