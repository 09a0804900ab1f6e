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
import errno
import hashlib
import hmac
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
from .servicer import SERVICE, DetectorServicer, add_to_server

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


class RequestLog(grpc.aio.ServerInterceptor):
    """One line per unary call: method, request size, mode, status, milliseconds."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method = handler.unary_unary, details.method

        async def logged(request, context):
            start = time.perf_counter()
            code = grpc.StatusCode.OK
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
                log.info("%s bytes=%d mode=%s status=%s ms=%.1f", method, size, _mode_name(request),
                         getattr(code, "name", code), (time.perf_counter() - start) * 1e3)

        return grpc.unary_unary_rpc_method_handler(
            logged, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def _mode_name(request):
    if not isinstance(request, pb.DetectRequest):
        return "-"
    return pb.Mode.Name(request.mode) if request.mode in pb.Mode.values() else f"unknown({request.mode})"


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
    """A started server, on an event loop in a thread of its own: ``address``, and
    ``stop(grace)`` that drains it."""

    def __init__(self, loop, thread, server, health_servicer, servicer, address):
        self.loop, self.thread, self.server = loop, thread, server
        self.health, self.servicer, self.address = health_servicer, servicer, address
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
            await self.server.stop(grace)
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


def _check_address(host, port):
    """Refuse, with the reason, an address this machine cannot listen on."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, got {port!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise OSError(f"cannot listen on {host}:{port}: the host is not known ({error})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            reason = "the port is in use" if error.errno == errno.EADDRINUSE else \
                "the host is not an address of this machine" if error.errno == errno.EADDRNOTAVAIL else \
                error.strerror or str(error)
            raise OSError(f"cannot listen on {host}:{port}: {reason}") from None


def _check_tls(chain, key):
    """Refuse TLS material that is not PEM or whose key does not match the certificate."""
    if not chain or not key:
        raise ValueError("TLS needs both a certificate chain and a private key (PEM)")
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, name) for name in ("chain.pem", "key.pem")]
        for path, data in zip(paths, (chain, key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                f.write(data)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(*paths)
        except ssl.SSLError as error:
            if "KEY_VALUES_MISMATCH" in str(error):
                raise ValueError("the TLS private key does not match the certificate") from None
            raise ValueError(f"the TLS certificate or key is not valid PEM ({error.reason or error})") from None


def start_server(model=None, host="127.0.0.1", port=0, workers=None, threads=None, max_message_mb=16,
                 max_pixels=Budget.max_pixels, max_gflops=Budget.max_gflops, max_memory_mb=Budget.max_memory_mb,
                 max_concurrent=None, max_request_seconds=DEFAULT_MAX_REQUEST_SECONDS, token=None, tls=None):
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
    private key PEM bytes).
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
    _check_address(host, port)
    if tls:
        _check_tls(*tls)
    set_num_threads(threads or max(1, _cores() // workers))
    path = str(model or detector.DEFAULT_MODEL)
    net = detector.load_model(path)
    with open(path, "rb") as f:
        identity = {"name": os.path.basename(path), "checksum": hashlib.sha256(f.read()).hexdigest()}
    limit = int(max_message_mb * 2**20)
    admission = Admission(min(workers, max_concurrent), max_concurrent, int(max_memory_mb * 2**20))
    servicer = DetectorServicer(net, identity, budget, admission, limit, max_request_seconds)
    loop, holder = asyncio.new_event_loop(), []
    thread = threading.Thread(target=_run_loop, args=(loop, holder), name="detector-server", daemon=True)
    thread.start()
    try:
        server, health_servicer, bound = asyncio.run_coroutine_threadsafe(
            _start(servicer, host, port, limit, token, tls), loop).result()
    except BaseException:
        servicer.workers.shutdown()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        raise
    servicer.served_by = f"{host}:{bound}"
    holder.append(RunningServer(loop, thread, server, health_servicer, servicer, servicer.served_by))
    return holder[0]


async def _start(servicer, host, port, limit, token, tls):
    """The aio server, started on the running loop: (server, health servicer, port)."""
    interceptors = [RequestLog()] + ([TokenAuth(token)] if token else [])
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
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, bound


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
        while not signalled.wait(1.0):
            pass
        log.info("signal %s: draining (notice %.1f s, grace up to %.0f s)", received[0], notice, grace)
        running.stop(grace, notice).wait()
        log.info("stopped")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
