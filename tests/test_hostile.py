"""Hostile requests against one real server process: every one gets its status, the server
keeps serving after each, its memory stays bounded, health checks never starve under
overload, and SIGTERM drains it.

The table is in ``hostile_cases.py``: bad images and bombs, absurd numbers, huge raw shapes,
bad enums, malformed protobuf and oversized or compressed messages; below it, hand-made
HTTP/2 frames and plain garbage on the socket. The server runs as ``detector serve`` in a
process of its own, so a crash shows up as a dead process and its memory can be read from
/proc: before each hostile call its peak (``VmHWM``) is reset to its current size
(``clear_refs``), so each call's own growth is measured, and the peak over the whole table
is kept. Nothing here waits on a fixed sleep: each step waits for an event (a line, a
status, a refused call) with a generous timeout, so the file holds on a machine whose cores
are busy with other work.
"""
import re
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from detector_server import detector_pb2 as pb
from detector_server import detector_pb2_grpc

import hostile_cases as hc
from polling import eventually
from server_process import ServerProcess

CEILING = 5  # --max-request-seconds of the module's server
PEAK_LIMIT_MIB = 1536
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class Client:
    """A channel to a server with the calls the tests make."""

    def __init__(self, address):
        self.channel = grpc.insecure_channel(address, options=UNLIMITED)
        self.stub = detector_pb2_grpc.DetectorStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def call(self, method, data, timeout, metadata=None, compression=None):
        """Send ``data`` (bytes, or a message to serialise) to ``method``; returns (status
        name, details, reply bytes)."""
        if not isinstance(data, bytes):
            data = data.SerializeToString()
        send = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        compression = {None: None, "gzip": grpc.Compression.Gzip}[compression]
        try:
            return "OK", "", send(data, timeout=timeout, metadata=metadata, compression=compression)
        except grpc.RpcError as error:
            return error.code().name, error.details() or "", None

    def good(self, timeout=60):
        """A small, good Detect call: the server answers it."""
        reply = self.stub.Detect(pb.DetectRequest(encoded=hc.small_png()), timeout=timeout)
        assert (reply.image_width, reply.image_height) == (160, 120)
        return reply

    def healthy(self, timeout=10):
        return self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status == SERVING

    def close(self):
        self.channel.close()


@pytest.fixture(scope="module")
def server():
    running = ServerProcess("--workers", "2", "--max-request-seconds", str(CEILING))
    client = Client(running.address)
    client.good()  # warm: the first call's imports and buffers are no hostile request's doing
    running.client, running.times, running.growth = client, {}, {}
    yield running
    client.close()
    peak_mib = running.peak() / 1024
    code = running.terminate()
    print(f"\nserver peak RSS {peak_mib:.0f} MiB; slowest cases: "
          + ", ".join(f"{name} {s:.2f} s" for name, s in sorted(running.times.items(), key=lambda x: -x[1])[:5])
          + "; largest memory growth: "
          + ", ".join(f"{name} {m:.0f} MiB" for name, m in sorted(running.growth.items(), key=lambda x: -x[1])[:6]))
    assert code == 0, running.stderr()


# ---------------------------------------------------------------------------------------
# the table


@pytest.mark.parametrize("case", hc.CASES, ids=[c.name for c in hc.CASES])
def test_hostile_request_gets_its_status_and_the_server_keeps_serving(server, case):
    assert server.alive(), "the server died before this case:\n" + server.stderr()
    data = case.make()
    before = server.reset_peak()
    start = time.monotonic()
    code, details, reply = server.client.call(case.method, data, case.timeout, case.metadata, case.compression)
    seconds = server.times[case.name] = time.monotonic() - start
    growth_mib = server.growth[case.name] = (server.memory_kib()[0] - before) / 1024
    del data
    assert server.alive(), f"the server died on {case.name}:\n{server.stderr()}"
    assert code in case.codes(), f"{case.name}: expected {case.code}, got {code}: {details}"
    if code != "OK" and case.method == hc.DETECT and not case.by_grpc:
        assert details, f"{case.name}: {code} without a message"
    assert re.search(case.message, details), f"{case.name}: {details!r} does not match {case.message!r}"
    assert len(details) < case.max_details, f"{case.name}: a {len(details)}-character message"
    if code == "OK" and case.method == hc.DETECT:
        assert pb.DetectReply.FromString(reply).image_width > 0
    assert seconds < case.seconds, f"{case.name} took {seconds:.1f} s (limit {case.seconds} s)"
    assert growth_mib < case.growth_mb, f"{case.name}: the server's memory grew by {growth_mib:.0f} MiB"
    server.client.good()  # the server keeps serving


def test_the_slow_call_ran_until_the_ceiling_not_less(server):
    """The ceiling case ended by the server's limit, neither early nor much later."""
    seconds = server.times.get("slow-call-without-deadline")
    if seconds is None:
        pytest.skip("the table's ceiling case did not run")
    assert CEILING - 0.5 < seconds < 30


# ---------------------------------------------------------------------------------------
# below gRPC: HTTP/2 frames and bytes no gRPC client sends


@pytest.mark.parametrize("name, make, expected", hc.H2_CASES, ids=[c[0] for c in hc.H2_CASES])
def test_malformed_http2_and_grpc_framing(server, name, make, expected):
    connection = hc.H2Connection(server.address)
    try:
        connection.start()
        connection.send(make())
        if expected == "GOAWAY":
            connection.read_until(lambda frames: connection.goaway(), 20)
            assert connection.goaway() or connection.closed, f"{name}: the connection stayed open"
        else:
            silent = hc.SILENT in expected
            connection.read_until(lambda frames: connection.call_ended(1), 3 if silent else 20)
            ended = connection.call_ended(1)
            if ended is None and silent:  # unanswered, and it must not hurt anyone else
                assert server.client.healthy(timeout=10)
                server.client.good()
                return
            assert ended is not None, f"{name}: no answer in 20 s; frames {connection.frames}"
            kind, payload = ended
            status = hc.grpc_status(payload) if kind == hc.HEADERS else None
            assert status in expected, f"{name}: grpc-status {status} in {payload!r}, expected one of {expected}"
    finally:
        connection.close()
    assert server.alive(), server.stderr()
    server.client.good()


SOCKET_GARBAGE = [
    ("http-1.1-get", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    ("random-1mb", hc.random_bytes(hc.MB, seed=2)),
    ("preface-then-random", hc.H2_PREFACE + hc.random_bytes(10_000, seed=3)),
    ("tls-client-hello", bytes.fromhex("160301002a0100002603035a") + hc.random_bytes(40, seed=4)),
]


@pytest.mark.parametrize("name, payload", SOCKET_GARBAGE, ids=[c[0] for c in SOCKET_GARBAGE])
def test_garbage_on_the_socket_is_hung_up_on(server, name, payload):
    connection = hc.H2Connection(server.address)
    try:
        try:
            connection.send(payload)
        except OSError:
            pass  # the server hung up while the bytes were still going
        connection.read_until(lambda frames: False, 20)
        assert connection.closed, f"{name}: the server kept the connection open for 20 s"
    finally:
        connection.close()
    assert server.alive(), server.stderr()
    server.client.good()


# ---------------------------------------------------------------------------------------
# overload


def test_overload_never_starves_health_checks_or_model_info(server):
    """64 Detect calls at once (8 x 2 workers = 16 admitted, the rest refused at once):
    while they are in the server, every health check and GetModelInfo is answered. Then
    the calls still waiting are cancelled, and the server serves again."""
    load = grpc.insecure_channel(server.address, options=UNLIMITED)
    detect = detector_pb2_grpc.DetectorStub(load).Detect
    request = pb.DetectRequest(encoded=hc.vga_png())
    lock, outcomes, refused, answered = threading.Lock(), [], threading.Event(), threading.Event()

    def done(future):
        error = None if future.cancelled() else future.exception()
        code = "CANCELLED" if future.cancelled() else "OK" if error is None else error.code().name
        with lock:
            outcomes.append(code)
        (refused if code == "RESOURCE_EXHAUSTED" else answered if code == "OK" else threading.Event()).set()

    try:
        futures = [detect.future(request, timeout=120) for _ in range(64)]
        for future in futures:
            future.add_done_callback(done)
        assert refused.wait(60), f"no call was refused; outcomes so far: {outcomes}"
        probe = server.client
        health_ok = sum(probe.healthy(timeout=5) for _ in range(40))
        info = [probe.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=5) for _ in range(5)]
        with lock:
            in_server = 64 - len(outcomes)
        assert health_ok == 40
        assert all(i.window_height == 32 and i.classes for i in info)
        # the checks above were answered while detection calls were in the server
        assert in_server > 0, "the load ended before the health checks: they proved nothing"
        assert answered.wait(60), f"no admitted call finished: {outcomes}"
        for future in futures:
            future.cancel()
        assert eventually(lambda: len(outcomes) == 64, 60), outcomes
    finally:
        load.close()
    counts = {code: outcomes.count(code) for code in set(outcomes)}
    print(f"\noverload outcomes: {counts}, in the server during the checks: {in_server}")
    assert set(counts) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "CANCELLED"}, counts
    assert counts["RESOURCE_EXHAUSTED"] >= 64 - 16, counts  # never more than 16 admitted
    # the cancelled calls gave their places back: the server takes new calls at once
    assert eventually(lambda: _answers_detect(server.client), 30)


def _answers_detect(client):
    try:
        return client.good(timeout=20) is not None
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False


def test_peak_memory_stays_under_the_limit(server):
    """Runs after the table and the overload (file order): the server's peak RSS."""
    peak_mib = server.peak() / 1024
    print(f"\nserver peak RSS after the table and the overload: {peak_mib:.0f} MiB")
    assert server.alive()
    assert 0 < peak_mib < PEAK_LIMIT_MIB


# ---------------------------------------------------------------------------------------
# shutdown


def _watch(health, statuses, first, ended):
    """Follow one health Watch stream: its statuses, then how it ended."""
    try:
        for response in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120):
            statuses.append(response.status)
            first.set()
        statuses.append("ended")
    except grpc.RpcError as error:
        statuses.append(error.code().name)
    finally:
        first.set()
        ended.set()


def test_sigterm_ends_health_watches_and_exits_0():
    running = ServerProcess("--workers", "1")
    client = Client(running.address)
    try:
        streams = [([], threading.Event(), threading.Event()) for _ in range(2)]
        for statuses, first, ended in streams:
            threading.Thread(target=_watch, args=(client.health, statuses, first, ended), daemon=True).start()
        for statuses, first, _ in streams:
            assert first.wait(30) and statuses[:1] == [SERVING], statuses
        start = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        code = running.process.wait(15)
        seconds = time.monotonic() - start
        print(f"\nSIGTERM with 2 Watch streams: exit {code} after {seconds:.2f} s")
        assert code == 0, running.stderr()
        for statuses, _, ended in streams:
            assert ended.wait(15), f"a Watch stream outlived the server: {statuses}"
            # balancers were told before the stream ended
            assert NOT_SERVING in statuses, statuses
            assert statuses[-1] in ("ended", "UNAVAILABLE", "CANCELLED"), statuses
    finally:
        client.close()
        running.kill()


def test_sigterm_lets_calls_in_flight_finish_then_exits_0():
    running = ServerProcess("--workers", "4", "--max-request-seconds", "20")
    client = Client(running.address)
    try:
        # some 0.5 s of one core each: four at once on two cores outlast the 1 s notice
        request = pb.DetectRequest(encoded=hc.vga_png(), mode=pb.SLIDING, stride=4, scales=[0.5])
        calls = [client.stub.Detect.future(request, timeout=120) for _ in range(4)]
        # a round trip on the same connection: the four calls have reached the server
        assert client.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=30).window_height == 32
        in_flight = sum(not c.done() for c in calls)
        assert in_flight >= 1, "the calls must still be running when the signal comes"
        start = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        outcomes = []
        for call in calls:
            try:
                outcomes.append(("OK", call.result(timeout=60).image_width))
            except grpc.RpcError as error:
                outcomes.append((error.code().name, error.details()))
        code = running.process.wait(60)
        print(f"\nSIGTERM with {in_flight} calls in flight: {outcomes}; exit {code} after "
              f"{time.monotonic() - start:.2f} s")
        # each finished, or was stopped by the server's ceiling; none was cut by the drain
        for outcome in outcomes:
            assert outcome == ("OK", 640) or (outcome[0] == "DEADLINE_EXCEEDED" and "limit of 20 s" in outcome[1]), \
                outcomes
        assert ("OK", 640) in outcomes
        assert code == 0, running.stderr()
    finally:
        client.close()
        running.kill()


# ---------------------------------------------------------------------------------------
# slow clients: a call costs no thread until its request is whole (the asyncio server)


def test_half_sent_calls_do_not_starve_health_checks(server):
    connection = hc.H2Connection(server.address)
    try:
        connection.start()
        for i in range(40):  # each announces a 5-byte message and sends 2 of them
            stream = 2 * i + 1
            connection.send(hc.h2_headers(stream) + hc.h2_frame(hc.DATA, 0, stream, hc.grpc_message(b"ab", length=5)))
        # a complete Detect call after them on the same connection: gRPC hands a method's
        # calls to the server in order, so once this one is answered (with any status), the
        # 40 are in the server's hands too
        good = pb.DetectRequest(encoded=hc.small_png()).SerializeToString()
        connection.send(hc.h2_headers(81) + hc.h2_data(81, hc.grpc_message(good)))
        connection.read_until(lambda frames: connection.call_ended(81), 5)
        assert connection.call_ended(81) is not None, "a call waited behind 40 half-sent ones"
        assert server.client.healthy(timeout=3)
    finally:
        connection.close()
        # once the connection is gone the server recovers
        assert eventually(lambda: _answers_health(server.client), 30)


def _answers_health(client):
    try:
        return client.healthy(timeout=2)
    except grpc.RpcError:
        return False

