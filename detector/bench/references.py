"""The same nets, with our weights, in PyTorch and in ONNX Runtime: the references of
``detector bench fcn`` and ``detector bench train``.

Both libraries are optional and imported only when a reference is built; :func:`missing`
says which are absent, for a note. The product never imports this module.

- :func:`torch_fcn`: a ``torch.nn.Sequential`` of the unrolled net (Conv2d, MaxPool2d,
  ReLU...), float32, in eval mode; :func:`torch_classifier`: the classifier itself, its FC
  layers as ``Linear`` after a ``Flatten``, for training.
- :func:`onnx_fcn`: the unrolled net as an ONNX graph built with ``onnx.helper`` (Conv,
  Relu, MaxPool... with our weights as initializers; N, H and W dynamic), and
  :class:`OnnxRuntimeFcn`, the session that runs it on a given number of threads.

Every reference returns what :meth:`detector.fcn.FullyConvNet.scores` returns for the same
normalised input (1, C, H, W): the raw outputs cropped to the map that sliding windows have
(a pool that leaves rows over lets the full pass score windows past the edge).
"""
import importlib.util

import numpy as np

from ..architecture import Conv, Linear, Pool, Relu
from ..export import layer_nodes

OPSET = 17
# largest |reference - ours| on the raw scores for the two to count as the same computation
TOLERANCE = 1e-3


def missing():
    """{"torch": ..., "onnxruntime": ...}: a note for each reference that is not installed."""
    notes = {}
    if importlib.util.find_spec("torch") is None:
        notes["torch"] = "PyTorch is not installed: its column is skipped (pip install torch)"
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        notes["onnxruntime"] = ("ONNX Runtime is not installed: its column is skipped "
                                "(pip install onnx onnxruntime, or the 'bench' extra)")
    return notes


def versions():
    """The version of each installed reference, by name (None when it is absent)."""
    from importlib import metadata

    found = {}
    for name in ("torch", "onnxruntime"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _torch_pool(layer):
    import torch

    if layer.kind == "max":
        return torch.nn.MaxPool2d(layer.size, layer.stride, layer.padding)
    if layer.kind == "avg":
        return torch.nn.AvgPool2d(layer.size, layer.stride, layer.padding, count_include_pad=True)
    if layer.padding:
        raise ValueError(f"{layer.name}: PyTorch's LPPool2d has no padding")
    return torch.nn.LPPool2d(2, layer.size, layer.stride)


def _torch_layers(layers, params, in_channels):
    """torch modules for our layers, with copies of our parameters (float32)."""
    import torch

    modules, channels = [], in_channels
    for layer in layers:
        if isinstance(layer, Conv):
            w, b = params[f"{layer.name}.w"], params[f"{layer.name}.b"]
            conv = torch.nn.Conv2d(channels, layer.filters, tuple(layer.size), layer.stride, layer.padding)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
                conv.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
            modules.append(conv)
            channels = layer.filters
        elif isinstance(layer, Linear):
            w, b = params[f"{layer.name}.w"], params[f"{layer.name}.b"]
            if not any(isinstance(m, torch.nn.Flatten) for m in modules):
                modules.append(torch.nn.Flatten())
            linear = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
                linear.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
            modules.append(linear)
        elif isinstance(layer, Pool):
            modules.append(_torch_pool(layer))
        elif isinstance(layer, Relu):
            modules.append(torch.nn.ReLU())
        else:
            raise TypeError(f"no PyTorch counterpart for {layer!r}")
    return torch.nn.Sequential(*modules)


def _input_channels(fcn):
    first = next(layer for layer in fcn.layers if isinstance(layer, Conv))
    return fcn.params[f"{first.name}.w"].shape[1]


class TorchFcn:
    """The unrolled net in PyTorch: ``scores(x)`` as :meth:`FullyConvNet.scores` gives them."""

    def __init__(self, fcn):
        import torch

        self.fcn, self.torch = fcn, torch
        self.module = _torch_layers(fcn.layers, fcn.params, _input_channels(fcn)).eval()

    def scores(self, x):
        rows, cols = self.fcn.map_size(*x.shape[2:])
        with self.torch.inference_mode():
            out = self.module(self.torch.from_numpy(x)).numpy()
        return out[:, :, :rows, :cols]


def torch_fcn(fcn):
    """:class:`TorchFcn` of a :class:`detector.fcn.FullyConvNet`."""
    return TorchFcn(fcn)


def torch_classifier(net):
    """The classifier ``net`` (a :class:`detector.Net`) as a ``torch.nn.Sequential`` with a
    copy of its parameters, for training."""
    return _torch_layers(net.layers, net.params, net.channels)


def onnx_fcn(fcn):
    """The unrolled net as an ``onnx.ModelProto``: input "x" (N, C, H, W) float32, output
    "scores" (N, outputs, H', W'), with N, H and W dynamic: the raw pass that
    :meth:`FullyConvNet.scores` computes (the export adds padding, normalisation, softmax)."""
    import onnx
    from onnx import TensorProto, helper

    nodes, initializers, _ = layer_nodes(fcn.layers, fcn.params, "x")
    nodes[-1].output[0] = "scores"
    graph = helper.make_graph(
        nodes, "detector_fcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", _input_channels(fcn), "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", fcn.outputs, "Hout", "Wout"])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="detector")
    model.ir_version = min(model.ir_version, 8)  # readable by older ONNX Runtime releases too
    onnx.checker.check_model(model)
    return model


class OnnxRuntimeFcn:
    """The unrolled net in an ONNX Runtime session on ``threads`` intra-op threads (one
    inter-op thread, sequential execution, every graph optimisation): ``scores(x)`` as
    :meth:`FullyConvNet.scores` gives them."""

    def __init__(self, fcn, threads=1, model=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = model if model is not None else onnx_fcn(fcn)
        self.fcn, self.threads = fcn, threads
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def scores(self, x):
        rows, cols = self.fcn.map_size(*x.shape[2:])
        out = self.session.run(None, {"x": x})[0]
        return out[:, :, :rows, :cols]


def max_difference(ours, theirs):
    """max |ours - theirs|; infinite when the shapes differ."""
    if ours.shape != theirs.shape:
        return float("inf")
    return float(np.abs(ours.astype(np.float64) - theirs).max(initial=0.0))


def check_same(name, ours, theirs, tolerance=TOLERANCE):
    """The largest difference of ``theirs`` from ``ours``; raises when it is above
    ``tolerance`` (the two would not be the same computation, and timing them means nothing)."""
    difference = max_difference(ours, theirs)
    if not difference < tolerance:
        shapes = f"shapes {ours.shape} and {theirs.shape}" if ours.shape != theirs.shape else \
            f"max |difference| {difference:.3g}"
        raise RuntimeError(f"{name} does not compute what our net computes ({shapes}, tolerance {tolerance:g})")
    return difference
