"""The command line: every error is one line on stderr and a non-zero exit, never a
traceback; ranges are checked by the parser; help shows the defaults; and ``--json`` speaks
one vocabulary across detect, client and the benchmarks."""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import zlib
from importlib import metadata

import cv2
import pytest

from detector import cli, cli_args
from detector.cli import main
from detector.datasets import digits
from detector_server import app, start_server

SCENE = digits.scene(14, size=(200, 150))[0]


def fails(capsys, argv, status=2):
    """Run the command, expect it to fail with ``status``; its one line on stderr."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == status, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def scene_png(tmp_path):
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), SCENE)
    return str(path)


@pytest.fixture(scope="module")
def server():
    running = start_server(port=0, workers=1)
    yield running
    running.stop(grace=1).wait()


def png_claiming(width, height):
    """A small PNG whose header claims ``width`` x ``height`` gray pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("argv, culprit", [
    (["serve", "--port", "-1"], "--port"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--http-port", "65536"], "--http-port"),
    (["bench", "serve", "--protocol", "grpc,ftp"], "--protocol"),
    (["bench", "serve", "--protocol", "http,http"], "--protocol"),
    (["serve", "--port", "80.5"], "--port"),
    (["serve", "--max-message-mb", "inf"], "--max-message-mb"),
    (["serve", "--max-message-mb", "5000"], "--max-message-mb"),
    (["serve", "--max-message-mb", "nan"], "--max-message-mb"),
    (["serve", "--max-message-mb", "0.5"], "--max-message-mb"),
    (["serve", "--max-concurrent", "-5"], "--max-concurrent"),
    (["serve", "--workers", "0"], "--workers"),
    (["serve", "--threads", "0"], "--threads"),
    (["serve", "--max-request-seconds", "0"], "--max-request-seconds"),
    (["serve", "--grace", "inf"], "--grace"),
    (["serve", "--notice", "-1"], "--notice"),
    (["serve", "--max-pixels", "0"], "--max-pixels"),
    (["serve", "--max-gflops", "nan"], "--max-gflops"),
    (["serve", "--max-memory-mb", "-1"], "--max-memory-mb"),
    (["detect", "x.png", "--scale-step", "1.0000001"], "--scale-step"),
    (["detect", "x.png", "--threshold", "1.5"], "--threshold"),
    (["detect", "x.png", "--nms-iou", "nan"], "--nms-iou"),
    (["detect", "x.png", "--min-size", "inf"], "--min-size"),
    (["detect", "x.png", "--max-size", "0"], "--max-size"),
    (["detect", "x.png", "--stride", "0"], "--stride"),
    (["detect", "x.png", "--max-detections", "0"], "--max-detections"),
    (["detect", "x.png", "--max-pixels", "1e9"], "--max-pixels"),
    (["detect", "x.png", "--max-gflops", "0"], "--max-gflops"),
    (["detect", "x.png", "--max-memory-mb", "inf"], "--max-memory-mb"),
    (["train", "--out", "m.npz", "--epochs", "0"], "--epochs"),
    (["train", "--out", "m.npz", "--lr", "nan"], "--lr"),
    (["train", "--out", "m.npz", "--val-fraction", "1"], "--val-fraction"),
    (["train", "--out", "m.npz", "--momentum", "1"], "--momentum"),
    (["train", "--out", "m.npz", "--object-size", "0"], "--object-size"),
    (["train", "--out", "m.npz", "--seed", "-1"], "--seed"),
    (["eval", "--scenes", "s", "--n", "0"], "--n"),
    (["eval", "--scenes", "s", "--threshold", "-0.1"], "--threshold"),
    (["data", "preview", "--out", "p.png", "--n", "0"], "--n"),
    (["data", "shapes", "--out", "d", "--size", "10x10"], "--size"),
    (["bench", "detect", "--sizes", "128,abc"], "--sizes"),
    (["bench", "detect", "--large", "-1"], "--large"),
    (["bench", "serve", "--concurrency", "1,0"], "--concurrency"),
    (["bench", "serve", "--requests", "0"], "--requests"),
    (["bench", "serve", "--size", "640"], "--size"),
    (["client", "x.png", "--timeout", "0"], "--timeout"),
    (["client", "x.png", "--threshold", "2"], "--threshold"),
    (["demo", "--seed", "-3"], "--seed"),
])
def test_the_parser_refuses_out_of_range_values_in_one_line(capsys, argv, culprit):
    err = fails(capsys, argv)
    assert f"argument {culprit}" in err and repr(argv[-1]) in err and "--help" in err


@pytest.mark.parametrize("kind, accepted, refused", [
    (cli_args.port, ["0", "65535"], ["-1", "65536", "1.0", "x"]),
    (cli_args.count, ["1", "1000000"], ["0", "-1", "2.5", ""]),
    (cli_args.probability, ["0", "1", "0.5"], ["-0.01", "1.01", "nan", "inf"]),
    (cli_args.message_mb, ["1", "2047", "16.5"], ["0.99", "2048", "inf", "-inf", "nan"]),
    (cli_args.scale_step, ["1.05", "2"], ["1.0000001", "1", "inf"]),
    (cli_args.seconds, ["0.001", "86400"], ["0", "-1", "inf", "nan", "1e400"]),
    (cli_args.positive, ["1e-9", "16"], ["0", "-5", "inf"]),
])
def test_argument_types_take_their_range_and_nothing_else(kind, accepted, refused):
    for text in accepted:
        kind(text)
    for text in refused:
        with pytest.raises(Exception) as error:
            kind(text)
        assert type(error.value).__name__ == "ArgumentTypeError" and repr(text) in str(error.value)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"detector {metadata.version('detector')}\n"


@pytest.mark.parametrize("command, defaults", [
    (["serve"], ["--port PORT 0 takes a free port (default: 50051)",
                 f"(default: {app.DEFAULT_GRACE:g})", f"(default: {app.DEFAULT_NOTICE:g})",
                 f"(default: {app.DEFAULT_MAX_REQUEST_SECONDS:g})", "(default: 50000000)", "(default: 16)",
                 "(default: $DETECTOR_TOKEN)"]),
    (["detect"], ["(default: 0.5)", "(default: 0.3)", "(default: 100)", "(default: 1.25992)",
                  "(default: 50000000)", "(default: 2000)", "(default: 1024)", "(default: fcn)"]),
    (["train"], ["(default: 12)", "(default: 64)", "(default: 0.05)", "(default: digits)"]),
    (["eval"], ["(default: 200)"]),
    (["data", "preview"], ["(default: 160)"]),
    (["data", "scenes"], ["(default: 500000)"]),
    (["data", "shapes"], ["(default: 320x240)"]),
    (["bench", "layers"], []),
    (["bench", "detect"], ["(default: 128,256,512,1024)", "(default: 4096)"]),
    (["bench", "serve"], ["(default: 1,4,16)", "(default: 640x480)"]),
    (["client"], ["(default: 127.0.0.1:50051)", "(default: 60)", "(default: the server's)"]),
    (["demo"], ["(default: demo-output)", "(default: 7)"]),
])
def test_help_shows_each_default_once(capsys, monkeypatch, command, defaults):
    monkeypatch.setenv("DETECTOR_TOKEN", "s3cret-token")
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    for default in defaults:
        assert default in flat, (default, text)
    assert "(default: None)" not in flat and "(default: False)" not in flat and "s3cret" not in flat
    for entry in re.split(r"\n  (?=-)", text):  # one option's usage and help
        assert " ".join(entry.split()).count("default") <= 1, entry


def test_detect_and_client_json_speak_the_same_vocabulary(server, scene_png, capsys):
    assert main(["detect", scene_png, "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["client", scene_png, "--addr", server.address, "--json"]) == 0
    served = json.loads(capsys.readouterr().out)

    assert set(served) == set(local) | {"served_by"} and served["served_by"] == server.address
    assert set(served["timings_ms"]) == set(local["timings_ms"]) | {"queue_ms"}
    assert set(local["timings_ms"]) == {"decode_ms", "pyramid_ms", "inference_ms", "nms_ms", "total_ms"}
    for report in (local, served):
        assert report["image"] == scene_png and report["image_size"] == {"width": 200, "height": 150}
        assert all(ms >= 0 for ms in report["timings_ms"].values())
        assert all(set(d) == {"box", "label", "score"} and len(d["box"]) == 4 for d in report["detections"])
        assert report["truncated"] == 0
    stages = sum(local["timings_ms"][k] for k in ("decode_ms", "pyramid_ms", "inference_ms", "nms_ms"))
    assert local["timings_ms"]["total_ms"] >= stages
    assert local["model"] == served["model"] and len(local["model"]["checksum"]) == 64
    assert [d["label"] for d in local["detections"]] == [d["label"] for d in served["detections"]]
    assert local["detections"], "the scene has digits"
    for mine, theirs in zip(local["detections"], served["detections"]):
        x0, y0, x1, y1 = mine["box"]
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 150  # [x0, y0, x1, y1] in input pixels
        assert theirs["box"] == pytest.approx(mine["box"], abs=1e-3)
        assert theirs["score"] == pytest.approx(mine["score"], abs=1e-5)


def test_a_png_claiming_100000x100000_is_refused_from_its_header(tmp_path, capsys):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(100000, 100000))
    err = fails(capsys, ["detect", str(path)])
    assert str(path) in err and "100000x100000" in err and "--max-pixels" in err


def test_detect_limits_reach_the_reading_and_the_budget(scene_png, capsys):
    err = fails(capsys, ["detect", scene_png, "--max-pixels", str(200 * 150 - 1)])
    assert "200x150" in err and "--max-pixels" in err
    err = fails(capsys, ["detect", scene_png, "--max-gflops", "0.001"])
    assert "GFLOP" in err and "--max-gflops" in err
    err = fails(capsys, ["detect", scene_png, "--max-memory-mb", "1"])
    assert "MB" in err and "--max-memory-mb" in err
    assert main(["detect", scene_png, "--max-pixels", str(200 * 150)]) == 0


@pytest.mark.parametrize("contents, message", [
    (b"garbage", "not a PNG, JPEG"),
    (b"\x89PNG\r\n\x1a\n truncated", "PNG"),
])
def test_an_unreadable_image_is_one_line(tmp_path, capsys, contents, message):
    path = tmp_path / "bad.png"
    path.write_bytes(contents)
    err = fails(capsys, ["detect", str(path)])
    assert str(path) in err and message in err


def test_a_model_file_that_is_not_a_model(tmp_path, scene_png, capsys):
    model = tmp_path / "model.npz"
    model.write_bytes(b"not a zip file")
    assert str(model) in fails(capsys, ["detect", scene_png, "--model", str(model)])
    assert "no checkpoint" in fails(capsys, ["detect", scene_png, "--model", str(tmp_path / "missing.npz")])


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    # the input and the model do not exist either: the output path's error comes first
    missing = str(tmp_path / "missing")
    out = os.path.join(missing, "boxes.png")
    err = fails(capsys, ["detect", os.path.join(missing, "in.png"), "--model", os.path.join(missing, "m.npz"),
                         "--out", out])
    assert out in err and "folder does not exist" in err
    err = fails(capsys, ["detect", "in.png", "--heatmap", str(tmp_path / "heat.txt")])
    assert str(tmp_path / "heat.txt") in err and ".png" in err
    out = os.path.join(missing, "x.npz")
    err = fails(capsys, ["train", "--data", missing, "--out", out, "--no-progress"])
    assert out in err and "folder does not exist" in err
    err = fails(capsys, ["train", "--out", str(tmp_path), "--no-progress"])
    assert "is a folder" in err


def test_client_errors_are_one_line(server, scene_png, tmp_path, capsys):
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        err = fails(capsys, ["client", scene_png, "--addr", address, "--timeout", "30"], status=1)
    assert err.startswith("detector: error: UNAVAILABLE: ")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(100000, 100000))
    err = fails(capsys, ["client", str(bomb), "--addr", server.address], status=1)
    assert err.startswith("detector: error: RESOURCE_EXHAUSTED: ") and "100000x100000" in err
    err = fails(capsys, ["client", str(tmp_path / "none.png"), "--addr", server.address])
    assert "cannot read the image" in err and "none.png" in err
    err = fails(capsys, ["client", scene_png, "--addr", server.address, "--tls-ca", str(tmp_path / "ca.pem")])
    assert "--tls-ca" in err


def test_client_draws_its_boxes(server, scene_png, tmp_path, capsys):
    out = tmp_path / "boxes.png"
    assert main(["client", scene_png, "--addr", server.address, "--out", str(out)]) == 0
    assert f"on {server.address}" in capsys.readouterr().out
    assert cv2.imread(str(out)).shape == (150, 200, 3)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("boom\nand a second line")

    monkeypatch.setitem(cli.HANDLERS, "demo", broken)
    monkeypatch.delenv("DETECTOR_DEBUG", raising=False)
    err = fails(capsys, ["demo"], status=1)
    assert err == ("detector: internal error: RuntimeError: boom and a second line; "
                   "set DETECTOR_DEBUG=1 for the traceback")
    monkeypatch.setenv("DETECTOR_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(["demo"])


def test_an_interrupt_is_one_line_and_status_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.HANDLERS, "demo", interrupted)
    assert fails(capsys, ["demo"], status=130) == "detector: interrupted"


def run_serve(*args):
    """``detector serve`` in a process of its own; it must fail, not serve: a timeout fails."""
    return subprocess.run([sys.executable, "-m", "detector", "serve", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def one_line(process):
    assert process.returncode not in (0, None) and process.stdout == "", (process.stdout, process.stderr)
    assert "Traceback" not in process.stderr and len(process.stderr.strip().splitlines()) == 1, process.stderr
    return process.stderr.strip()


def test_serve_on_a_port_in_use_fails_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = one_line(run_serve("--port", str(port)))
    assert f"127.0.0.1:{port}" in err and "in use" in err


def test_serve_on_an_http_port_in_use_or_the_grpc_port_fails_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = one_line(run_serve("--port", "0", "--http-port", str(port)))
    assert f"127.0.0.1:{port}" in err and "in use" in err
    err = one_line(run_serve("--port", "50999", "--http-port", "50999"))
    assert "HTTP port must differ" in err


def test_serve_with_garbage_tls_fails_at_once(tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage\n")
    err = one_line(run_serve("--port", "0", "--tls-cert", str(garbage), "--tls-key", str(garbage)))
    assert "TLS" in err and "PEM" in err and "listen" not in err
    err = one_line(run_serve("--port", "0", "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(garbage)))
    assert "--tls-cert" in err and "missing.pem" in err


def test_serve_on_a_host_that_is_not_this_machine_fails_at_once():
    err = one_line(run_serve("--host", "192.0.2.1", "--port", "0"))  # TEST-NET-1, never assigned
    assert "192.0.2.1" in err and "cannot listen" in err


def test_bench_json_uses_the_same_vocabulary(server, capsys):
    assert main(["bench", "detect", "--sizes", "64", "--large", "64", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    row = result["sizes"][0]
    assert row["image_size"] == {"width": 64, "height": 64} and result["window"] == {"width": 32, "height": 32}
    assert row["sliding_ms"] > 0 and row["fcn_ms"] > 0
    assert result["large"]["image_size"] == {"width": 64, "height": 64}
    assert main(["bench", "serve", "--addr", server.address, "--concurrency", "1", "--requests", "2",
                 "--size", "64x48", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image_size"] == {"width": 64, "height": 48}
    assert result["runs"][0]["status"] == {"OK": 2} and result["runs"][0]["p50_ms"] > 0


def test_bench_serve_runs_both_protocols_against_one_server_and_gives_their_ratio(capsys):
    assert main(["bench", "serve", "--protocol", "grpc,http", "--concurrency", "1,4", "--requests", "4",
                 "--rounds", "2", "--size", "64x48", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(r["protocol"], r["concurrency"]) for r in result["runs"]] == [
        ("grpc", 1), ("http", 1), ("grpc", 4), ("http", 4)]
    assert all(r["status"] == {"OK": 8} for r in result["runs"])
    rps = {(r["protocol"], r["concurrency"]): r["rps"] for r in result["runs"]}
    for row in result["http_to_grpc"]:
        assert row["ratio"] == pytest.approx(rps["http", row["concurrency"]] / rps["grpc", row["concurrency"]])
    assert [t["what"] for t in result["targets"]] == ["HTTP throughput / gRPC's at 4 clients"]
