"""The image of a request: size limits checked from the header, before any decoding."""
import struct

import cv2
import numpy as np

# JPEG start-of-frame markers: they carry the size (C4, C8 and CC are other segments)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class BadImage(ValueError):
    """The image cannot be used: INVALID_ARGUMENT."""


class ImageTooLarge(ValueError):
    """The image has more pixels than the server takes: RESOURCE_EXHAUSTED."""


def encoded_size(data):
    """(width, height) from a PNG or JPEG header, without decoding the pixels."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise BadImage("the PNG is truncated or corrupt: no IHDR header")
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise BadImage("the JPEG is corrupt: a segment does not start with a marker")
            marker = data[i + 1]
            if marker == 0xFF:  # padding before a marker
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
                i += 2
                continue
            length = struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in _SOF:
                if i + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[i + 5:i + 9])
                return width, height
            i += 2 + length
        raise BadImage("the JPEG is truncated or corrupt: no frame header with its size")
    raise BadImage("the encoded image is neither PNG nor JPEG")


def _check_pixels(width, height, max_pixels):
    if width == 0 or height == 0:
        raise BadImage(f"the image is empty: {width}x{height} (WxH)")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image has {width}x{height} = {width * height} pixels; "
                            f"this server takes at most {max_pixels}")


def decode(request, max_pixels):
    """The request's image as a uint8 (or float) array, after checking its size."""
    which = request.WhichOneof("image")
    if which is None:
        raise BadImage("the request has no image: set encoded (PNG/JPEG bytes) or raw")
    if which == "encoded":
        data = request.encoded
        if not data:
            raise BadImage("the encoded image is empty (0 bytes)")
        _check_pixels(*encoded_size(data), max_pixels)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise BadImage("the image cannot be decoded: it is truncated or corrupt")
        return image.astype(np.float32) / 65535 if image.dtype == np.uint16 else image
    raw = request.raw
    if raw.channels not in (1, 3, 4):
        raise BadImage(f"a raw image has 1, 3 or 4 channels, got {raw.channels}")
    _check_pixels(raw.width, raw.height, max_pixels)
    expected = raw.height * raw.width * raw.channels
    if len(raw.data) != expected:
        raise BadImage(f"the raw image has {len(raw.data)} bytes but {raw.height}x{raw.width}x"
                       f"{raw.channels} (HxWxC) needs {expected}")
    image = np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.width, raw.channels)
    return image[:, :, 0] if raw.channels == 1 else image
