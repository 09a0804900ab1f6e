"""The image of a request, its size known from the header or the raw fields before decoding."""
import numpy as np

from detector.images import BadImage, ImageTooLarge, check_pixels, decode, read_header

__all__ = ["BadImage", "ImageTooLarge", "RequestImage"]


class RequestImage:
    """The image of a request: ``shape`` (H, W, C) and ``sample_bytes`` before decoding,
    then :meth:`decode`."""

    def __init__(self, request, max_pixels):
        self.request, self.max_pixels = request, max_pixels
        which = request.WhichOneof("image")
        if which is None:
            raise BadImage("the request has no image: set encoded (PNG/JPEG bytes) or raw")
        if which == "encoded":
            self.header = read_header(request.encoded)
            h = self.header
            self.shape, self.sample_bytes = (h.height, h.width, h.channels), h.sample_bytes
        else:
            self.header = None
            raw = request.raw
            if raw.channels not in (1, 3, 4):
                raise BadImage(f"a raw image has 1, 3 or 4 channels, got {raw.channels}")
            check_pixels(raw.width, raw.height, max_pixels)
            expected = raw.height * raw.width * raw.channels
            if len(raw.data) != expected:
                raise BadImage(f"the raw image has {len(raw.data):,} bytes but {raw.height}x{raw.width}x"
                               f"{raw.channels} (HxWxC) needs {expected:,}")
            self.shape, self.sample_bytes = (raw.height, raw.width, raw.channels), 1
        check_pixels(self.shape[1], self.shape[0], max_pixels)

    def decode(self):
        """The pixels: uint8 (H, W) or (H, W, C), or float32 for 16-bit images."""
        if self.header is not None:
            return decode(self.request.encoded, self.max_pixels, self.header)
        raw = self.request.raw
        image = np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.width, raw.channels)
        return image[:, :, 0] if raw.channels == 1 else image

