"""ONNX export: the model as a graph any ONNX runtime runs (ONNX Runtime, OpenCV's cv2.dnn).

By default the fully convolutional net, with dynamic height and width:

- input ``image``: float32 (N, C, H, W) in [0, 1], C the model's channels (1: gray, 3: BGR);
- output ``scores``: class probabilities (N, classes, H', W'), one vector every ``stride``
  pixels, equal to ``detect(..., scales=[1.0], stride=net stride, return_maps=True)``'s map;
- output ``boxes`` (nets with a box head): the raw box offsets (N, 4, H', W') of
  :mod:`detector.boxes`.

Inside the graph, as :func:`detector.detect.detect` does: the image padded by half a window of
repeated edge pixels, the model's normalisation, the layers, a softmax over the classes.
Window (r, c) of the map covers input pixels from (r, c) * stride - pad.

With ``classifier=True``, the window classifier alone: ``image`` (N, C, window) to
``scores`` (N, classes) (and ``boxes`` (N, 4)), as ``Net.predict`` / ``predict_boxes``.

The model's facts travel in ``metadata_props``, each value JSON: class names, background
class, window, stride, pad, channels, normalisation, object size, box aspects and the source
model's SHA-256. ``onnx`` is an optional dependency (``pip install detector[onnx]``).
"""
import json
import warnings

import numpy as np

from .architecture import Conv, Pool, Relu

OPSET = 13


def _pair(value):
    return tuple(int(v) for v in np.broadcast_to(np.asarray(value), (2,)))


def layer_nodes(layers, params, source):
    """ONNX nodes and initialisers of conv/pool/ReLU ``layers`` (parameters "<layer>.w/b")
    reading tensor ``source``; returns (nodes, initialisers, name of the last output)."""
    from onnx import helper, numpy_helper

    nodes, initializers, name = [], [], source
    for layer in layers:
        out = f"{layer.name}_out"
        if isinstance(layer, Conv):
            w, b = params[f"{layer.name}.w"], params[f"{layer.name}.b"]
            initializers += [numpy_helper.from_array(np.asarray(w, np.float32), f"{layer.name}.w"),
                             numpy_helper.from_array(np.asarray(b, np.float32), f"{layer.name}.b")]
            ph, pw = _pair(layer.padding)
            nodes.append(helper.make_node("Conv", [name, f"{layer.name}.w", f"{layer.name}.b"], [out],
                                          name=layer.name, kernel_shape=list(layer.size),
                                          strides=list(_pair(layer.stride)), pads=[ph, pw, ph, pw]))
        elif isinstance(layer, Pool):
            ph, pw = _pair(layer.padding)
            common = dict(name=layer.name, kernel_shape=list(_pair(layer.size)),
                          strides=list(_pair(layer.stride)), pads=[ph, pw, ph, pw])
            if layer.kind == "max":
                nodes.append(helper.make_node("MaxPool", [name], [out], **common))
            elif layer.kind == "avg":
                nodes.append(helper.make_node("AveragePool", [name], [out], count_include_pad=1, **common))
            else:
                nodes.append(helper.make_node("LpPool", [name], [out], p=2, **common))
        elif isinstance(layer, Relu):
            nodes.append(helper.make_node("Relu", [name], [out], name=layer.name))
        else:
            raise TypeError(f"no ONNX counterpart for {layer!r}")
        name = out
    return nodes, initializers, name


def onnx_model(net, classifier=False, source_sha256=""):
    """The :class:`onnx.ModelProto` of ``net`` (see the module docstring), checked by
    ``onnx.checker``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if classifier:
        with warnings.catch_warnings():  # padding is exact inside a lone window
            warnings.simplefilter("ignore")
            fcn = net.to_fcn(strict=False)
    else:
        try:
            fcn = net.to_fcn()
        except ValueError as error:
            raise ValueError(f"{str(error).split('; pass strict=False')[0]}; export it with --classifier") from None
        _check_map_sizes(net, fcn)
    pad = 0 if classifier else min(net.window) // 2
    c, classes = net.channels, len(net.classes)
    consts = [numpy_helper.from_array(np.asarray(net.normalisation["mean"], np.float32).reshape(1, c, 1, 1), "mean"),
              numpy_helper.from_array(np.asarray(net.normalisation["std"], np.float32).reshape(1, c, 1, 1), "std")]
    nodes = []
    source = "image"
    if pad:
        consts.append(numpy_helper.from_array(np.array([0, 0, pad, pad, 0, 0, pad, pad], np.int64), "pads"))
        nodes.append(helper.make_node("Pad", ["image", "pads"], ["padded"], mode="edge", name="pad"))
        source = "padded"
    nodes += [helper.make_node("Sub", [source, "mean"], ["centred"], name="centre"),
              helper.make_node("Div", ["centred", "std"], ["normalised"], name="scale")]
    body, initializers, raw = layer_nodes(fcn.layers, fcn.params, "normalised")
    nodes += body
    if classifier:  # (N, outputs, 1, 1) to (N, outputs)
        nodes.append(helper.make_node("Flatten", [raw], ["flat"], axis=1, name="flatten"))
        raw = "flat"
    outputs = [("scores", classes)]
    if net.box_regression:
        consts += [numpy_helper.from_array(np.array([classes, net.outputs - classes], np.int64), "split")]
        nodes.append(helper.make_node("Split", [raw, "split"], ["class_scores", "boxes"], axis=1, name="split"))
        raw = "class_scores"
        outputs.append(("boxes", net.outputs - classes))
    nodes.append(helper.make_node("Softmax", [raw], ["scores"], axis=1, name="softmax"))
    window = list(net.window)
    shape_in = ["N", c, *window] if classifier else ["N", c, "H", "W"]
    graph = helper.make_graph(
        nodes, "detector_classifier" if classifier else "detector_fcn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", k] if classifier else ["N", k, "Hout", "Wout"])
         for name, k in outputs],
        consts + initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="detector")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too
    facts = {"classes": net.classes, "background": net.background, "window": window,
             "stride": int(net.total_stride[0]), "pad": pad, "channels": c,
             "normalisation": {k: [float(v) for v in net.normalisation[k]] for k in ("mean", "std")},
             "object_size": net.object_size, "box_aspects": net.box_aspects,
             "box_regression": bool(net.box_regression), "source_sha256": source_sha256,
             "kind": "classifier" if classifier else "fully_convolutional"}
    for key, value in facts.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)  # every value is JSON, strings too
    onnx.checker.check_model(model)
    return model


def _check_map_sizes(net, fcn):
    """Refuse a net whose fully convolutional map holds more windows than fit in the image
    (pools that leave rows over): the FCN crops those, which the graph does not."""
    (wh, ww), stride = fcn.window, fcn.total_stride[0]
    for extra in range(2 * stride * stride):
        shape = (net.channels, wh + extra, ww + extra)
        for layer in fcn.layers:
            shape = layer.shape_after(shape)
        fits = fcn.map_size(wh + extra, ww + extra)
        if tuple(shape[1:]) != fits:
            raise ValueError(f"this net's pools leave rows over: over a {wh + extra}x{ww + extra} image its fully "
                             f"convolutional map is {shape[1]}x{shape[2]} where {fits[0]}x{fits[1]} windows fit, "
                             "which detect crops and the ONNX graph would not; export it with --classifier")
