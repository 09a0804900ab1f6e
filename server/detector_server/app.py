"""Server set-up: the servicer, health, reflection, limits, TLS, a token, and draining.

The server is grpc's asyncio server, on an event loop in a thread of its own: a call holds
no thread while its request arrives, so slow or half-sent requests cannot take the threads
that health checks need, and health checks, reflection and GetModelInfo are answered on the
loop at once. Detection runs on ``workers`` threads of its own; the kernels release the GIL,
so they run in parallel, each on ``threads`` OpenMP threads. By default workers = the cores
and threads = 1, so a full server uses each core once: requests share the cores instead of
queueing behind one another, and nothing is oversubscribed.
"""
import asyncio
import contextlib
import errno
import hashlib
import hmac
import importlib.util
import logging
import os
import signal
import socket
import ssl
import tempfile
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import detector
from detector.budget import Budget
from detector.threads import set_num_threads

from . import detector_pb2 as pb
from . import detector_pb2_grpc
from .admission import Admission
from .servicer import MODES, SERVICE, DetectorServicer, add_to_server

log = logging.getLogger("detector_server")

# The defaults fit Kubernetes' 30 s termination grace: 1 s of notice, then calls in flight,
# none of which runs longer than 25 s, finish.
DEFAULT_MAX_REQUEST_SECONDS = 25.0
DEFAULT_GRACE = 25.0
DEFAULT_NOTICE = 1.0
MAX_MESSAGE_MB = 2047  # gRPC's message limits are 32-bit byte counts
# HTTP/2 streams one connection may hold open: with many more, one client could hold a
# great many calls half-sent
MAX_STREAMS_PER_CONNECTION = 128


class TokenAuth(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED unless the call carries 'authorization: Bearer <token>'. Health
    checks need no token, so load balancers can probe."""

    def __init__(self, token):
        self._expected = f"Bearer {token}".encode()

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong token: send metadata 'authorization: Bearer <token>'")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1."):
            return await continuation(details)
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(sent).encode(), self._expected):
            return await continuation(details)
        return self._deny


COUNTED_METHODS = {f"/{SERVICE}/Detect", f"/{SERVICE}/GetModelInfo", "/grpc.health.v1.Health/Check"}


class RequestLog(grpc.aio.ServerInterceptor):
    """One line per unary call (method, request size, mode, status, milliseconds), and its
    count and latency in the server's :class:`.metrics.Metrics` when it has them (with HTTP)."""

    def __init__(self, metrics):
        self.metrics = metrics

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method = handler.unary_unary, details.method

        async def logged(request, context):
            start = time.perf_counter()
            code = grpc.StatusCode.OK
            # a client names any method it likes: count the server's own, and the rest as one
            name = method.rsplit("/", 1)[-1] if method in COUNTED_METHODS else "other"
            counted = self.metrics.call(name, "grpc") if self.metrics else contextlib.nullcontext({})
            with counted as record:
                try:
                    return await inner(request, context)
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED  # the client went away
                    raise
                except Exception:
                    code = grpc.StatusCode.UNKNOWN  # grpc answers an unexpected error so, unless aborted
                    raise
                finally:
                    code = context.code() or code
                    size = len(request) if isinstance(request, bytes) else request.ByteSize()
                    record["mode"], record["status"] = _mode_label(request), getattr(code, "name", str(code))
                    log.info("%s bytes=%d mode=%s status=%s ms=%.1f", method, size, _mode_name(request),
                             record["status"], (time.perf_counter() - start) * 1e3)

        return grpc.unary_unary_rpc_method_handler(
            logged, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _mode_name(request):
    if not isinstance(request, pb.DetectRequest):
        return "-"
    return pb.Mode.Name(request.mode) if request.mode in pb.Mode.values() else f"unknown({request.mode})"


def _mode_label(request):
    """The mode as the metrics count it: a bounded set of values, as the HTTP face names them."""
    if not isinstance(request, pb.DetectRequest):
        return "-"
    return MODES.get(request.mode, "unknown")


class Health(health_pb2_grpc.HealthServicer):
    """The standard health service (grpc.health.v1) on the event loop, whose Watch streams
    end when the server drains: a server shutting down must not wait for clients that never
    hang up."""

    def __init__(self):
        self._status = {}
        self._changed = asyncio.Condition()
        self._closing = False

    async def Check(self, request, context):
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:100]!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        last = None
        while True:
            status = self._status.get(request.service, unknown)
            if status != last:  # never holding the lock while a slow client reads
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if self._closing:
                return
            async with self._changed:
                if self._status.get(request.service, unknown) == last and not self._closing:
                    await self._changed.wait()

    def serving(self):
        """Whether the server as a whole ("") is SERVING."""
        return self._status.get("") == health_pb2.HealthCheckResponse.SERVING

    async def set(self, service, status):
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def not_serving(self):
        """Every service NOT_SERVING, for good."""
        async with self._changed:
            for service in self._status:
                self._status[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._changed.notify_all()

    async def close_watches(self):
        async with self._changed:
            self._closing = True
            self._changed.notify_all()


class RunningServer:
    """A started server, on an event loop in a thread of its own: ``address`` (gRPC),
    ``http_address`` (``http://host:port``, or None without HTTP), and ``stop(grace)`` that
    drains it."""

    def __init__(self, loop, thread, server, health_servicer, servicer, address, http=None, http_address=None):
        self.loop, self.thread, self.server = loop, thread, server
        self.health, self.servicer, self.address = health_servicer, servicer, address
        self.http, self.http_address = http, http_address
        self.stopped = threading.Event()
        self._stopping = False

    def stop(self, grace=DEFAULT_GRACE, notice=0.0):
        """Drain: NOT_SERVING at once, so health-checking balancers move away during
        ``notice`` seconds; then Watch streams end, new calls are refused and calls in
        flight get ``grace`` seconds to finish. Returns an event set when the server has
        stopped: as soon as the last call ends."""
        if not self._stopping:
            self._stopping = True
            asyncio.run_coroutine_threadsafe(self._drain(grace, notice), self.loop)
        return self.stopped

    async def _drain(self, grace, notice):
        try:
            await self.health.not_serving()
            if notice:
                await asyncio.sleep(notice)
            await self.health.close_watches()
            stops = [self.server.stop(grace)] + ([self.http.stop(grace)] if self.http else [])
            await asyncio.gather(*stops)
        finally:
            self.loop.stop()


def _run_loop(loop, running):
    """The server's thread: run the loop until the drain stops it, then clean up."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        # calls the stop cut (a Watch stream's last write, say) end here, not in a warning at exit
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        if running:
            running[0].servicer.workers.shutdown(wait=True)
            running[0].stopped.set()
        loop.close()


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _check_address(host, port, keep=False):
    """Refuse, with the reason, an address this machine cannot listen on; with ``keep``,
    return the bound socket, listening."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise OSError(f"cannot listen on {host}:{port}: the host is not known ({error})") from None
    family, kind, proto, _, address = infos[0]
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        if keep:
            probe.listen(1024)
            probe.setblocking(False)
            return probe
    except OSError as error:
        reason = "the port is in use" if error.errno == errno.EADDRINUSE else \
            "the host is not an address of this machine" if error.errno == errno.EADDRNOTAVAIL else \
            error.strerror or str(error)
        raise OSError(f"cannot listen on {host}:{port}: {reason}") from None
    finally:
        if not keep:
            probe.close()


def _check_tls(chain, key):
    """The server's ``ssl.SSLContext`` of TLS material; refuse material that is not PEM or
    whose key does not match the certificate."""
    if not chain or not key:
        raise ValueError("TLS needs both a certificate chain and a private key (PEM)")
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, name) for name in ("chain.pem", "key.pem")]
        for path, data in zip(paths, (chain, key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(data)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(*paths)
            return context
        except ssl.SSLError as error:
            if "KEY_VALUES_MISMATCH" in str(error):
                raise ValueError("the TLS private key does not match the certificate") from None
            raise ValueError(f"the TLS certificate or key is not valid PEM ({error.reason or error})") from None


def start_server(model=None, host="127.0.0.1", port=0, workers=None, threads=None, max_message_mb=16,
                 max_pixels=Budget.max_pixels, max_gflops=Budget.max_gflops, max_memory_mb=Budget.max_memory_mb,
                 max_concurrent=None, max_request_seconds=DEFAULT_MAX_REQUEST_SECONDS, token=None, tls=None,
                 http_port=None):
    """Load the model and start serving; return a :class:`RunningServer`.

    ``port=0`` takes a free port. ``workers`` Detect calls run at once, each on ``threads``
    kernel threads; ``max_concurrent`` may be in the server at once (running or queued:
    default 8 x workers, a short queue, never an unbounded one) and one more is answered
    RESOURCE_EXHAUSTED. The server runs on an asyncio event loop in a thread of its own:
    health checks, reflection and GetModelInfo are answered there and never wait behind
    Detect, whose work runs on ``workers`` threads. A call over ``max_pixels``,
    ``max_gflops`` or ``max_memory_mb`` (see :class:`detector.budget.Budget`) is refused
    before any work, and the calls running at once share ``max_memory_mb`` between them; no
    call runs longer than ``max_request_seconds``. ``tls`` is (certificate chain PEM bytes,
    private key PEM bytes). ``http_port`` (0: a free one) also serves HTTP/JSON on ``host``
    (:mod:`.http`), with the same model, limits, token, TLS and drain.
    """
    workers = workers or _cores()
    max_concurrent = max_concurrent or 8 * workers
    for name, value, low, high in (("workers", workers, 1, 1024), ("threads", threads or 1, 1, 1024),
                                   ("max_concurrent", max_concurrent, 1, 100_000),
                                   ("max_message_mb", max_message_mb, 1, MAX_MESSAGE_MB),
                                   ("max_request_seconds", max_request_seconds, 0.001, 86400)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
    budget = Budget(max_pixels, max_gflops, max_memory_mb)
    if http_port is not None and http_port == port != 0:
        raise ValueError(f"the HTTP port must differ from the gRPC port, both are {port}")
    _check_address(host, port)
    ssl_context = _check_tls(*tls) if tls else None
    if http_port is not None and not all(importlib.util.find_spec(m) for m in ("aiohttp", "prometheus_client")):
        raise ValueError("HTTP needs aiohttp and prometheus_client: pip install 'detector[http]'")
    http_socket = None if http_port is None else _check_address(host, http_port, keep=True)
    try:
        return _start_loaded(model, host, port, workers, threads, max_message_mb, budget, max_concurrent,
                             max_request_seconds, token, tls, http_socket, ssl_context)
    except BaseException:
        if http_socket is not None:
            http_socket.close()
        raise


def _start_loaded(model, host, port, workers, threads, max_message_mb, budget, max_concurrent,
                  max_request_seconds, token, tls, http_socket, ssl_context):
    """start_server, its arguments checked: load the model, start the loop and the servers."""
    set_num_threads(threads or max(1, _cores() // workers))
    path = str(model or detector.DEFAULT_MODEL)
    net = detector.load_model(path)
    with open(path, "rb") as f:
        identity = {"name": os.path.basename(path), "checksum": hashlib.sha256(f.read()).hexdigest()}
    limit = int(max_message_mb * 2**20)
    admission = Admission(min(workers, max_concurrent), max_concurrent, int(budget.max_memory_mb * 2**20))
    metrics = None
    if http_socket is not None:  # the metrics are read over HTTP
        from .metrics import Metrics

        metrics = Metrics(admission)
    servicer = DetectorServicer(net, identity, budget, admission, limit, max_request_seconds, metrics)
    loop, holder = asyncio.new_event_loop(), []
    thread = threading.Thread(target=_run_loop, args=(loop, holder), name="detector-server", daemon=True)
    thread.start()
    try:
        server, health_servicer, bound, http = asyncio.run_coroutine_threadsafe(
            _start(servicer, host, port, limit, token, tls, metrics, http_socket, ssl_context), loop).result()
    except BaseException:
        servicer.workers.shutdown()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        raise
    servicer.served_by = f"{host}:{bound}"
    http_address = None
    if http:
        scheme = "https" if ssl_context else "http"
        http_address = f"{scheme}://{_url_host(host)}:{http_socket.getsockname()[1]}"
    holder.append(RunningServer(loop, thread, server, health_servicer, servicer, servicer.served_by, http,
                                http_address))
    return holder[0]


def _url_host(host):
    return f"[{host}]" if ":" in host else host


async def _start(servicer, host, port, limit, token, tls, metrics, http_socket, ssl_context):
    """The aio server (and the HTTP face on ``http_socket``), started on the running loop:
    (server, health servicer, port, HttpFace or None)."""
    interceptors = [RequestLog(metrics)] + ([TokenAuth(token)] if token else [])
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0), ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION)])
    add_to_server(servicer, server)
    health_servicer = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    target = f"{host}:{port}"
    try:
        bound = (server.add_secure_port(target, grpc.ssl_server_credentials([tls[::-1]])) if tls
                 else server.add_insecure_port(target))
    except RuntimeError as error:
        raise OSError(f"cannot listen on {target}: {error}") from None
    if not bound:
        raise OSError(f"cannot listen on {target}")
    await server.start()
    http = None
    if http_socket is not None:
        from .http import HttpFace

        http = HttpFace(servicer, health_servicer, metrics, limit, token)
        try:
            await http.start(http_socket, ssl_context)
        except BaseException:
            await server.stop(0)
            raise
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, bound, http


def serve(grace=DEFAULT_GRACE, notice=DEFAULT_NOTICE, **options):
    """Run until SIGTERM or SIGINT, then drain (see :meth:`RunningServer.stop`) and exit.
    The signal handlers are in place before the model loads, so a signal at any moment
    drains; with the defaults the whole drain fits Kubernetes' 30 s termination grace."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    signalled = threading.Event()
    received = []

    def on_signal(signum, frame):
        received.append(signal.Signals(signum).name)
        signalled.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        running = start_server(**options)
        log.info("listening on %s (workers=%s, kernel threads=%s)", running.address,
                 options.get("workers") or "cores", detector.get_num_threads())
        print(f"listening on {running.address}", flush=True)
        if running.http_address:
            log.info("HTTP on %s", running.http_address)
            print(f"http on {running.http_address}", flush=True)
        while not signalled.wait(1.0):
            pass
        log.info("signal %s: draining (notice %.1f s, grace up to %.0f s)", received[0], notice, grace)
        running.stop(grace, notice).wait()
        log.info("stopped")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
