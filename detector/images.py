"""Encoded images to arrays, their size checked from the header before any pixel is decoded.

One decoder for the CLI, the data loaders and the service, so that each takes the same files
and refuses them with the same messages:
- PNG: the size, depth and colour type sit at fixed places of the IHDR chunk (a bounded read);
  OpenCV decodes.
- JPEG: libjpeg-turbo through ``simplejpeg`` reads the header in C (no Python scan over
  hostile bytes) and decodes strictly: corrupt or missing entropy data, such as a frame
  header claiming more pixels than the data holds, is an error rather than a gray smear.
- BMP, TIFF and WebP: Pillow reads the header (only the plugin the magic bytes name), OpenCV
  decodes.
Every decode is checked against its header: a decoded size that differs is refused.
Images are returned as they are stored: gray (H, W), BGR or BGRA, uint8; 16-bit images
become float32 in [0, 1]. The EXIF orientation is not applied (OpenCV's ``IMREAD_UNCHANGED``).
"""
import io
import os
import struct
from dataclasses import dataclass

import cv2
import numpy as np

# 50 megapixels: a 7071x7071 photograph, 150 MB as 8-bit BGR
MAX_PIXELS = 50_000_000

_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}  # colour type -> channels cv2 gives (gray+alpha -> BGRA)
_PILLOW_FORMATS = ((b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


class BadImage(ValueError):
    """The bytes are not an image this project reads, or the image is corrupt."""


class ImageTooLarge(ValueError):
    """The image has more pixels than allowed."""


@dataclass(frozen=True)
class Header:
    format: str  # "PNG", "JPEG", "BMP", "TIFF" or "WEBP"
    width: int
    height: int
    channels: int  # of the decoded array: 1, 3 or 4
    sample_bytes: int = 1  # 2 for 16-bit images

    @property
    def pixels(self):
        return self.width * self.height

    @property
    def decoded_bytes(self):
        return self.pixels * self.channels * self.sample_bytes


def read_header(data):
    """The :class:`Header` of encoded bytes, read without decoding the pixels."""
    data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if len(data) == 0:
        raise BadImage("the encoded image is empty (0 bytes)")
    head = bytes(data[:32])
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        if len(head) < 26 or head[12:16] != b"IHDR":
            raise BadImage("the PNG is truncated or corrupt: no IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        depth, colour = head[24], head[25]
        if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
            raise BadImage(f"the PNG header is corrupt: bit depth {depth}, colour type {colour}")
        return Header("PNG", width, height, _PNG_CHANNELS[colour], 2 if depth == 16 else 1)
    if head[:2] == b"\xff\xd8":
        return _jpeg_header(data)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _pillow_header(data, "WEBP")
    for magic, name in _PILLOW_FORMATS:
        if head.startswith(magic):
            return _pillow_header(data, name)
    raise BadImage("the bytes are not a PNG, JPEG, BMP, TIFF or WebP image")


def _jpeg_header(data):
    import simplejpeg

    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(data, strict=True)
    except ValueError as error:
        raise BadImage(f"the JPEG header is truncated or corrupt: {_first_line(error)}") from None
    if colourspace not in ("Gray", "YCbCr", "RGB"):
        raise BadImage(f"{colourspace} JPEGs are not supported: save it as RGB or gray")
    return Header("JPEG", width, height, 1 if colourspace == "Gray" else 3)


def _pillow_header(data, name):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=[name]) as image:
            width, height, bands, mode = *image.size, len(image.getbands()), image.mode
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"the {name} header claims too many pixels: {_first_line(error)}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as error:
        raise BadImage(f"the {name} header is truncated or corrupt: {_first_line(error)}") from None
    # Pillow calls a 16-bit colour TIFF "RGB", which OpenCV decodes as uint16: count 2 bytes
    sample_bytes = 2 if mode.startswith("I;16") or mode in ("I", "F") or name == "TIFF" else 1
    channels = 3 if mode == "P" else 1 if bands == 1 else 4 if bands in (2, 4) else 3
    return Header(name, width, height, channels, sample_bytes)


def _first_line(error, limit=200):
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:limit]


def check_pixels(width, height, max_pixels=MAX_PIXELS):
    """Refuse an empty image (:class:`BadImage`) or one over ``max_pixels`` (:class:`ImageTooLarge`)."""
    if width == 0 or height == 0:
        raise BadImage(f"the image is empty: {width}x{height} (WxH)")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image has {width}x{height} = {width * height:,} pixels; "
                            f"at most {max_pixels:,} are allowed")


def decode(data, max_pixels=MAX_PIXELS, header=None):
    """The image in ``data`` (see the module docstring), after checking its header against
    ``max_pixels``. ``header`` skips reading it again when the caller already has it."""
    header = header or read_header(data)
    check_pixels(header.width, header.height, max_pixels)
    if header.format == "JPEG":
        import simplejpeg

        try:
            image = simplejpeg.decode_jpeg(data, "GRAY" if header.channels == 1 else "BGR", strict=True)
        except ValueError as error:
            raise BadImage(f"the JPEG cannot be decoded: {_first_line(error)}") from None
        image = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    else:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise BadImage(f"the {header.format} cannot be decoded: it is truncated or corrupt")
    if image.shape[:2] != (header.height, header.width):
        raise BadImage(f"the {header.format} decodes to {image.shape[1]}x{image.shape[0]} pixels but its "
                       f"header says {header.width}x{header.height} (WxH): it is corrupt")
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535
    if image.dtype != np.uint8:
        raise BadImage(f"the {header.format} holds {image.dtype} pixels: use 8- or 16-bit images")
    return image


def read(path, max_pixels=MAX_PIXELS):
    """:func:`decode` of the file at ``path``; errors name the path."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ValueError(f"cannot read an image from {path}: {error.strerror or error}") from None
    try:
        return decode(data, max_pixels)
    except ValueError as error:
        raise type(error)(f"{path}: {error}") from None
