"""``detector bench serve``: served throughput and latency under concurrent load, beside the
in-process throughput of detect on the same images, over gRPC, HTTP/JSON or both.

With both protocols, each concurrency level runs over gRPC and over HTTP in turns, ``rounds``
times, against the same server and images; the ratio of their median throughputs is measured
in that one run. Each HTTP client thread keeps one connection alive, as each gRPC client
shares one channel.

The JSON keeps the vocabulary of :mod:`detector.report_json`: ``image_size`` as
``{"width", "height"}``, durations in milliseconds under keys ending in ``_ms``.
"""
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import queue
import time
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc

import detector
from detector.report_json import size_json

from .client import DetectorClient

HTTP_TARGET = 0.9  # HTTP's throughput at least 0.9x gRPC's at 4 clients


def start_server_process(*flags):
    """A ``detector serve --port 0 FLAGS...`` process on a free loopback port, and its
    address; with ``--http-port`` among the flags, ``process.http_address`` too. Its log goes
    to a file, not a pipe nobody reads (which would fill and stall the server)."""
    command = [sys.executable, "-m", "detector", "serve", "--port", "0", *flags]
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        process.wait()
        log.seek(0)
        said = [text.strip() for text in log if text.strip()]
        log.close()
        raise OSError(f"the benchmark's server did not start: {said[-1] if said else line.strip() or 'no output'}")
    process.log = log
    process.http_address = process.stdout.readline().split()[-1] if "--http-port" in flags else None
    return process, line.split()[-1]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class HttpClient:
    """POST /v1/detect over keep-alive connections, each used by one call at a time and kept
    for the next (as a gRPC channel keeps its connection)."""

    def __init__(self, address, timeout=120):
        url = urllib.parse.urlsplit(address)
        self.host, self.port, self.timeout = url.hostname, url.port, timeout
        self.idle = queue.LifoQueue()

    def detect(self, data, mode):
        """The HTTP status of one call."""
        try:
            connection = self.idle.get_nowait()
        except queue.Empty:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request("POST", f"/v1/detect?mode={mode}", body=data, headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            json.loads(response.read())  # as a client would: the reply parsed
        except (OSError, ValueError, http.client.HTTPException):
            connection.close()
            raise
        self.idle.put(connection)
        return response.status

    def close(self):
        while not self.idle.empty():
            self.idle.get_nowait().close()


def _grpc_call(client, mode):
    def call(data):
        try:
            client.detect(data, mode=mode)
            return "OK"
        except grpc.RpcError as error:
            return error.code().name
    return call


def _http_call(client, mode):
    def call(data):
        try:
            status = client.detect(data, mode)
        except (OSError, ValueError, http.client.HTTPException) as error:
            return type(error).__name__
        return "OK" if status == 200 else f"HTTP {status}"
    return call


def _load(call, encoded, concurrency, requests):
    """Send ``requests`` calls from ``concurrency`` threads: (requests/s, latencies, statuses)."""
    latencies, codes = [], Counter()

    def one(i):
        t = time.perf_counter()
        codes[call(encoded[i % len(encoded)])] += 1
        latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(requests)))
    return requests / (time.perf_counter() - start), latencies, codes


def run(address=None, concurrency=(1, 4, 16), requests=200, mode="fcn", size=(640, 480), images=8,
        protocols=("grpc",), http_address=None, rounds=1):
    from detector.datasets import digits

    scenes = [digits.scene(1000 + i, size=size)[0] for i in range(images)]
    encoded = [cv2.imencode(".png", s)[1].tobytes() for s in scenes]
    net = detector.load_model()
    count = max(images, requests // 4)
    start = time.perf_counter()
    for i in range(count):
        detector.detect(cv2.imdecode(cv2.imencode(".png", scenes[i % images])[1], cv2.IMREAD_UNCHANGED), net, mode=mode)
    in_process = count / (time.perf_counter() - start)

    process = None
    if address is None:
        process, address = start_server_process(*(("--http-port", "0") if "http" in protocols else ()))
        http_address = process.http_address
    if "http" in protocols and not http_address:
        raise ValueError("HTTP needs the server's HTTP address: --http-addr http://HOST:PORT")
    rows, web = [], None
    try:
        with DetectorClient(address, timeout=120) as client:
            client.model_info()
            calls = {"grpc": _grpc_call(client, mode)}
            web = HttpClient(http_address) if "http" in protocols else None
            if web:
                calls["http"] = _http_call(web, mode)
                # warm as the gRPC channel is: a kept connection for each client thread
                with ThreadPoolExecutor(max(concurrency)) as pool:
                    list(pool.map(calls["http"], encoded[:1] * max(concurrency)))
            for c in concurrency:
                runs = {p: [] for p in protocols}
                for r in range(rounds):
                    # in turns, and in the other order each round, so a drift of the machine's
                    # speed falls on both
                    for protocol in (protocols if r % 2 == 0 else protocols[::-1]):
                        runs[protocol].append(_load(calls[protocol], encoded, c, requests))
                for protocol in protocols:
                    rps = statistics.median(r[0] for r in runs[protocol])
                    latencies = [t for r in runs[protocol] for t in r[1]]
                    codes = sum((r[2] for r in runs[protocol]), Counter())
                    rows.append({"protocol": protocol, "concurrency": c, "requests": requests * rounds,
                                 "rps": rps, "ratio_to_in_process": rps / in_process,
                                 "p50_ms": percentile(latencies, 50) * 1e3, "p95_ms": percentile(latencies, 95) * 1e3,
                                 "p99_ms": percentile(latencies, 99) * 1e3, "status": dict(codes)})
    finally:
        if web:
            web.close()
        if process is not None:
            process.terminate()
            process.wait(30)
            process.log.close()
    result = {"address": address, "http_address": http_address, "mode": mode, "image_size": size_json(*size),
              "in_process_rps": in_process, "in_process_threads": detector.get_num_threads(), "rounds": rounds,
              "runs": rows}
    if "grpc" in protocols and "http" in protocols:
        rps = {(r["protocol"], r["concurrency"]): r["rps"] for r in rows}
        result["http_to_grpc"] = [{"concurrency": c, "ratio": rps["http", c] / rps["grpc", c]} for c in concurrency]
        result["targets"] = [{"what": f"HTTP throughput / gRPC's at {c} clients", "value": r["ratio"],
                              "target": HTTP_TARGET, "met": r["ratio"] >= HTTP_TARGET}
                             for c, r in zip(concurrency, result["http_to_grpc"]) if c == 4]
    return result


def format_table(result):
    size = result["image_size"]
    http = f", HTTP {result['http_address']}" if result.get("http_address") else ""
    lines = [f"detector bench serve: {result['mode']} on {size['width']}x{size['height']} PNG scenes, "
             f"server {result['address']}{http}",
             f"in-process detect: {result['in_process_rps']:.2f} images/s "
             f"(one call at a time, {result['in_process_threads']} kernel threads)", "",
             f"{'protocol':>8}{'clients':>8}{'requests':>10}{'req/s':>9}{'/in-process':>13}{'p50 ms':>9}"
             f"{'p95 ms':>9}{'p99 ms':>9}  status"]
    for r in result["runs"]:
        lines.append(f"{r['protocol']:>8}{r['concurrency']:>8}{r['requests']:>10}{r['rps']:>9.2f}"
                     f"{r['ratio_to_in_process']:>13.2f}{r['p50_ms']:>9.0f}{r['p95_ms']:>9.0f}{r['p99_ms']:>9.0f}  "
                     + ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items())))
    if "http_to_grpc" in result:
        lines.append("")
        lines += [f"HTTP / gRPC throughput at {r['concurrency']} clients: {r['ratio']:.2f}x (median of "
                  f"{result['rounds']} rounds)" for r in result["http_to_grpc"]]
        lines += [f"target: {t['what']} >= {t['target']}: {'met' if t['met'] else 'MISSED'}" for t in result["targets"]]
    return "\n".join(lines)


def main(args):
    """``detector bench serve``: ``args.concurrency`` a tuple of counts and ``args.size``
    (width, height), as the parser gives them."""
    if min(args.concurrency) < 1 or args.requests < 1:
        raise ValueError("concurrency and requests must be at least 1")
    result = run(args.addr, args.concurrency, args.requests, args.mode, args.size,
                 protocols=args.protocol, http_address=args.http_addr, rounds=args.rounds)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
