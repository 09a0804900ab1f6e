"""Server set-up: the servicer, health, reflection, limits, TLS, a token, and draining.

Threads: the kernels release the GIL, so worker threads run in parallel. Each request runs
the kernels on ``threads`` OpenMP threads, and ``workers`` requests run at once. By default
workers = the cores and threads = 1, so a full server uses each core once: requests share
the cores instead of queueing behind one another, and nothing is oversubscribed.
"""
import hashlib
import hmac
import logging
import os
import signal
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import detector
from detector.threads import set_num_threads

from . import detector_pb2 as pb
from . import detector_pb2_grpc
from .servicer import DetectorServicer

SERVICE = pb.DESCRIPTOR.services_by_name["Detector"].full_name  # "detector.v1.Detector"
log = logging.getLogger("detector_server")


class TokenAuth(grpc.ServerInterceptor):
    """UNAUTHENTICATED unless the call carries 'authorization: Bearer <token>'. Health
    checks need no token, so load balancers can probe."""

    def __init__(self, token):
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "missing or wrong token: send metadata 'authorization: Bearer <token>'")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1."):
            return continuation(details)
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(sent).encode(), self._expected):
            return continuation(details)
        return self._deny


class RequestLog(grpc.ServerInterceptor):
    """One line per call: method, request size, mode, status, milliseconds."""

    def intercept_service(self, continuation, details):
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method = handler.unary_unary, details.method

        def logged(request, context):
            start = time.perf_counter()
            try:
                return inner(request, context)
            finally:
                code = context.code() or grpc.StatusCode.OK
                mode = pb.Mode.Name(request.mode) if hasattr(request, "mode") else "-"
                log.info("%s bytes=%d mode=%s status=%s ms=%.1f", method, request.ByteSize(), mode,
                         getattr(code, "name", code), (time.perf_counter() - start) * 1e3)

        return grpc.unary_unary_rpc_method_handler(
            logged, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


class RunningServer:
    """A started server: ``address``, and ``stop(grace)`` that drains it."""

    def __init__(self, server, health_servicer, address):
        self.server, self.health, self.address = server, health_servicer, address

    def stop(self, grace=10.0, notice=0.0):
        """Drain: NOT_SERVING at once, so health-checking balancers move away during
        ``notice`` seconds; then new calls are refused and calls in flight get ``grace``
        seconds to finish. Returns an event set when the server has stopped."""
        self.health.enter_graceful_shutdown()
        if notice:
            time.sleep(notice)
        return self.server.stop(grace)


def start_server(model=None, host="127.0.0.1", port=0, workers=None, threads=None, max_message_mb=16,
                 max_pixels=50_000_000, max_concurrent=None, token=None, tls=None):
    """Load the model and start serving; return a :class:`RunningServer`.

    ``port=0`` takes a free port. ``max_concurrent`` calls may be in the server at once
    (running or queued); one more is answered RESOURCE_EXHAUSTED (default: 8 x workers, a
    short queue, never an unbounded one).
    ``tls`` is (certificate chain PEM bytes, private key PEM bytes).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = workers or cores
    for name, value in (("workers", workers), ("max_message_mb", max_message_mb), ("max_pixels", max_pixels)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    set_num_threads(threads or max(1, cores // workers))
    path = str(model or detector.DEFAULT_MODEL)
    net = detector.load_model(path)
    with open(path, "rb") as f:
        identity = {"name": os.path.basename(path), "checksum": hashlib.sha256(f.read()).hexdigest()}
    servicer = DetectorServicer(net, identity, max_pixels)
    interceptors = [RequestLog()] + ([TokenAuth(token)] if token else [])
    limit = int(max_message_mb * 2**20)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detector"),
        interceptors=interceptors, maximum_concurrent_rpcs=max_concurrent or 8 * workers,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                 ("grpc.so_reuseport", 0)])
    detector_pb2_grpc.add_DetectorServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    target = f"{host}:{port}"
    bound = (server.add_secure_port(target, grpc.ssl_server_credentials([tls[::-1]])) if tls
             else server.add_insecure_port(target))
    if not bound:
        raise OSError(f"cannot listen on {target}")
    servicer.served_by = f"{host}:{bound}"
    server.start()
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, health_servicer, servicer.served_by)


def serve(grace=30.0, notice=1.0, **options):
    """Run until SIGTERM or SIGINT, then drain: NOT_SERVING, refuse new calls, let the ones in
    flight finish (up to ``grace`` seconds), exit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    running = start_server(**options)
    log.info("listening on %s (workers=%s, kernel threads=%s)", running.address,
             options.get("workers") or "cores", detector.get_num_threads())
    print(f"listening on {running.address}", flush=True)
    stopped = threading.Event()

    def drain(signum, frame):
        log.info("signal %s: draining for up to %.0f s", signal.Signals(signum).name, grace)
        running.stop(grace, notice).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    while not stopped.wait(1.0):
        pass
    log.info("stopped")
    return 0
