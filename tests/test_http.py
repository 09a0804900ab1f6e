"""The HTTP/JSON face, against a real ``detector serve --http-port`` process: the same answers
as gRPC from the same server, the gRPC codes' HTTP statuses, the token, the metrics, the
drain. Prometheus' own parser reads the metrics; gRPC's replies are the reference."""
import base64
import http.client
import json
import signal
import socket
import urllib.parse
import uuid

import cv2
import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import detector
from detector.datasets import digits
from detector_server import DetectorClient, score_maps
from detector_server import detector_pb2 as pb
from hostile_cases import png_claiming
from polling import eventually
from server_process import ServerProcess

TOKEN = "s3cret-token"
SCENE = digits.scene(31, size=(240, 180))[0]
PNG = cv2.imencode(".png", SCENE)[1].tobytes()


@pytest.fixture(scope="module")
def server():
    running = ServerProcess("--workers", "2", "--http-port", "0", "--max-message-mb", "1",
                            "--max-pixels", "4000000", "--token", TOKEN)
    running.grpc = DetectorClient(running.address, token=TOKEN, timeout=60)
    yield running
    running.grpc.close()
    assert running.terminate() == 0, running.stderr()


class Http:
    """One keep-alive connection to the server's HTTP port."""

    def __init__(self, address, token=TOKEN):
        url = urllib.parse.urlsplit(address)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        self.token = token

    def call(self, method, path, body=None, content_type="image/png", headers=None):
        """(status, headers, body bytes)."""
        sent = {"Content-Type": content_type} if body is not None else {}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        self.connection.request(method, path, body=body, headers=sent)
        response = self.connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def json(self, method, path, body=None, **kwargs):
        status, _, data = self.call(method, path, body, **kwargs)
        return status, json.loads(data)

    def close(self):
        self.connection.close()


@pytest.fixture
def web(server):
    client = Http(server.http_address)
    yield client
    client.close()


def same_detections(found, reply):
    assert [d["label"] for d in found] == [d.label for d in reply.detections]
    assert [d["score"] for d in found] == pytest.approx([d.score for d in reply.detections], abs=1e-6)
    boxes = [[d.box.x0, d.box.y0, d.box.x1, d.box.y1] for d in reply.detections]
    np.testing.assert_allclose(np.array([d["box"] for d in found]).reshape(-1, 4),
                               np.array(boxes).reshape(-1, 4), atol=1e-3)


@pytest.mark.parametrize("mode", ["fcn", "sliding"])
def test_detect_answers_as_grpc_does(server, web, mode):
    status, found = web.json("POST", f"/v1/detect?mode={mode}&threshold=0.3&nms_iou=0.4", PNG)
    assert status == 200, found
    reply = server.grpc.detect(PNG, mode=mode, score_threshold=0.3, nms_iou=0.4)
    assert len(reply.detections) >= 2
    same_detections(found["detections"], reply)
    assert found["image_size"] == {"width": 240, "height": 180}
    assert found["model"] == {"name": reply.model.name, "checksum": reply.model.checksum}
    assert found["served_by"] == server.address
    assert found["timings_ms"]["total_ms"] >= found["timings_ms"]["inference_ms"] > 0


def test_a_multipart_form_and_a_jpeg_body_are_read_as_the_image(server, web):
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + PNG + f"\r\n--{boundary}--\r\n".encode()
    status, found = web.json("POST", "/v1/detect", form, content_type=f"multipart/form-data; boundary={boundary}")
    assert status == 200, found
    same_detections(found["detections"], server.grpc.detect(PNG))
    jpeg = cv2.imencode(".jpg", SCENE, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    status, found = web.json("POST", "/v1/detect?class_agnostic=true", jpeg, content_type="image/jpeg")
    assert status == 200, found
    same_detections(found["detections"], server.grpc.detect(jpeg, class_agnostic=True))


def test_score_maps_are_the_grpc_maps_bit_for_bit(server, web):
    status, found = web.json("POST", "/v1/detect?maps=1&scales=1,0.5&stride=2", PNG)
    assert status == 200, found
    reply = server.grpc.detect(PNG, return_score_maps=True, scales=[1.0, 0.5], stride=2)
    expected = score_maps(reply)
    assert len(found["score_maps"]) == len(expected) == 2
    for got, (scale, stride, scores), level in zip(found["score_maps"], expected, reply.score_maps):
        values = np.frombuffer(base64.b64decode(got["data"]), "<f4").reshape(got["shape"])
        np.testing.assert_array_equal(values, scores)
        assert (got["scale"], got["stride"], got["pad"]) == (pytest.approx(scale), stride, level.pad)


def test_model_info_is_the_grpc_model_info(server, web):
    status, info = web.json("GET", "/v1/model")
    assert status == 200
    expected = server.grpc.model_info()
    assert info["classes"] == list(expected.classes) == detector.load_model().classes
    assert (info["window_height"], info["window_width"], info["stride"]) == (
        expected.window_height, expected.window_width, expected.stride)
    assert info["metrics"] == json.loads(expected.metrics_json)
    assert info["model"]["checksum"] == expected.model.checksum and info["background"] == expected.background


def form(*parts, boundary="b0undary"):
    """A multipart/form-data body of raw parts (each its header lines, a blank line, its data)."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


NESTED = form(b'Content-Disposition: form-data; name="outer"\r\nContent-Type: multipart/mixed; boundary=inner'
              b"\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nx\r\n--inner--")
NO_COLON = form(b"Content-Disposition form-data\r\n\r\nx")
BAD_GZIP = ("POST", "/v1/detect", b"not gzip at all", "image/png", 400, "INVALID_ARGUMENT", "cannot be read")


BAD = [  # (method, path, body, content type, HTTP status, gRPC code name, words of the message)
    ("POST", "/v1/detect", b"garbage bytes", "image/png", 400, "INVALID_ARGUMENT", "not a PNG, JPEG"),
    ("POST", "/v1/detect", b"", "image/png", 400, "INVALID_ARGUMENT", "empty"),
    ("POST", "/v1/detect", PNG[:80], "image/png", 400, "INVALID_ARGUMENT", "cannot be decoded"),
    ("POST", "/v1/detect?mode=fast", PNG, "image/png", 400, "INVALID_ARGUMENT", "mode must be one of fcn, sliding"),
    ("POST", "/v1/detect?threshold=1.5", PNG, "image/png", 400, "INVALID_ARGUMENT", "threshold must be a number in [0, 1]"),
    ("POST", "/v1/detect?stride=0", PNG, "image/png", 400, "INVALID_ARGUMENT", "stride must be a whole number"),
    ("POST", "/v1/detect?scales=1,nan", PNG, "image/png", 400, "INVALID_ARGUMENT", "scales"),
    ("POST", "/v1/detect?scales=9", PNG, "image/png", 400, "INVALID_ARGUMENT", "enlarges the image"),
    ("POST", "/v1/detect?maps=maybe", PNG, "image/png", 400, "INVALID_ARGUMENT", "maps must be true or false"),
    ("POST", "/v1/detect?treshold=0.2", PNG, "image/png", 400, "INVALID_ARGUMENT", "unknown query parameter 'treshold'"),
    ("POST", "/v1/detect?mode=fcn&mode=sliding", PNG, "image/png", 400, "INVALID_ARGUMENT", "given 2 times"),
    ("POST", "/v1/detect", PNG, "application/json", 400, "INVALID_ARGUMENT", "unsupported Content-Type"),
    ("POST", "/v1/detect", b"--x\r\n\r\n--x--\r\n", "multipart/form-data; boundary=x", 400, "INVALID_ARGUMENT",
     "no field 'image'"),
    ("POST", "/v1/detect", PNG, "multipart/form-data", 400, "INVALID_ARGUMENT", "cannot be read"),
    ("POST", "/v1/detect", b"no delimiter here", "multipart/form-data; boundary=x", 400, "INVALID_ARGUMENT",
     "cannot be read"),
    ("POST", "/v1/detect", NESTED[0], NESTED[1], 400, "INVALID_ARGUMENT", "no field 'image'"),
    ("POST", "/v1/detect", NO_COLON[0], NO_COLON[1], 400, "INVALID_ARGUMENT", "cannot be read"),
    ("POST", "/v1/detect", *form(b'Content-Disposition: form-data; name="note"\r\n\r\n' + b"x" * (2 * 2**20)),
     413, "RESOURCE_EXHAUSTED", "over the server's limit"),
    ("POST", "/v1/detect", png_claiming(50_000, 50_000), "image/png", 413, "RESOURCE_EXHAUSTED", "pixels"),
    ("POST", "/v1/detect", b"\x89PNG" + b"\x00" * (2 * 2**20), "image/png", 413, "RESOURCE_EXHAUSTED",
     "over the server's limit"),
    ("POST", "/v1/detect?maps=1&scales=1", cv2.imencode(".png", np.zeros((1800, 1800), np.uint8))[1].tobytes(),
     "image/png", 413, "RESOURCE_EXHAUSTED", "send limit"),
    ("POST", "/v1/detect?timeout=0.000001", PNG, "image/png", 504, "DEADLINE_EXCEEDED", "deadline"),
    ("GET", "/v1/detect", None, None, 405, "UNIMPLEMENTED", "not allowed"),
    ("GET", "/v1/nothing", None, None, 404, "NOT_FOUND", "no such path"),
    ("GET", "/v1/sample?width=100000", None, None, 400, "INVALID_ARGUMENT", "width"),
]


@pytest.mark.parametrize("method, path, body, kind, status, code, words", BAD + [BAD_GZIP],
                         ids=[f"{b[0]} {b[1][:40]} {b[6]}" for b in BAD] + ["gzip that is not"])
def test_bad_requests_get_the_status_of_their_grpc_code_and_the_server_keeps_serving(
        server, web, method, path, body, kind, status, code, words):
    extra = {"Content-Encoding": "gzip"} if body is BAD_GZIP[2] else None
    got, headers, data = web.call(method, path, body, content_type=kind or "image/png", headers=extra)
    error = json.loads(data)
    assert (got, error["code"]) == (status, code), error
    assert words in error["error"]
    assert headers["Content-Type"].startswith("application/json")
    assert web.json("POST", "/v1/detect", PNG)[0] == 200, "the server stopped serving after a bad request"
    assert server.alive()


def test_token_is_required_on_the_api_but_not_on_health_metrics_or_the_page(server):
    for token, expected in ((None, 401), ("wrong", 401), ("\xff\xfe", 401), (TOKEN, 200)):
        client = Http(server.http_address, token=token)
        try:
            status, body = client.json("POST", "/v1/detect", PNG)
            assert status == expected, body
            if expected == 401:
                assert body["code"] == "UNAUTHENTICATED" and "Authorization: Bearer" in body["error"]
                assert client.call("GET", "/v1/model")[1]["WWW-Authenticate"].startswith("Bearer")
            assert client.json("GET", "/v1/model")[0] == expected
            for path in ("/healthz", "/readyz", "/metrics", "/"):
                assert client.call("GET", path)[0] == 200
        finally:
            client.close()


def test_the_bearer_scheme_is_read_in_any_case(server):
    client = Http(server.http_address, token=None)
    try:
        assert client.call("GET", "/v1/model", headers={"Authorization": f"bearer {TOKEN}"})[0] == 200
        assert client.call("GET", "/v1/model", headers={"Authorization": f"Basic {TOKEN}"})[0] == 401
    finally:
        client.close()


def metric_samples(web):
    status, headers, data = web.call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(data.decode()) for s in family.samples}


def calls(samples, **labels):
    return sum(v for (name, got), v in samples.items()
               if name == "detector_calls_total" and all(dict(got).get(k) == x for k, x in labels.items()))


def test_metrics_count_both_protocols_calls_by_method_mode_and_status(server, web):
    before = metric_samples(web)
    for _ in range(3):
        assert web.json("POST", "/v1/detect?mode=sliding", PNG)[0] == 200
    assert web.json("POST", "/v1/detect", b"junk")[0] == 400
    for _ in range(2):
        server.grpc.detect(PNG)
    with pytest.raises(grpc.RpcError):
        server.grpc.stub.Detect(pb.DetectRequest(encoded=b"junk"), metadata=server.grpc.metadata)
    assert web.json("POST", "/v1/detect", png_claiming(50_000, 50_000))[0] == 413

    def counted():
        after = metric_samples(web)
        delta = lambda **labels: calls(after, **labels) - calls(before, **labels)  # noqa: E731
        refused = sum(v for (name, got), v in after.items() if name == "detector_calls_refused_total"
                      and dict(got) == {"protocol": "http", "reason": "too_large"}) - sum(
            v for (name, got), v in before.items() if name == "detector_calls_refused_total"
            and dict(got) == {"protocol": "http", "reason": "too_large"})
        return (delta(method="Detect", protocol="http", mode="sliding", status="OK") == 3
                and delta(method="Detect", protocol="http", status="INVALID_ARGUMENT") == 1
                and delta(method="Detect", protocol="http", status="RESOURCE_EXHAUSTED") == 1
                and delta(method="Detect", protocol="grpc", mode="fcn", status="OK") == 2
                and delta(method="Detect", protocol="grpc", status="INVALID_ARGUMENT") == 1
                and refused == 1)

    # the gRPC interceptor counts a call once it has ended, which may be just after the client knows
    assert eventually(counted), metric_samples(web)
    # a method a client made up is counted as "other", never as a series of its own
    channel = grpc.insecure_channel(server.address)
    for i in range(3):
        with pytest.raises(grpc.RpcError):
            channel.unary_unary(f"/evil.Service/M{i}")(b"", timeout=30)
    channel.close()
    assert eventually(lambda: calls(metric_samples(web), method="other", protocol="grpc") - calls(
        before, method="other", protocol="grpc") == 3)
    samples = metric_samples(web)
    assert not any("evil" in str(labels) or "M1" in str(labels) for _, labels in samples)
    histogram = [v for (name, labels), v in samples.items() if name == "detector_call_seconds_count"
                 and dict(labels) == {"method": "Detect", "protocol": "http"}]
    assert histogram and histogram[0] >= 5
    assert samples[("detector_calls_in_flight", (("protocol", "http"),))] == 1  # this very scrape
    assert samples[("detector_detect_running", ())] == 0


def test_sample_scene_is_a_png_of_the_asked_size(web):
    status, headers, data = web.call("GET", "/v1/sample?seed=4&width=200&height=150")
    assert status == 200 and headers["Content-Type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(image, digits.scene(4, size=(200, 150))[0])


def test_the_page_loads_nothing_from_another_host(web):
    for path, kind in (("/", "text/html"), ("/page.js", "text/javascript"), ("/page.css", "text/css")):
        status, headers, data = web.call("GET", path)
        assert status == 200 and headers["Content-Type"].startswith(kind)
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        text = data.decode()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_half_sent_bodies_do_not_starve_health_or_detection(server, web):
    """Clients that send headers and part of a body hold a coroutine each, not a worker."""
    url = urllib.parse.urlsplit(server.http_address)
    stalled = []
    try:
        for _ in range(64):
            s = socket.create_connection((url.hostname, url.port), timeout=10)
            s.sendall(f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                      f"Content-Type: image/png\r\nContent-Length: 500000\r\n\r\n".encode() + PNG[:100])
            stalled.append(s)
        assert web.call("GET", "/healthz")[0] == 200
        assert web.json("POST", "/v1/detect", PNG)[0] == 200
        server.grpc.detect(PNG)
    finally:
        for s in stalled:
            s.close()


def test_readyz_goes_503_while_draining_and_calls_are_refused_after_the_notice():
    running = ServerProcess("--workers", "1", "--http-port", "0", "--notice", "30", "--grace", "1")
    try:
        web = Http(running.http_address, token=None)
        assert web.json("GET", "/readyz") == (200, {"status": "SERVING"})
        running.process.send_signal(signal.SIGTERM)

        def not_ready():
            web.connection.close()  # a fresh connection each time
            return web.json("GET", "/readyz")[0] == 503

        assert eventually(not_ready, 20)
        # during the notice, balancers move away but calls still get answers
        assert web.json("POST", "/v1/detect", PNG)[0] == 200
        assert web.call("GET", "/healthz")[0] == 200
        web.close()
    finally:
        running.kill()


def test_a_full_server_answers_429_and_the_drain_lets_calls_in_flight_finish(gated_server):
    """Two HTTP calls hold both places; one more is refused with 429 (retry later), not 413.
    On stop, readiness goes 503 at once, the two calls finish with 200, then the port closes."""
    from concurrent.futures import ThreadPoolExecutor

    def detect():
        client = Http(gated_server.http_address, token=None)
        try:
            return client.json("POST", "/v1/detect", PNG)
        finally:
            client.close()

    with ThreadPoolExecutor(2) as pool:
        running = [pool.submit(detect) for _ in range(2)]
        assert eventually(lambda: len(gated_server.started) == 2, 30)
        status, body = detect()
        assert (status, body["code"]) == (429, "RESOURCE_EXHAUSTED") and "busy" in body["error"]
        probe = Http(gated_server.http_address, token=None)  # a connection kept alive from before the stop
        assert probe.call("GET", "/readyz")[0] == 200
        stopped = gated_server.stop(grace=60)
        assert eventually(lambda: probe.call("GET", "/readyz")[0] == 503, 20)
        status, body = probe.json("POST", "/v1/detect", PNG)
        assert (status, body["code"]) == (503, "UNAVAILABLE") and "shutting down" in body["error"]
        assert not stopped.is_set()  # the two calls still hold the server open
        gated_server.release.set()
        assert [f.result()[0] for f in running] == [200, 200]
    assert stopped.wait(30)
    assert _status_or_closed(Http(gated_server.http_address, token=None), "/healthz") is None


def _status_or_closed(client, path):
    """The status of a GET, or None when the server no longer takes connections."""
    try:
        return client.call("GET", path)[0]
    except (ConnectionError, http.client.HTTPException):
        client.connection.close()
        return None


@pytest.mark.parametrize("name, payload", [
    ("garbage", b"\x00\xff" * 5000 + b"\r\n\r\n"),
    ("a request line of 100 KB", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("a lying Content-Length", b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               b"Content-Length: -5\r\n\r\n"),
    ("chunked past the body limit", b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n" + (b"100000\r\n" + b"\x00" * 0x100000 + b"\r\n") * 2
                                    + b"0\r\n\r\n"),
])
def test_malformed_http_gets_a_4xx_or_a_hang_up_and_the_server_keeps_serving(server, web, name, payload):
    url = urllib.parse.urlsplit(server.http_address)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        try:
            s.sendall(payload)
            answer = s.recv(4096)
        except ConnectionError:
            answer = b""
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
    assert web.json("POST", "/v1/detect", PNG)[0] == 200
    assert server.alive()


def test_an_image_that_never_finishes_arriving_ends_at_the_deadline(server):
    url = urllib.parse.urlsplit(server.http_address)
    with socket.create_connection((url.hostname, url.port), timeout=60) as s:
        s.sendall(f"POST /v1/detect?timeout=0.5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: image/png\r\nContent-Length: {len(PNG)}\r\n\r\n".encode() + PNG[:200])
        answer = s.recv(4096)  # the server answers, though the body never came
    assert answer.startswith(b"HTTP/1.1 504"), answer[:300]
    assert b"DEADLINE_EXCEEDED" in answer and b"still arriving" in answer


def test_a_client_that_hangs_up_stops_its_work_and_frees_its_place(monkeypatch):
    """The work runs until its check raises: only the hang-up can end it before the 120 s
    ceiling, so the place coming back within seconds is the hang-up's doing."""
    import threading

    from detector_server import servicer, start_server

    started = threading.Event()

    def endless(image, net, options, check):
        started.set()
        while True:
            check()
            threading.Event().wait(0.005)

    monkeypatch.setattr(servicer, "detect", endless)
    running = start_server(port=0, workers=1, http_port=0, max_request_seconds=120)
    try:
        admission = running.servicer.admission
        url = urllib.parse.urlsplit(running.http_address)
        s = socket.create_connection((url.hostname, url.port), timeout=30)
        s.sendall(f"POST /v1/detect?mode=sliding HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  f"Content-Length: {len(PNG)}\r\n\r\n".encode() + PNG)
        assert started.wait(30)
        assert (admission.active, admission.inside) == (1, 1)
        s.close()
        assert eventually(lambda: (admission.active, admission.inside, admission.used) == (0, 0, 0), 20)
        web = Http(running.http_address, token=None)
        assert eventually(lambda: calls(metric_samples(web), method="Detect", protocol="http", mode="sliding",
                                        status="CANCELLED") == 1, 20)
        web.close()
    finally:
        running.stop(0).wait()
