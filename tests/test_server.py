"""The gRPC service, against real servers on loopback ports started by the tests."""
import filecmp
import json
import re
import shutil
import asyncio
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import detector
import detector_server
from detector.datasets import digits
from detector_server import DetectorClient, score_maps, start_server
from detector_server import detector_pb2 as pb
from detector_server import protoc
from hostile_cases import png_claiming
from polling import eventually

NET = detector.load_model()
SMALL = digits.scene(21, size=(160, 120))[0]
BIG = digits.scene(22, size=(1280, 960))[0]


@pytest.fixture(scope="module")
def server():
    running = start_server(port=0, workers=2, max_message_mb=4, max_pixels=4_000_000)
    yield running
    running.stop(0).wait()


@pytest.fixture(scope="module")
def client(server):
    with DetectorClient(server.address, timeout=60) as c:
        yield c


@pytest.fixture
def one_worker():
    """A server that can run one call at a time and hold one more."""
    running = start_server(port=0, workers=1, max_concurrent=2)
    yield running
    running.stop(0).wait()


def png(image):
    return cv2.imencode(".png", image)[1].tobytes()


def same_detections(reply, result):
    assert [d.label for d in reply.detections] == [d.label for d in result.detections]
    assert [d.score for d in reply.detections] == pytest.approx([d.score for d in result.detections], abs=1e-6)
    got = [(d.box.x0, d.box.y0, d.box.x1, d.box.y1) for d in reply.detections]
    np.testing.assert_allclose(np.array(got).reshape(-1, 4), np.array([d.box for d in result.detections]).reshape(-1, 4),
                               atol=1e-3)


def test_stubs_match_the_proto(tmp_path):
    protoc.generate("protos", str(tmp_path))
    installed = detector_server.__path__[0]
    for name in protoc.STUBS:
        assert filecmp.cmp(tmp_path / name, f"{installed}/{name}", shallow=False), (
            f"{name} is stale against protos/detector.proto: reinstall (make install) to regenerate it")


@pytest.mark.parametrize("mode, name", [(pb.FCN, "fcn"), (pb.SLIDING, "sliding")])
def test_real_image_gives_the_same_detections_as_in_process(client, mode, name):
    image = digits.scene(23, size=(200, 150))[0]
    reply = client.stub.Detect(pb.DetectRequest(encoded=png(image), mode=mode))
    same_detections(reply, detector.detect(image, NET, mode=name))
    assert (reply.image_height, reply.image_width) == (150, 200)
    assert reply.model.name == "default.npz" and len(reply.model.checksum) == 64
    assert reply.timings.total_ms >= reply.timings.inference_ms > 0


def test_raw_pixels_and_score_maps(client):
    image = digits.scene(24, size=(160, 120))[0]
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    reply = client.detect(colour, return_score_maps=True, class_agnostic=True)
    result = detector.detect(colour, NET, class_agnostic=True, return_maps=True)
    same_detections(reply, result)
    maps = score_maps(reply)
    assert len(maps) == len(result.levels)
    for (scale, stride, scores), level in zip(maps, result.levels):
        assert scale == pytest.approx(level.scale) and stride == level.stride
        np.testing.assert_array_equal(scores, level.scores)


def test_knobs_reach_detect(client):
    image = digits.scene(25, size=(320, 240))[0]
    reply = client.detect(image, score_threshold=0.2, nms_iou=0.5, max_detections=2, scales=[1.0], stride=2)
    same_detections(reply, detector.detect(image, NET, score_threshold=0.2, nms_iou=0.5, max_detections=2,
                                            scales=[1.0], stride=2))


BAD_REQUESTS = [
    (pb.DetectRequest(encoded=b"garbage bytes"), "INVALID_ARGUMENT", "not a PNG, JPEG"),
    (pb.DetectRequest(encoded=b""), "INVALID_ARGUMENT", "the encoded image is empty"),
    (pb.DetectRequest(), "INVALID_ARGUMENT", "has no image"),
    (pb.DetectRequest(encoded=png(SMALL)[:60]), "INVALID_ARGUMENT", "cannot be decoded"),
    (pb.DetectRequest(encoded=cv2.imencode(".jpg", SMALL)[1].tobytes()[:40]), "INVALID_ARGUMENT", "JPEG"),
    (pb.DetectRequest(raw=pb.RawImage(height=10, width=10, channels=1, data=b"\x00" * 99)), "INVALID_ARGUMENT",
     "has 99 bytes but 10x10x1"),
    (pb.DetectRequest(raw=pb.RawImage(height=40, width=40, channels=2, data=b"\x00" * 3200)), "INVALID_ARGUMENT",
     "1, 3 or 4 channels"),
    (pb.DetectRequest(raw=pb.RawImage(height=0, width=40, channels=1)), "INVALID_ARGUMENT", "empty"),
    (pb.DetectRequest(encoded=png(np.zeros((20, 40), np.uint8))), "INVALID_ARGUMENT", "20x40 .* window is 32x32"),
    (pb.DetectRequest(encoded=png(SMALL), mode=7), "INVALID_ARGUMENT", "unknown mode 7"),
    (pb.DetectRequest(encoded=png(SMALL), score_threshold=1.5), "INVALID_ARGUMENT", "score_threshold"),
    (pb.DetectRequest(encoded=png(SMALL), stride=3), "INVALID_ARGUMENT", "must divide"),
    (pb.DetectRequest(encoded=png(SMALL), min_size=0.01), "INVALID_ARGUMENT", "more than 4x"),
    (pb.DetectRequest(encoded=png(SMALL), scales=[float("inf")]), "INVALID_ARGUMENT", "finite"),
    (pb.DetectRequest(encoded=png_claiming(100000, 100000)), "RESOURCE_EXHAUSTED", "10,000,000,000 pixels"),
    (pb.DetectRequest(raw=pb.RawImage(height=3000, width=3000, channels=1)), "RESOURCE_EXHAUSTED", "at most 4,000,000"),
    (pb.DetectRequest(encoded=b"\x89PNG\r\n\x1a\n" + b"\x00" * 5 * 2**20), "RESOURCE_EXHAUSTED", ""),
]


@pytest.mark.parametrize("request_, code, message", BAD_REQUESTS, ids=range(len(BAD_REQUESTS)))
def test_bad_requests_get_their_status_and_the_server_keeps_serving(client, request_, code, message):
    with pytest.raises(grpc.RpcError) as error:
        client.stub.Detect(request_, timeout=30)
    assert error.value.code().name == code
    assert re.search(message, error.value.details() or "")
    assert client.detect(SMALL).image_width == 160


def test_deadline_stops_the_work(one_worker):
    with DetectorClient(one_worker.address) as c:
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as error:
            c.detect(BIG, mode="sliding", timeout=0.5)  # about a minute of work
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # one worker: this call waits for the big one unless that one really stopped
        assert c.detect(SMALL, timeout=20).image_width == 160
        assert time.perf_counter() - start < 20


def test_cancelled_call_stops_the_work(one_worker):
    with DetectorClient(one_worker.address) as c:
        future = c.stub.Detect.future(c.request(BIG, mode="sliding"))
        time.sleep(0.5)
        future.cancel()
        start = time.perf_counter()
        assert c.detect(SMALL, timeout=20).image_width == 160
        assert time.perf_counter() - start < 20


def answers(client):
    try:
        return client.detect(SMALL, timeout=20).image_width == 160
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False


def test_too_many_concurrent_calls_are_refused_not_queued(gated_server):
    with DetectorClient(gated_server.address) as c:
        running = [c.stub.Detect.future(c.request(SMALL), timeout=60) for _ in range(2)]
        assert eventually(lambda: len(gated_server.started) == 2, 30)  # both places taken
        with pytest.raises(grpc.RpcError) as refused:
            c.detect(SMALL, timeout=20)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(gated_server.started) == 2  # the refused call never reached detect
        gated_server.release.set()
        assert [f.result().image_width for f in running] == [160, 160]
        assert eventually(lambda: answers(c))  # the finished calls gave their places back


def test_concurrent_clients_get_their_own_answers(server):
    scenes = [digits.scene(30 + i, size=(200, 150))[0] for i in range(6)]
    expected = [detector.detect(s, NET) for s in scenes]

    def call(i):
        with DetectorClient(server.address) as c:
            return c.detect(png(scenes[i]), timeout=60)

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(call, range(6)))
    for reply, result in zip(replies, expected):
        same_detections(reply, result)


def test_health_goes_not_serving_on_shutdown_and_calls_in_flight_finish():
    running = start_server(port=0, workers=1)
    channel = grpc.insecure_channel(running.address)
    health = health_pb2_grpc.HealthStub(channel)
    ask = health_pb2.HealthCheckRequest(service="detector.v1.Detector")
    assert health.Check(ask).status == health_pb2.HealthCheckResponse.SERVING
    c = DetectorClient(running.address)
    # a few seconds of work: in flight when the drain starts, far from the 25 s ceiling
    in_flight = c.stub.Detect.future(c.request(digits.scene(26, size=(640, 480))[0], mode="sliding", scales=[1.0]),
                                     timeout=60)
    assert eventually(lambda: health.Check(ask).status == health_pb2.HealthCheckResponse.SERVING)
    stopping = threading.Thread(target=lambda: running.stop(grace=60, notice=2.0).wait())
    stopping.start()
    assert eventually(lambda: health.Check(ask).status == health_pb2.HealthCheckResponse.NOT_SERVING, 2.0)
    assert in_flight.result().image_width == 640  # the call in flight completes
    stopping.join(60)
    with pytest.raises(grpc.RpcError) as error:
        c.detect(SMALL, timeout=5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    c.close()
    channel.close()


def test_token_is_required_when_set_but_health_is_open():
    running = start_server(port=0, workers=1, token="s3cret")
    try:
        with DetectorClient(running.address) as anonymous:
            with pytest.raises(grpc.RpcError) as error:
                anonymous.model_info()
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(anonymous.channel)
            assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        with DetectorClient(running.address, token="wrong") as wrong:
            with pytest.raises(grpc.RpcError):
                wrong.model_info()
        with DetectorClient(running.address, token="s3cret") as allowed:
            assert allowed.model_info().stride == 4
    finally:
        running.stop(0).wait()


def test_tls(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    running = start_server(port=0, workers=1, tls=(cert.read_bytes(), key.read_bytes()))
    try:
        with DetectorClient(running.address, root_certificates=cert.read_bytes()) as secure:
            assert secure.model_info().window_height == 32
        with DetectorClient(running.address, timeout=2) as plain:
            with pytest.raises(grpc.RpcError):
                plain.model_info()
    finally:
        running.stop(0).wait()


def test_two_replicas_share_calls_by_round_robin():
    replicas = [start_server(port=0, workers=1) for _ in range(2)]
    try:
        target = "ipv4:" + ",".join(r.address for r in replicas)
        config = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                             "healthCheckConfig": {"serviceName": "detector.v1.Detector"}})
        with DetectorClient(target, options=[("grpc.service_config", config)]) as c:
            # the second replica's connection may come up after the first calls: poll
            served = set()
            assert eventually(lambda: served.add(c.model_info().served_by) or len(served) == 2, 30), served
            assert served == {r.address for r in replicas}
            replies = [c.detect(SMALL).served_by for _ in range(4)]
            assert set(replies) == served  # once both are ready, round robin alternates
    finally:
        for r in replicas:
            r.stop(0).wait()


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"detector.v1.Detector", "grpc.health.v1.Health"} <= services


def test_model_info(client):
    info = client.model_info()
    assert list(info.classes) == NET.classes and info.spec == NET.spec
    assert (info.window_height, info.window_width, info.stride) == (32, 32, 4)
    assert json.loads(info.metrics_json)["val_accuracy"] == NET.metrics["val_accuracy"]
    assert (info.channels, info.background, info.box_regression) == (NET.channels, NET.background, NET.box_regression)
    assert info.object_size == pytest.approx(NET.object_size)
    assert dict(info.box_aspects) == pytest.approx(NET.box_aspects)


def test_every_call_is_logged(server, client, caplog):
    caplog.set_level("INFO", logger="detector_server")
    client.detect(SMALL, mode="sliding")
    with pytest.raises(grpc.RpcError):
        client.stub.Detect(pb.DetectRequest(encoded=b"junk"))
    # the server logs once the call has ended, which may be just after the client knows
    assert eventually(lambda: any("/detector.v1.Detector/Detect" in m and "mode=SLIDING status=OK ms=" in m
                                  for m in logged(caplog)))
    assert eventually(lambda: any("status=INVALID_ARGUMENT" in m for m in logged(caplog)))


def logged(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "detector_server"]


def test_client_command(server, tmp_path, capsys):
    from detector.cli import main

    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), SMALL)
    colour = cv2.cvtColor(SMALL, cv2.COLOR_GRAY2BGR)
    colour[:, :, 2] = 255  # red everywhere: the picture must keep the input's colour
    cv2.imwrite(str(path), colour)
    assert main(["client", str(path), "--addr", server.address, "--json", "--out", str(tmp_path / "b.png")]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["image_size"] == {"width": 160, "height": 120} and reply["served_by"] == server.address
    picture = cv2.imread(str(tmp_path / "b.png"))
    assert picture.shape == (120, 160, 3) and np.median(picture[:, :, 2]) == 255 > np.median(picture[:, :, 1])


def test_sigterm_drains_the_serve_command():
    import signal
    import sys

    # two workers: one runs the long call, the other answers the readiness probe
    process = subprocess.Popen([sys.executable, "-m", "detector", "serve", "--port", "0", "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("listening on "), line + process.stderr.read()
        with DetectorClient(line.split()[-1]) as c:
            in_flight = c.stub.Detect.future(c.request(digits.scene(27, size=(640, 480))[0], mode="sliding",
                                                       scales=[1.0]), timeout=120)
            assert eventually(lambda: c.model_info().stride == 4)
            assert not in_flight.done(), "the call must still be running when the signal comes"
            process.send_signal(signal.SIGTERM)
            assert in_flight.result().image_width == 640  # the call in flight finishes
        assert process.wait(60) == 0
        log = process.stderr.read()
        assert "signal SIGTERM: draining" in log and "stopped" in log
        assert "/detector.v1.Detector/Detect bytes=" in log and "status=OK" in log
    finally:
        if process.poll() is None:
            process.kill()


def test_cheap_calls_answer_while_every_detect_place_is_taken(gated_server):
    with DetectorClient(gated_server.address) as c:
        held = [c.stub.Detect.future(c.request(SMALL), timeout=60) for _ in range(2)]
        assert eventually(lambda: len(gated_server.started) == 2, 30)
        health = health_pb2_grpc.HealthStub(c.channel)
        for _ in range(20):  # gRPC's own call limit would refuse these; the Detect limit must not
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
            assert c.model_info(timeout=10).stride == 4
        with pytest.raises(grpc.RpcError) as refused:
            c.detect(SMALL, timeout=20)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in refused.value.details()
        gated_server.release.set()
        assert [f.result().image_width for f in held] == [160, 160]


def test_stop_ends_watch_streams_instead_of_waiting_for_them():
    running = start_server(port=0, workers=1)
    channel = grpc.insecure_channel(running.address)
    stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
    stopped = running.stop(grace=60, notice=0)
    assert stopped.wait(30), "the open Watch stream kept the server from stopping"
    rest = [r.status for r in stream]  # ends, instead of blocking until the grace runs out
    assert rest in ([], [health_pb2.HealthCheckResponse.NOT_SERVING])
    channel.close()


def test_the_server_ceiling_ends_a_call_that_has_no_deadline():
    running = start_server(port=0, workers=1, max_request_seconds=0.5)
    try:
        with DetectorClient(running.address) as c:
            with pytest.raises(grpc.RpcError) as error:
                c.detect(BIG, mode="sliding")  # about a minute of work, and no deadline
            assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "server's limit of 0.5 s" in error.value.details()
            assert c.detect(SMALL, timeout=20).image_width == 160
    finally:
        running.stop(0).wait()


def test_work_over_the_budget_is_refused_before_it_starts(monkeypatch):
    from detector_server import servicer

    calls = []
    monkeypatch.setattr(servicer, "detect", lambda *a, **k: calls.append(1))
    running = start_server(port=0, workers=1, max_gflops=50, max_memory_mb=200, max_message_mb=1)
    try:
        with DetectorClient(running.address, timeout=30) as c:
            for options, words in [({"mode": "sliding"}, r"needs [\d,]+ GFLOP .* the limit is 50"),
                                   ({"scales": [4.0]}, r"needs about [\d,]+ MB .* the limit is 200 MB"),
                                   ({"return_score_maps": True, "scales": [1.0]}, r"score maps would take [\d,]+ "
                                                                                   r"bytes .* send limit of 1,048,576")]:
                with pytest.raises(grpc.RpcError) as error:
                    c.detect(png(BIG), **options)
                assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert re.search(words, error.value.details()), error.value.details()
        assert calls == []  # refused from the header, before decoding or detecting
    finally:
        running.stop(0).wait()


def test_the_log_names_unknown_modes_and_expired_deadlines(server, client, caplog):
    caplog.set_level("INFO", logger="detector_server")
    with pytest.raises(grpc.RpcError):
        client.stub.Detect(pb.DetectRequest(encoded=png(SMALL), mode=7))
    assert eventually(lambda: any("mode=unknown(7) status=INVALID_ARGUMENT" in m for m in logged(caplog)))


def test_admission_refuses_past_its_limit_and_runs_in_arrival_order():
    from detector_server.admission import Admission, Busy

    async def scenario():
        admission, order = Admission(running=1, limit=3, memory=100), []
        release = asyncio.Event()

        async def call(name):
            admission.enter()
            try:
                await admission.acquire(10)
                order.append(name)
                if name == "a":
                    await release.wait()
                admission.release(10)
            finally:
                admission.leave()

        tasks = [asyncio.create_task(call(name)) for name in "abc"]
        await asyncio.sleep(0)  # all three have entered: a runs, b and c wait in that order
        assert (admission.inside, admission.active, order) == (3, 1, ["a"])
        with pytest.raises(Busy, match="3 detection calls are running or queued, its limit is 3"):
            admission.enter()
        release.set()
        await asyncio.gather(*tasks)
        return order, admission

    order, admission = asyncio.run(scenario())
    assert order == ["a", "b", "c"] and (admission.inside, admission.active, admission.used) == (0, 0, 0)


def test_calls_running_at_once_share_the_memory_budget():
    from detector_server.admission import Admission

    async def scenario():
        admission = Admission(running=2, limit=8, memory=100)
        await admission.acquire(70)  # runs
        waiting = asyncio.create_task(admission.acquire(60))  # 70 + 60 > 100: waits
        small = asyncio.create_task(admission.acquire(20))  # would fit, but arrived later: waits its turn
        await asyncio.sleep(0.05)
        assert not waiting.done() and not small.done() and admission.active == 1
        admission.release(70)
        await asyncio.wait_for(asyncio.gather(waiting, small), 10)  # 60 + 20 fit together
        assert (admission.active, admission.used) == (2, 80)
        big = asyncio.create_task(admission.acquire(500))  # over the budget: runs once alone
        await asyncio.sleep(0.05)
        assert not big.done()
        admission.release(60)
        admission.release(20)
        await asyncio.wait_for(big, 10)
        assert (admission.active, admission.used) == (1, 500)

    asyncio.run(scenario())


def test_a_waiting_call_gives_up_at_its_deadline_and_gives_its_turn_away():
    from detector_server.admission import Admission

    async def scenario():
        admission = Admission(running=1, limit=4, memory=100)
        await admission.acquire(10)
        with pytest.raises(asyncio.TimeoutError):
            await admission.acquire(10, timeout=0.05)
        cancelled = asyncio.create_task(admission.acquire(10))
        later = asyncio.create_task(admission.acquire(10))
        await asyncio.sleep(0.01)
        cancelled.cancel()  # the client went away
        admission.release(10)
        await asyncio.wait_for(later, 10)  # the next in line got the place
        assert (admission.active, len(admission._queue)) == (1, 0)

    asyncio.run(scenario())


def test_two_calls_that_together_pass_the_memory_budget_run_one_after_the_other(gated_server):
    """With room for each alone but not both, the second waits for the first."""
    with DetectorClient(gated_server.address) as c:
        first = c.stub.Detect.future(c.request(SMALL), timeout=60)
        assert eventually(lambda: len(gated_server.started) == 1, 30)
        second = c.stub.Detect.future(c.request(SMALL), timeout=60)
        assert eventually(lambda: gated_server.servicer.admission.inside == 2)
        assert len(gated_server.started) == 1  # both would fit the two workers, not the memory
        gated_server.release.set()
        assert first.result().image_width == second.result().image_width == 160
