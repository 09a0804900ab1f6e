"""Hostile requests for tests/test_hostile.py: the bytes that build them and the table of
(request, expected status) pairs.

Every request is made lazily (a ``make`` function), so a 50-megapixel bomb or a 15 MB
message exists in the test process only while its case runs.
"""
import io
import socket
import struct
import time
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from detector.datasets import digits
from detector_server import detector_pb2 as pb

DETECT = "/detector.v1.Detector/Detect"
MODEL_INFO = "/detector.v1.Detector/GetModelInfo"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
NAN, INF = float("nan"), float("inf")
UINT32_MAX = 2 ** 32 - 1
MB = 2 ** 20
# a request whose protobuf bytes do not parse: the servicer's lenient deserializer lets it
# through to the handler, which says so
MALFORMED = ("INVALID_ARGUMENT",)
# grpcio's asyncio server leaves a call whose stream ends before its message is complete
# unanswered: it waits for the rest, holding no thread, until the client hangs up
SILENT = None


# ---------------------------------------------------------------------------------------
# images


def _memo(make):
    cache = {}

    def cached():
        if "value" not in cache:
            cache["value"] = make()
        return cache["value"]

    return cached


@_memo
def small():
    """The good small request's image: 160x120 gray digits."""
    return digits.scene(21, size=(160, 120))[0]


@_memo
def vga():
    """A 640x480 gray scene of digits."""
    return digits.scene(5, size=(640, 480))[0]


def png(image, *params):
    ok, data = cv2.imencode(".png", image, list(params))
    assert ok
    return data.tobytes()


def jpeg(image, quality=90):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


@_memo
def small_png():
    return png(small())


@_memo
def vga_png():
    return png(vga())


@_memo
def vga_jpeg():
    return jpeg(cv2.cvtColor(vga(), cv2.COLOR_GRAY2BGR))


@_memo
def zeros_png_7071():
    """About 60 KB of PNG that decodes to 7071 x 7071 = 49,999,041 pixels (50 MB as uint8)."""
    return png(np.zeros((7071, 7071), np.uint8), cv2.IMWRITE_PNG_COMPRESSION, 9)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_claiming(width, height, depth=8, colour=0, idat=b"", crc_ok=True):
    """A PNG whose IHDR claims ``width`` x ``height``, followed by ``idat`` as its only
    IDAT chunk (none when empty) and IEND."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    if not crc_ok:
        ihdr = ihdr[:-4] + bytes(b ^ 0xFF for b in ihdr[-4:])
    body = png_chunk(b"IDAT", idat) if idat else b""
    return PNG_SIGNATURE + ihdr + body + png_chunk(b"IEND", b"")


def png_with_overlong_idat(width=100, height=100, inflated=64 * MB):
    """A valid-looking gray PNG of width x height whose IDAT inflates to ``inflated`` bytes,
    far more than the rows need: a zlib bomb under a small header."""
    return png_claiming(width, height, idat=zlib.compress(bytes(inflated), 9))


def jpeg_claiming(data, width, height):
    """``data`` (a baseline JPEG) with its frame header (SOF0) patched to claim width x height."""
    at = data.index(b"\xff\xc0")
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


def cmyk_jpeg():
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("CMYK", (64, 64), (10, 20, 30, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def pillow_bytes(image, fmt, **params):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **params)
    return buffer.getvalue()


def random_bytes(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


# ---------------------------------------------------------------------------------------
# protobuf frames, by hand


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number, wire, payload):
    return varint(number << 3 | wire) + payload


def length_delimited(number, data):
    return field(number, 2, varint(len(data)) + data)


# ---------------------------------------------------------------------------------------
# the table


@dataclass
class Case:
    """One hostile call. ``make()`` gives a DetectRequest (or, for ``method`` other than
    Detect, any message), or ``bytes`` sent as they are. ``code`` is the expected status
    name (or a tuple of acceptable ones), ``message`` a regular expression the details must
    match, in fewer than ``max_details`` characters. ``seconds`` bounds the call's wall
    time, ``growth_mb`` the server's peak resident memory above its level before the call,
    ``timeout`` is the client's deadline (None: no deadline, so only the server's ceiling
    can stop the work); ``metadata`` and ``compression`` go with the call. Every status of
    the servicer carries a message; ``by_grpc`` marks calls that gRPC answers itself."""

    name: str
    make: object  # () -> DetectRequest, another message, or bytes
    code: object
    message: str = ""
    method: str = DETECT
    seconds: float = 20.0
    growth_mb: float = 64.0
    timeout: object = 60.0
    max_details: int = 1100
    metadata: tuple = None
    compression: object = None
    by_grpc: bool = False  # answered by gRPC itself, whose statuses may carry no message

    def codes(self):
        return (self.code,) if isinstance(self.code, str) else tuple(self.code)


def request(image=None, raw=None, **options):
    """A DetectRequest of encoded ``image`` bytes (a function giving them) or a RawImage."""
    if raw is not None:
        return pb.DetectRequest(raw=raw, **options)
    if image is None:
        return pb.DetectRequest(**options)
    return pb.DetectRequest(encoded=image() if callable(image) else image, **options)


def raw(height, width, channels, data=b""):
    return pb.RawImage(height=height, width=width, channels=channels, data=data)


def _small_raw(channels):
    image = small() if channels == 1 else cv2.cvtColor(small(), cv2.COLOR_GRAY2BGR if channels == 3 else
                                                      cv2.COLOR_GRAY2BGRA)
    return raw(*image.shape[:2], channels, image.tobytes())


def _sixteen_bit_png():
    return png(small().astype(np.uint16) * 257)


def _bgra_png():
    return png(cv2.cvtColor(small(), cv2.COLOR_GRAY2BGRA))


def _gray_alpha_png():
    return pillow_bytes(np.dstack([small(), np.full_like(small(), 200)]), "PNG")


def _palette_png():
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(small()).convert("P").save(buffer, "PNG")
    return buffer.getvalue()


def _gray_jpeg():
    return jpeg(small())


def _lying_jpeg():
    return jpeg_claiming(vga_jpeg(), 1000, 1000)


def _progressive_truncated_jpeg():
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(vga()).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    return data[:len(data) // 2]


def _ff_flood():
    return b"\xff\xd8" + b"\xff" * (15 * MB)


def _over_16_mb():
    return b"\x89PNG\r\n\x1a\n" + bytes(16 * MB + 1024)


def _compressed_bomb():
    # 64 MB of zeros that the client's gzip makes some 64 KB on the wire: the server must
    # refuse it as it inflates, not after
    return pb.DetectRequest(encoded=PNG_SIGNATURE + bytes(64 * MB))


def _big_gray(size):
    return lambda: png(np.zeros((size, size), np.uint8))


def _huge_varint_length():
    # field 1 (encoded) claiming 2^62 bytes follow
    return field(1, 2, varint(2 ** 62)) + b"abc"


def _wrong_wire_type_for_image():
    # field 1 (bytes) sent as a varint
    return field(1, 0, varint(12345))


def _truncated_request():
    data = pb.DetectRequest(encoded=vga_png()).SerializeToString()
    return data[:len(data) // 2]


def _group_bomb():
    # start-group tags nested deeper than any parser recurses (protobuf's limit is 100)
    return field(15, 3, b"") * 100_000


def _unknown_fields_flood():
    # 4 MB of unknown fields, then a valid image: unknown fields are skipped
    junk = length_delimited(1000, bytes(4 * MB))
    return junk + pb.DetectRequest(encoded=small_png()).SerializeToString()


def _nan_scales():
    return request(small_png, scales=[NAN] * 4000)


CASES = [
    # -- bombs and the budget --------------------------------------------------------------
    Case("png-7071-zeros-scale-4", lambda: request(zeros_png_7071, scales=[4.0]), "RESOURCE_EXHAUSTED",
         r"\d[\d,]* (GFLOP|MB)", seconds=10),
    Case("png-7071-zeros-default", lambda: request(zeros_png_7071), "RESOURCE_EXHAUSTED", r"\d[\d,]* GFLOP",
         seconds=10),
    Case("png-7071-zeros-sliding", lambda: request(zeros_png_7071, mode=pb.SLIDING), "RESOURCE_EXHAUSTED",
         r"GFLOP", seconds=10),
    Case("png-7071-zeros-score-maps", lambda: request(zeros_png_7071, scales=[1.0], return_score_maps=True),
         "RESOURCE_EXHAUSTED", r"MB|send limit", seconds=10),
    # within the budget: decoded (50 MB) and run at one small level; the server's memory
    # may grow by its estimate (about 530 MB), never past the 1024 MB budget. Well under a
    # second on an idle machine, but on a busy one the 5 s ceiling may stop it first
    Case("png-7071-zeros-scale-0.1-within-budget", lambda: request(zeros_png_7071, scales=[0.1]),
         ("OK", "DEADLINE_EXCEEDED"), growth_mb=1024, seconds=60),
    Case("jpeg-7071-zeros-default", lambda: request(jpeg(np.zeros((7071, 7071), np.uint8), 50)),
         "RESOURCE_EXHAUSTED", r"GFLOP", seconds=10),
    Case("png-claims-100000x100000", lambda: request(png_claiming(100000, 100000)), "RESOURCE_EXHAUSTED",
         r"10,000,000,000 pixels"),
    Case("png-claims-uint32-max-by-1", lambda: request(png_claiming(UINT32_MAX, 1)), "RESOURCE_EXHAUSTED",
         r"at most 50,000,000"),
    Case("png-claims-0x0", lambda: request(png_claiming(0, 0)), "INVALID_ARGUMENT", r"empty"),
    # the header passes the pixel limit and one small level passes the budget: the decoder
    # must find that the data is missing
    Case("png-claims-7071x7071-without-data", lambda: request(png_claiming(7071, 7071), scales=[0.1]),
         "INVALID_ARGUMENT", r"cannot be decoded|corrupt"),
    Case("png-idat-inflates-to-64mb-under-100x100", lambda: request(png_with_overlong_idat()), "OK",
         seconds=20),
    Case("score-maps-over-the-send-limit", lambda: request(_big_gray(1500), return_score_maps=True),
         "RESOURCE_EXHAUSTED", r"score maps would take [\d,]+ bytes.*send limit", seconds=10),
    Case("40-levels-at-4x", lambda: request(vga_png, scales=[4.0] * 40), "RESOURCE_EXHAUSTED", r"GFLOP"),
    Case("sliding-stride-1", lambda: request(vga_png, mode=pb.SLIDING, stride=1), "RESOURCE_EXHAUSTED",
         r"\d[\d,]* GFLOP", seconds=10),
    Case("fcn-stride-1-at-4x", lambda: request(vga_png, stride=1, scales=[4.0, 3.9, 3.8]), "RESOURCE_EXHAUSTED",
         r"GFLOP|MB"),
    # under the budget but slow, with no client deadline: the server's ceiling ends it
    # under the budget (about 1,050 of 2,000 GFLOP) but slow, some 30 s on one core of the
    # development machine; with no client deadline only the server's ceiling can end it
    Case("slow-call-without-deadline", lambda: request(vga_png, mode=pb.SLIDING, stride=1, scales=[1.0]),
         "DEADLINE_EXCEEDED", r"limit of 5 s", timeout=None, seconds=30, growth_mb=200),
    Case("slow-call-with-short-client-deadline", lambda: request(vga_png, mode=pb.SLIDING, stride=1,
                                                                 scales=[1.0]),
         "DEADLINE_EXCEEDED", "", timeout=0.5, seconds=15, growth_mb=200),
    # -- scales and the other numbers ------------------------------------------------------
    Case("10000-scales", lambda: request(small_png, scales=[1.0] * 10000), "INVALID_ARGUMENT", r"at most 40"),
    Case("4000-nan-scales", _nan_scales, "INVALID_ARGUMENT", r"finite", max_details=1100),
    Case("scale-inf", lambda: request(small_png, scales=[INF]), "INVALID_ARGUMENT", r"finite"),
    Case("scale-zero", lambda: request(small_png, scales=[0.0]), "INVALID_ARGUMENT", r"positive"),
    Case("scale-negative", lambda: request(small_png, scales=[-1.0]), "INVALID_ARGUMENT", r"positive"),
    Case("scale-5x", lambda: request(small_png, scales=[5.0]), "INVALID_ARGUMENT", r"4x"),
    Case("scale-float-max", lambda: request(small_png, scales=[3.4e38]), "INVALID_ARGUMENT", r"4x"),
    Case("scale-tiny", lambda: request(small_png, scales=[1e-30]), "INVALID_ARGUMENT", r"no pyramid level"),
    Case("scale-denormal", lambda: request(small_png, scales=[1e-45]), "INVALID_ARGUMENT", r"no pyramid level"),
    Case("mode-7", lambda: request(small_png, mode=7), "INVALID_ARGUMENT", r"unknown mode 7"),
    Case("mode-negative", lambda: request(small_png, mode=-5), "INVALID_ARGUMENT", r"unknown mode -5"),
    Case("mode-int32-max", lambda: request(small_png, mode=2 ** 31 - 1), "INVALID_ARGUMENT", r"unknown mode"),
    Case("score-threshold-negative", lambda: request(small_png, score_threshold=-0.1), "INVALID_ARGUMENT",
         r"score_threshold"),
    Case("score-threshold-nan", lambda: request(small_png, score_threshold=NAN), "INVALID_ARGUMENT",
         r"score_threshold"),
    Case("score-threshold-inf", lambda: request(small_png, score_threshold=INF), "INVALID_ARGUMENT",
         r"score_threshold"),
    Case("score-threshold-1.5", lambda: request(small_png, score_threshold=1.5), "INVALID_ARGUMENT",
         r"score_threshold"),
    Case("nms-iou-negative", lambda: request(small_png, nms_iou=-1.0), "INVALID_ARGUMENT", r"nms_iou"),
    Case("nms-iou-nan", lambda: request(small_png, nms_iou=NAN), "INVALID_ARGUMENT", r"nms_iou"),
    Case("nms-iou-inf", lambda: request(small_png, nms_iou=-INF), "INVALID_ARGUMENT", r"nms_iou"),
    Case("min-size-0.01", lambda: request(small_png, min_size=0.01), "INVALID_ARGUMENT", r"more than 4x"),
    Case("min-size-negative", lambda: request(small_png, min_size=-16), "INVALID_ARGUMENT", r"min_size"),
    Case("min-size-nan", lambda: request(small_png, min_size=NAN), "INVALID_ARGUMENT", r"min_size"),
    Case("min-size-inf", lambda: request(small_png, min_size=INF), "INVALID_ARGUMENT", r"min_size"),
    Case("max-size-below-min-size", lambda: request(small_png, min_size=40, max_size=20), "INVALID_ARGUMENT",
         r"max_size"),
    Case("max-size-nan", lambda: request(small_png, max_size=NAN), "INVALID_ARGUMENT", r"max_size"),
    Case("max-size-negative", lambda: request(small_png, max_size=-1), "INVALID_ARGUMENT", r"max_size"),
    # a vast range of sizes: the pyramid stops at 40 levels and drops those under the window
    Case("max-size-float-max", lambda: request(small_png, max_size=3.4e38), "OK"),
    Case("fcn-stride-3", lambda: request(small_png, stride=3), "INVALID_ARGUMENT", r"must divide"),
    Case("fcn-stride-1e9", lambda: request(small_png, stride=10 ** 9), "INVALID_ARGUMENT", r"must divide"),
    # one window per level: legal and cheap
    Case("sliding-stride-uint32-max", lambda: request(vga_png, mode=pb.SLIDING, stride=UINT32_MAX), "OK"),
    Case("max-detections-uint32-max", lambda: request(small_png, max_detections=UINT32_MAX,
                                                      score_threshold=0.0), "OK"),
    # -- images that are not, or are broken ------------------------------------------------
    Case("no-image", lambda: request(), "INVALID_ARGUMENT", r"no image"),
    Case("empty-bytes", lambda: request(b""), "INVALID_ARGUMENT", r"empty"),
    Case("garbage", lambda: request(b"garbage bytes"), "INVALID_ARGUMENT", r"not a PNG, JPEG"),
    Case("random-64kb", lambda: request(random_bytes(64 * 1024)), "INVALID_ARGUMENT", r"not a PNG, JPEG"),
    Case("gif", lambda: request(b"GIF89a" + random_bytes(100)), "INVALID_ARGUMENT", r"not a PNG, JPEG"),
    Case("png-signature-only", lambda: request(PNG_SIGNATURE), "INVALID_ARGUMENT", r"PNG"),
    Case("png-bad-depth", lambda: request(png_claiming(100, 100, depth=3)), "INVALID_ARGUMENT", r"bit depth 3"),
    Case("png-bad-colour-type", lambda: request(png_claiming(100, 100, colour=5)), "INVALID_ARGUMENT",
         r"colour type 5"),
    Case("png-bad-ihdr-crc", lambda: request(png_claiming(100, 100, idat=zlib.compress(bytes(10100)),
                                                          crc_ok=False)),
         "INVALID_ARGUMENT", r"PNG"),
    Case("png-truncated-60-bytes", lambda: request(small_png()[:60]), "INVALID_ARGUMENT", r"cannot be decoded"),
    Case("png-truncated-half", lambda: request(vga_png()[:len(vga_png()) // 2]), "INVALID_ARGUMENT",
         r"cannot be decoded|corrupt"),
    Case("png-idat-garbage", lambda: request(png_claiming(100, 100, idat=random_bytes(500))),
         "INVALID_ARGUMENT", r"PNG"),
    Case("jpeg-soi-only", lambda: request(b"\xff\xd8"), "INVALID_ARGUMENT", r"JPEG"),
    Case("jpeg-truncated-40-bytes", lambda: request(vga_jpeg()[:40]), "INVALID_ARGUMENT", r"JPEG"),
    Case("jpeg-truncated-half", lambda: request(vga_jpeg()[:len(vga_jpeg()) // 2]), "INVALID_ARGUMENT", r"JPEG"),
    Case("jpeg-progressive-truncated", lambda: request(_progressive_truncated_jpeg()), "INVALID_ARGUMENT",
         r"JPEG"),
    Case("jpeg-claims-1000x1000-over-640x480", lambda: request(_lying_jpeg()), "INVALID_ARGUMENT", r"JPEG"),
    Case("jpeg-claims-40000x40000", lambda: request(jpeg_claiming(vga_jpeg(), 40000, 40000)),
         "RESOURCE_EXHAUSTED", r"1,600,000,000 pixels"),
    # over JPEG's largest size (65500): libjpeg refuses the header itself
    Case("jpeg-claims-65535x65535", lambda: request(jpeg_claiming(vga_jpeg(), 65535, 65535)),
         "INVALID_ARGUMENT", r"JPEG header"),
    Case("jpeg-15mb-of-0xff", lambda: request(_ff_flood), "INVALID_ARGUMENT", r"JPEG", seconds=10, growth_mb=160),
    Case("jpeg-cmyk", lambda: request(cmyk_jpeg()), "INVALID_ARGUMENT", r"CMYK"),
    Case("tiff-truncated", lambda: request(pillow_bytes(small(), "TIFF")[:100]), "INVALID_ARGUMENT", r"TIFF"),
    Case("bmp-header-only", lambda: request(pillow_bytes(small(), "BMP")[:54]), "INVALID_ARGUMENT", r"BMP"),
    Case("image-under-the-window", lambda: request(png(np.zeros((20, 40), np.uint8))), "INVALID_ARGUMENT",
         r"window"),
    Case("image-1-pixel", lambda: request(png(np.zeros((1, 1), np.uint8))), "INVALID_ARGUMENT", r"window"),
    # -- images that are fine, in unusual forms ---------------------------------------------
    Case("png-16-bit", lambda: request(_sixteen_bit_png()), "OK"),
    Case("png-bgra", lambda: request(_bgra_png()), "OK"),
    Case("png-gray-alpha", lambda: request(_gray_alpha_png()), "OK"),
    Case("png-palette", lambda: request(_palette_png()), "OK"),
    Case("jpeg-gray", lambda: request(_gray_jpeg()), "OK"),
    Case("raw-gray", lambda: request(raw=_small_raw(1)), "OK"),
    Case("raw-bgr", lambda: request(raw=_small_raw(3)), "OK"),
    Case("raw-bgra", lambda: request(raw=_small_raw(4)), "OK"),
    # -- raw pixels ------------------------------------------------------------------------
    Case("raw-uint32-max-shape-no-data", lambda: request(raw=raw(UINT32_MAX, UINT32_MAX, 3)),
         "RESOURCE_EXHAUSTED", r"at most 50,000,000"),
    Case("raw-100000x100000-no-data", lambda: request(raw=raw(100000, 100000, 1)), "RESOURCE_EXHAUSTED",
         r"10,000,000,000 pixels"),
    Case("raw-7071x7071-no-data", lambda: request(raw=raw(7071, 7071, 4)), "INVALID_ARGUMENT",
         r"has 0 bytes but 7071x7071x4"),
    Case("raw-wrong-byte-count", lambda: request(raw=raw(10, 10, 1, bytes(99))), "INVALID_ARGUMENT",
         r"has 99 bytes but 10x10x1"),
    Case("raw-too-many-bytes", lambda: request(raw=raw(40, 40, 1, bytes(40 * 40 + 1))), "INVALID_ARGUMENT",
         r"has 1,?601 bytes"),
    Case("raw-channels-0", lambda: request(raw=raw(40, 40, 0)), "INVALID_ARGUMENT", r"1, 3 or 4 channels"),
    Case("raw-channels-2", lambda: request(raw=raw(40, 40, 2, bytes(3200))), "INVALID_ARGUMENT",
         r"1, 3 or 4 channels"),
    Case("raw-channels-5", lambda: request(raw=raw(40, 40, 5, bytes(8000))), "INVALID_ARGUMENT",
         r"1, 3 or 4 channels"),
    Case("raw-channels-uint32-max", lambda: request(raw=raw(40, 40, UINT32_MAX)), "INVALID_ARGUMENT",
         r"1, 3 or 4 channels"),
    Case("raw-height-0", lambda: request(raw=raw(0, 40, 1)), "INVALID_ARGUMENT", r"empty"),
    Case("raw-100000x1", lambda: request(raw=raw(100000, 1, 1, bytes(100000))), "INVALID_ARGUMENT", r"window"),
    # -- the message itself ----------------------------------------------------------------
    Case("message-over-16mb", lambda: request(_over_16_mb), "RESOURCE_EXHAUSTED", r"larger than max",
         seconds=15, growth_mb=160),
    Case("gzip-bomb-64mb", _compressed_bomb, "RESOURCE_EXHAUSTED", r"larger than max", seconds=20,
         compression="gzip"),
    Case("metadata-100kb", lambda: request(small_png), "RESOURCE_EXHAUSTED", r"metadata",
         metadata=(("x-junk", "a" * 100_000),), by_grpc=True),
    Case("metadata-1000-keys", lambda: request(small_png), "RESOURCE_EXHAUSTED", "",
         metadata=tuple((f"x-key-{i}", "v") for i in range(1000)), by_grpc=True),
    Case("protobuf-garbage", lambda: b"\xff\xff\xff\xff\xff garbage", MALFORMED),
    Case("protobuf-random-1mb", lambda: random_bytes(MB, seed=1), MALFORMED),
    Case("protobuf-length-claims-2^62", _huge_varint_length, MALFORMED),
    Case("protobuf-truncated", _truncated_request, MALFORMED),
    Case("protobuf-group-nesting-bomb", _group_bomb, MALFORMED),
    # a field of the wrong wire type is kept as an unknown field: the request has no image
    Case("protobuf-image-as-varint", _wrong_wire_type_for_image, "INVALID_ARGUMENT", r"no image"),
    Case("protobuf-empty-frame", lambda: b"", "INVALID_ARGUMENT", r"no image"),
    Case("protobuf-4mb-unknown-fields", _unknown_fields_flood, "OK", growth_mb=96),
    Case("model-info-garbage", lambda: b"\xff\xff\xff\xff", MALFORMED, method=MODEL_INFO),
    Case("unknown-method", lambda: b"", "UNIMPLEMENTED", method="/detector.v1.Detector/DetectAll"),
    Case("unknown-service", lambda: b"", "UNIMPLEMENTED", method="/detector.v0.Detector/Detect"),
    Case("health-unknown-service", lambda: field(1, 2, varint(10000) + b"x" * 10000), "NOT_FOUND",
         method=HEALTH_CHECK),
]

assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


# ---------------------------------------------------------------------------------------
# HTTP/2 by hand, for frames no gRPC client would send


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def h2_frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_literal(name, value):
    """A header as an HPACK literal without indexing, its strings not Huffman coded."""
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def h2_headers(stream, path=DETECT, extra=()):
    """A HEADERS frame opening a gRPC call on ``stream``."""
    fields = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"),
              ("content-type", "application/grpc"), ("te", "trailers"), *extra]
    return h2_frame(HEADERS, END_HEADERS, stream, b"".join(_hpack_literal(k, v) for k, v in fields))


def h2_data(stream, data, end=True, frame_size=16384):
    """``data`` as DATA frames of at most ``frame_size`` bytes (HTTP/2's default limit)."""
    chunks = [data[i:i + frame_size] for i in range(0, len(data), frame_size)] or [b""]
    return b"".join(h2_frame(DATA, END_STREAM if end and i == len(chunks) - 1 else 0, stream, chunk)
                    for i, chunk in enumerate(chunks))


def grpc_message(payload, flag=0, length=None):
    """gRPC's length-prefixed message: a flag byte, a 4-byte length, the bytes."""
    return bytes([flag]) + struct.pack(">I", len(payload) if length is None else length) + payload


def grpc_status(payload):
    """The grpc-status in a trailers block as grpc's encoder writes small values (an HPACK
    literal, not Huffman coded), or None."""
    at = payload.find(b"grpc-status")
    if at < 0:
        return None
    size = payload[at + 11]
    if size & 0x80 or size > 2:
        return None
    return int(payload[at + 12:at + 12 + size])


class H2Connection:
    """A bare HTTP/2 connection: send frames, read what comes back."""

    def __init__(self, address, timeout=10.0):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buffer, self.frames, self.closed = b"", [], False

    def send(self, data):
        self.sock.sendall(data)

    def start(self):
        self.send(H2_PREFACE + h2_frame(SETTINGS, 0, 0))

    def read_until(self, done, seconds):
        """Read frames, acknowledging the server's SETTINGS, until ``done(frames)``, the
        connection closes or ``seconds`` pass; returns the frames
        [(type, flags, stream, payload), ...]."""
        end = time.monotonic() + seconds
        while not done(self.frames) and not self.closed and time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            self.buffer += data
            while len(self.buffer) >= 9:
                size = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) < 9 + size:
                    break
                kind, flags = self.buffer[3], self.buffer[4]
                stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
                self.frames.append((kind, flags, stream, self.buffer[9:9 + size]))
                self.buffer = self.buffer[9 + size:]
                if kind == SETTINGS and not flags & ACK:
                    try:
                        self.send(h2_frame(SETTINGS, ACK, 0))
                    except OSError:
                        self.closed = True
        return self.frames

    def call_ended(self, stream):
        """The trailers (HEADERS with END_STREAM) or RST_STREAM of ``stream``, if they came."""
        for kind, flags, sid, payload in self.frames:
            if sid == stream and (kind == RST_STREAM or kind == HEADERS and flags & END_STREAM):
                return kind, payload
        return None

    def goaway(self):
        return any(kind == GOAWAY for kind, *_ in self.frames)

    def close(self):
        self.sock.close()


# (name, bytes after the preface and SETTINGS, what the server must do: a grpc-status
# number for call 1, or "GOAWAY" for the connection)
H2_CASES = [
    ("length-prefix-claims-4gb", lambda: h2_headers(1) + h2_frame(DATA, END_STREAM, 1,
                                                                 grpc_message(b"abc", length=2 ** 32 - 1)), (8,)),
    ("length-prefix-over-the-message", lambda: h2_headers(1) + h2_frame(DATA, END_STREAM, 1,
                                                                       grpc_message(b"abc", length=100)), (12, 13, SILENT)),
    ("compressed-flag-without-encoding", lambda: h2_headers(1) + h2_frame(DATA, END_STREAM, 1,
                                                                         grpc_message(b"abc", flag=1)), (13,)),
    ("unknown-grpc-encoding", lambda: h2_headers(1, extra=[("grpc-encoding", "bogus")]) + h2_frame(
        DATA, END_STREAM, 1, grpc_message(b"abc", flag=1)), (12, 13)),
    ("two-messages-in-a-unary-call", lambda: h2_headers(1) + h2_frame(
        DATA, END_STREAM, 1, grpc_message(b"") + grpc_message(b"")), (3, 12, 13)),
    ("no-message-at-all", lambda: h2_headers(1) + h2_frame(DATA, END_STREAM, 1, b""), (12, 13, SILENT)),
    ("settings-window-over-2^31", lambda: h2_frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 2 ** 32 - 1)), "GOAWAY"),
]
