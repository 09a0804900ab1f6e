"""``detector bench overload``: how a real server process holds up when pushed.

- **Health under overload**: ``--clients`` clients, in processes of their own, send Detect
  calls back to back (more than the server takes: most are refused RESOURCE_EXHAUSTED)
  while this process times health checks and GetModelInfo calls.
- **Shutdown**: SIGTERM to exit with only health Watch streams open, and with ``--in-flight``
  Detect calls running (how long after the last one finished the process was gone).
- **Memory**: the server's peak resident memory (VmHWM) after the heaviest requests the
  default budget lets through and the heaviest it refuses.
"""
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import detector_pb2 as pb
from . import detector_pb2_grpc
from .bench import percentile, start_server_process

LOAD = """
import json, os, sys, threading, grpc
from detector_server import detector_pb2 as pb, detector_pb2_grpc
address, threads = sys.argv[1], int(sys.argv[2])
data = open(sys.argv[3], "rb").read()
counts, lock = {}, threading.Lock()
def hammer():
    stub = detector_pb2_grpc.DetectorStub(grpc.insecure_channel(address))
    while True:
        try:
            stub.Detect(pb.DetectRequest(encoded=data), timeout=60)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        with lock:
            counts[code] = counts.get(code, 0) + 1
for _ in range(threads):
    threading.Thread(target=hammer, daemon=True).start()
print("running", flush=True)
sys.stdin.read()  # until the parent closes it
with lock:
    print(json.dumps(counts), flush=True)
os._exit(0)
"""


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _scene_png(width, height):
    from detector.datasets import digits

    return cv2.imencode(".png", digits.scene(1, size=(width, height))[0])[1].tobytes()


def health_under_overload(clients, probes, processes=4):
    """Health-check and GetModelInfo latency while ``clients`` clients, in ``processes``
    processes, send Detect calls back to back."""
    server, address = start_server_process()
    per = [clients // processes + (i < clients % processes) for i in range(processes)]
    loads = []
    with tempfile.NamedTemporaryFile(suffix=".png") as image:
        image.write(_scene_png(640, 480))
        image.flush()
        try:
            for n in per:
                loads.append(subprocess.Popen([sys.executable, "-c", LOAD, address, str(n), image.name],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for load in loads:
                load.stdout.readline()  # its clients are running
            channel = grpc.insecure_channel(address)
            health = health_pb2_grpc.HealthStub(channel)
            info = detector_pb2_grpc.DetectorStub(channel)
            refusing = _wait_until_refusing(info, open(image.name, "rb").read())
            start_time = time.perf_counter()
            checks, infos, failed = _probe(health, info, probes)
            seconds = time.perf_counter() - start_time
            channel.close()
            counts = {}
            for load in loads:
                out, _ = load.communicate("", timeout=60)
                for code, n in json.loads(out.splitlines()[-1]).items():
                    counts[code] = counts.get(code, 0) + n
        finally:
            for load in loads:
                if load.poll() is None:
                    load.kill()
            server.terminate()
            server.wait(60)
    return {"clients": clients, "probes": probes, "overloaded": refusing,
            "health_p50_ms": percentile(checks, 50), "health_p99_ms": percentile(checks, 99),
            "health_max_ms": max(checks), "model_info_p99_ms": percentile(infos, 99), "failed": failed,
            "detect_calls": counts, "probing_s": seconds}


def _probe(health, info, probes):
    checks, infos, failed = [], [], 0
    for _ in range(probes):
        for calls, call in ((checks, lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5)),
                            (infos, lambda: info.GetModelInfo(pb.ModelInfoRequest(), timeout=5))):
            start_time = time.perf_counter()
            try:
                call()
            except grpc.RpcError:
                failed += 1
            calls.append((time.perf_counter() - start_time) * 1e3)
        time.sleep(0.01)
    return checks, infos, failed


def _wait_until_refusing(stub, data, seconds=60):
    """Poll until the server refuses a Detect call: it is overloaded."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            stub.Detect(pb.DetectRequest(encoded=data), timeout=60)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return True
    return False


def shutdown_with_watches(streams=4):
    server, address = start_server_process()
    channels = [grpc.insecure_channel(address) for _ in range(streams)]
    watches = [health_pb2_grpc.HealthStub(c).Watch(health_pb2.HealthCheckRequest()) for c in channels]
    for watch in watches:
        next(watch)  # SERVING: the stream is open
    sent = time.perf_counter()
    server.send_signal(signal.SIGTERM)
    code = server.wait(120)
    seconds = time.perf_counter() - sent
    for c in channels:
        c.close()
    return {"watch_streams": streams, "sigterm_to_exit_s": seconds, "exit_code": code}


def shutdown_with_calls(in_flight):
    server, address = start_server_process("--workers", "2", "--max-concurrent", str(max(16, in_flight)))
    from detector.datasets import digits

    channel = grpc.insecure_channel(address)
    stub = detector_pb2_grpc.DetectorStub(channel)
    image = digits.scene(2, size=(640, 480))[0]
    request = pb.DetectRequest(raw=pb.RawImage(height=480, width=640, channels=1, data=image.tobytes()),
                               mode=pb.SLIDING, scales=[0.8])  # a second or two each
    finished, lock = [], threading.Lock()

    def done(future):
        with lock:
            finished.append((time.perf_counter(), future.code().name))

    futures = [stub.Detect.future(request, timeout=120) for _ in range(in_flight)]
    for f in futures:
        f.add_done_callback(done)
    time.sleep(0.5)  # the calls reach the server; none of them finishes this soon
    sent = time.perf_counter()
    server.send_signal(signal.SIGTERM)
    code = server.wait(120)
    exited = time.perf_counter()
    for f in futures:
        f.exception()
    channel.close()
    codes = sorted({c for _, c in finished})
    last = max(t for t, _ in finished)
    return {"in_flight": in_flight, "sigterm_to_exit_s": exited - sent, "last_call_to_exit_s": exited - last,
            "statuses": codes, "exit_code": code}


def memory(requests):
    """The server's peak resident memory after each request of ``requests`` [(name, request)],
    with the default limits but for the time ceiling, raised so that the heavy calls finish."""
    server, address = start_server_process("--max-request-seconds", "300")
    channel = grpc.insecure_channel(address)
    stub = detector_pb2_grpc.DetectorStub(channel)
    rows = [{"request": "started", "status": "-", "peak_rss_mb": peak_rss_mb(server.pid)}]
    try:
        for name, request in requests:
            try:
                stub.Detect(request, timeout=300)
                status = "OK"
            except grpc.RpcError as error:
                status = error.code().name
            rows.append({"request": name, "status": status, "peak_rss_mb": peak_rss_mb(server.pid)})
    finally:
        channel.close()
        server.terminate()
        server.wait(60)
    return rows


def heavy_requests():
    from detector.datasets import digits

    scene = cv2.resize(digits.scene(3, size=(1024, 1024), channels=3)[0], (4096, 4096))
    photo = cv2.imencode(".jpg", scene)[1].tobytes()
    zeros = cv2.imencode(".png", np.zeros((7071, 7071), np.uint8))[1].tobytes()
    return [("4096x4096 colour JPEG, default pyramid", pb.DetectRequest(encoded=photo)),
            ("7071x7071 zeros PNG (48 KB), scales [4.0]", pb.DetectRequest(encoded=zeros, scales=[4.0])),
            ("7071x7071 zeros PNG, default pyramid", pb.DetectRequest(encoded=zeros)),
            ("7071x7071 zeros PNG, scales [1.0] (the most memory the budget lets through)",
             pb.DetectRequest(encoded=zeros, scales=[1.0])),
            ("7071x7071 zeros PNG, score maps at scale 0.5", pb.DetectRequest(encoded=zeros, scales=[0.5],
                                                                             return_score_maps=True))]


def main(args):
    report = {"health": health_under_overload(args.clients, args.probes),
              "shutdown_watch": shutdown_with_watches(),
              "shutdown_calls": shutdown_with_calls(args.in_flight),
              "memory": memory(heavy_requests())}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    h = report["health"]
    calls = ", ".join(f"{n} {code}" for code, n in sorted(h["detect_calls"].items()))
    print(f"health while {h['clients']} clients overload Detect: p50 {h['health_p50_ms']:.1f} ms, "
          f"p99 {h['health_p99_ms']:.1f} ms, max {h['health_max_ms']:.1f} ms over {h['probes']} checks; "
          f"GetModelInfo p99 {h['model_info_p99_ms']:.1f} ms; {h['failed']} failed; Detect calls meanwhile: {calls}")
    w, c = report["shutdown_watch"], report["shutdown_calls"]
    print(f"SIGTERM to exit with {w['watch_streams']} Watch streams open: {w['sigterm_to_exit_s']:.2f} s "
          f"(exit code {w['exit_code']})")
    print(f"SIGTERM to exit with {c['in_flight']} calls in flight: {c['sigterm_to_exit_s']:.2f} s, "
          f"{c['last_call_to_exit_s']:.2f} s after the last call ended ({', '.join(c['statuses'])}; "
          f"exit code {c['exit_code']})")
    for row in report["memory"]:
        print(f"peak server RSS {row['peak_rss_mb']:7.0f} MB after {row['request']} ({row['status']})")
    return 0
