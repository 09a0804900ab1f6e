"""Encoded images: the header read before decoding, strict decoding, one set of messages."""
import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from detector import images
from detector.images import BadImage, ImageTooLarge, decode, read, read_header

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (48, 64), dtype=np.uint8)
COLOUR = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
BGRA = RNG.integers(0, 256, (48, 64, 4), dtype=np.uint8)


def encoded(image, ext, *params):
    return cv2.imencode(ext, image, list(params))[1].tobytes()


def pillow(image, fmt, mode=None):
    out = io.BytesIO()
    Image.fromarray(image, mode).save(out, fmt)
    return out.getvalue()


CASES = [  # bytes, format, the array OpenCV decodes them to (lossless ones exactly)
    (encoded(GRAY, ".png"), "PNG", GRAY),
    (encoded(COLOUR, ".png"), "PNG", COLOUR),
    (encoded(BGRA, ".png"), "PNG", BGRA),
    (encoded(GRAY, ".bmp"), "BMP", None),
    (encoded(COLOUR, ".bmp"), "BMP", COLOUR),
    (encoded(COLOUR, ".tiff"), "TIFF", COLOUR),
    (encoded(COLOUR, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101), "WEBP", COLOUR),
    (encoded(GRAY, ".jpg"), "JPEG", None),
    (encoded(COLOUR, ".jpg"), "JPEG", None),
    (encoded(COLOUR, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "JPEG", None),
]


@pytest.mark.parametrize("data, fmt, exact", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_the_header_tells_the_size_and_the_decoder_agrees_with_opencv(data, fmt, exact):
    header = read_header(data)
    assert (header.format, header.width, header.height) == (fmt, 64, 48)
    image = decode(data)
    reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == reference.shape and image.dtype == np.uint8
    assert header.channels == (image.shape[2] if image.ndim == 3 else 1)
    # the JPEGs go through libjpeg-turbo in both: the same pixels, give or take rounding
    assert np.abs(image.astype(int) - reference).max() <= (0 if fmt != "JPEG" else 1)
    if exact is not None:
        np.testing.assert_array_equal(image, exact)


def test_16_bit_images_become_float_in_0_1():
    deep = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    data = encoded(deep, ".png")
    assert read_header(data).sample_bytes == 2
    image = decode(data)
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, deep / 65535, atol=1e-6)


def png_claiming(width, height, body=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + body


def jpeg_claiming(width, height, image=COLOUR):
    """A JPEG of ``image`` whose frame header is rewritten to claim width x height."""
    data = bytearray(encoded(image, ".jpg"))
    i = 2
    while data[i + 1] not in (0xC0, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def cmyk_jpeg():
    out = io.BytesIO()
    Image.new("CMYK", (40, 30), (10, 20, 30, 40)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize("data, error, words", [
    (b"", BadImage, "empty"),
    (b"GIF89a" + b"\x00" * 40, BadImage, "not a PNG, JPEG, BMP, TIFF or WebP"),
    (png_claiming(100_000, 100_000), ImageTooLarge, r"100000x100000 = 10,000,000,000 pixels"),
    (png_claiming(0, 10), BadImage, "empty: 0x10"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", BadImage, "no IHDR"),
    (encoded(GRAY, ".png")[:70], BadImage, "PNG cannot be decoded"),
    (encoded(COLOUR, ".jpg")[:300], BadImage, "JPEG header is truncated or corrupt"),
    (encoded(COLOUR, ".jpg")[:3000], BadImage, "JPEG cannot be decoded: Premature end"),
    (jpeg_claiming(1000, 1000), BadImage, "JPEG cannot be decoded: Corrupt JPEG data"),
    (b"\xff\xd8" + b"\xff" * 15_000_000, BadImage, "JPEG header is truncated or corrupt"),
    (cmyk_jpeg(), BadImage, "CMYK JPEGs are not supported"),
    (b"BM" + b"\x00" * 60, BadImage, "BMP header is truncated or corrupt"),
])
def test_bad_bytes_get_a_clear_short_error(data, error, words):
    start = time.perf_counter()
    with pytest.raises(error, match=words) as raised:
        decode(data, max_pixels=50_000_000)
    assert len(str(raised.value)) < 300  # never an echo of the input
    assert time.perf_counter() - start < 5  # the 15 MB of 0xFF: scanned in C, not byte by byte in Python


def test_the_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch):
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded an image over the limit"))
    with pytest.raises(ImageTooLarge, match="64x48 = 3,072 pixels; at most 3,000"):
        decode(encoded(GRAY, ".png"), max_pixels=3000)


def test_read_names_the_file(tmp_path):
    path = tmp_path / "scene.jpg"
    path.write_bytes(jpeg_claiming(1000, 1000))
    with pytest.raises(BadImage, match=f"^{path}: the JPEG cannot be decoded"):
        read(path)
    with pytest.raises(ValueError, match="cannot read an image from .*missing.png"):
        read(tmp_path / "missing.png")
    good = tmp_path / "good.png"
    good.write_bytes(encoded(COLOUR, ".png"))
    np.testing.assert_array_equal(read(good), COLOUR)
    assert images.MAX_PIXELS == 50_000_000


def test_a_bmp_header_past_pillows_bomb_limit_is_too_large_not_a_crash():
    header = (b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 20000, 20000, 1, 24, 0, 0, 0,
                                                                      0, 0, 0))
    with pytest.raises(ImageTooLarge, match="BMP header claims too many pixels"):
        decode(header)
