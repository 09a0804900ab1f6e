"""A small client for programs: ``DetectorClient(address).detect(image)``."""
import grpc
import numpy as np

from detector.report_json import detections_json

from . import detector_pb2 as pb
from . import detector_pb2_grpc

MODES = {"fcn": pb.FCN, "sliding": pb.SLIDING}


class DetectorClient:
    """Calls a detector server. ``image`` may be encoded bytes (PNG/JPEG), a file path, or
    a uint8 array (H, W) or (H, W, C), sent raw.

    >>> with DetectorClient("127.0.0.1:50051") as client:          # doctest: +SKIP
    ...     reply = client.detect("scene.png", mode="fcn")
    ...     [(d.label, d.score) for d in reply.detections]
    """

    def __init__(self, address="127.0.0.1:50051", token=None, root_certificates=None, timeout=None,
                 options=None):
        if root_certificates:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = detector_pb2_grpc.DetectorStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout

    def request(self, image, mode="fcn", return_score_maps=False, **options):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
        request = pb.DetectRequest(mode=MODES[mode], return_score_maps=return_score_maps, **options)
        if isinstance(image, str):
            with open(image, "rb") as f:
                request.encoded = f.read()
        elif isinstance(image, (bytes, bytearray)):
            request.encoded = bytes(image)
        else:
            array = np.ascontiguousarray(image, np.uint8)
            channels = 1 if array.ndim == 2 else array.shape[2]
            request.raw.CopyFrom(pb.RawImage(height=array.shape[0], width=array.shape[1], channels=channels,
                                             data=array.tobytes()))
        return request

    def detect(self, image, mode="fcn", timeout=None, **options):
        """The server's DetectReply (see protos/detector.proto)."""
        return self.stub.Detect(self.request(image, mode, **options), timeout=timeout or self.timeout,
                                metadata=self.metadata)

    def model_info(self, timeout=None):
        return self.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=timeout or self.timeout, metadata=self.metadata)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def score_maps(reply):
    """The reply's score maps as (scale, stride, float32 array (classes, H', W'))."""
    return [(m.scale, m.stride, np.frombuffer(m.data, "<f4").reshape(m.classes, m.height, m.width))
            for m in reply.score_maps]


def reply_to_dict(reply):
    """The reply as JSON-ready data, in the vocabulary of ``detector detect --json`` (see
    :mod:`detector.report_json`), plus ``served_by`` and ``timings_ms.queue_ms``."""
    timings = {f.name: getattr(reply.timings, f.name) for f in pb.Timings.DESCRIPTOR.fields}
    found = (((d.box.x0, d.box.y0, d.box.x1, d.box.y1), d.label, d.score) for d in reply.detections)
    out = detections_json(found, reply.image_width, reply.image_height, reply.truncated, timings)
    out["model"] = {"name": reply.model.name, "checksum": reply.model.checksum}
    out["served_by"] = reply.served_by
    return out
