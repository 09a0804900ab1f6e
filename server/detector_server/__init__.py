"""The gRPC detection service (package detector.v1): a thin shell over detector.detect.

Installed as ``detector_server``. Run it with ``detector serve``; call it with
``detector client`` or :class:`DetectorClient`.
"""
from .app import RunningServer, serve, start_server
from .client import DetectorClient, reply_to_dict, score_maps

__all__ = ["DetectorClient", "RunningServer", "reply_to_dict", "score_maps", "serve", "start_server"]
