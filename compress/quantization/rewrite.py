"""Graph rewrites the quantize step applies to the float ONNX model before quantizing it, so that
ONNX Runtime's x86 int8 kernels take their fast paths. Each rewrite keeps the float model's
function exactly (a test checks each one's outputs) and reports what it changed.

- ``pad_conv_channels``: zero input channels for convolutions whose channel count is not a multiple
  of 4 (an RGB stem), whose int8 kernel is 2-3x slower with 3 channels than with 4 here.
- ``channel_pads_as_convs``: a zero ``Pad`` of the channel axis, with the strided ``Slice`` s before
  it (the option-A shortcut of CIFAR ResNets), becomes one 1x1 ``Conv`` with 0/1 weights, which
  ORT runs as an int8 QLinearConv instead of dequantize -> float Pad -> quantize.

``rewrite_for_int8`` loads the model once, applies the rewrites that are on and saves the result
only when one of them changed something. Measurements: docs/results/quantization.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PaddedConv:
    """One convolution whose input channels ``pad_conv_channels`` padded with zeros."""

    conv: str
    pad_node: str
    channels: int
    padded_to: int

    def to_dict(self) -> dict:
        return asdict(self)


def rewrite_for_int8(src: Path, out: Path, *, pad_channels: int = 0,
                     pads_as_convs: bool = False) -> tuple[Path, list[PadAsConv], list[PaddedConv]]:
    """Apply the rewrites that are on to the model at ``src``; returns the model to quantize (``out``
    when something changed, else ``src``) and what each rewrite changed. The channel Pads go first,
    so the 1x1 Convs they become are seen by ``pad_conv_channels`` like any other Conv."""
    import onnx

    if not pads_as_convs and pad_channels < 2:
        return src, [], []
    model = onnx.load(str(src))
    as_convs = channel_pads_as_convs(model) if pads_as_convs else []
    padded = pad_conv_channels(model, pad_channels)
    if not as_convs and not padded:
        return src, [], []
    onnx.save(model, str(out))
    return out, as_convs, padded


def pad_conv_channels(model, multiple: int) -> list[PaddedConv]:
    """Give every ``group=1`` Conv of ``model`` (an onnx ModelProto, changed in place) whose
    input-channel count is not a multiple of ``multiple`` zero input channels up to the next
    multiple: a ``Pad`` on its input and zero slices in its weight. The float model computes exactly
    the same outputs. Why: ONNX Runtime's int8 convolution is about 2-3x slower with 3 input channels
    (an RGB stem) than with 4 on this project's x86 machine (docs/results/quantization.md). Returns
    what changed. The Pad nodes should stay float (exclude them from quantization), so the input is
    padded before it is quantized."""
    from onnx import helper, numpy_helper

    if multiple < 2:
        return []
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    users = Counter(name for n in g.node for name in n.input)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    graph_inputs = {i.name for i in g.input}
    names = _names(g)
    done: list[PaddedConv] = []
    inserts = []  # (index of the Conv, its Pad)
    changed: set[str] = set()
    for index, node in enumerate(g.node):
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w_init = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if w_init is None or group != 1 or node.input[1] in graph_inputs or len(w_init.dims) < 3:
            continue
        c = w_init.dims[1]
        if c % multiple == 0:
            continue
        w = numpy_helper.to_array(w_init)
        target = -(-c // multiple) * multiple
        padded_w = np.zeros((w.shape[0], target, *w.shape[2:]), dtype=w.dtype)
        padded_w[:, :c] = w
        base = node.name or node.output[0]
        pad_name = _unique(f"{base}/pad_channels", names)
        pad_out = _unique(f"{node.input[0]}_padded", names)
        w_name = node.input[1]
        if users[w_name] > 1:  # a shared weight: its other users keep the original
            w_name = _unique(f"{w_name}_padded", names)
            g.initializer.append(numpy_helper.from_array(padded_w, w_name))
        else:
            w_init.CopyFrom(numpy_helper.from_array(padded_w, w_name))
        pads = [0] * (2 * w.ndim)
        pads[w.ndim + 1] = target - c  # end of the channel axis
        if opset >= 11:
            pads_name = _unique(f"{base}/pad_channels_pads", names)
            g.initializer.append(numpy_helper.from_array(np.array(pads, np.int64), pads_name))
            pad = helper.make_node("Pad", [node.input[0], pads_name], [pad_out], name=pad_name, mode="constant")
        else:
            pad = helper.make_node("Pad", [node.input[0]], [pad_out], name=pad_name, mode="constant", pads=pads)
        node.input[0], node.input[1] = pad_out, w_name
        changed.add(w_name)
        inserts.append((index, pad))
        done.append(PaddedConv(base, pad_name, c, target))
    _drop_value_info(g, changed)  # the padded weights' shapes are no longer true
    for index, pad in reversed(inserts):
        g.node.insert(index, pad)
    return done


def _names(graph) -> set[str]:
    """Every node, tensor and initializer name in ``graph``: what a new name must not collide with."""
    return ({n.name for n in graph.node} | {t for n in graph.node for t in n.output}
            | {i.name for i in graph.initializer})


def _drop_value_info(graph, names: set[str]) -> None:
    if names:
        keep = [v for v in graph.value_info if v.name not in names]
        del graph.value_info[:]
        graph.value_info.extend(keep)


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


@dataclass(frozen=True)
class PadAsConv:
    """One channel ``Pad`` (and the strided ``Slice`` nodes folded into it) now run as a 1x1 Conv."""

    pad_node: str
    conv: str
    slices: tuple[str, ...]
    channels: int
    padded_to: int
    stride: tuple[int, int]

    def to_dict(self) -> dict:
        return {**asdict(self), "slices": list(self.slices), "stride": list(self.stride)}


_END = 2**31 - 1  # Slice ends at or past this mean "to the end" (torch exports INT64_MAX)


def channel_pads_as_convs(model) -> list[PadAsConv]:
    """In ``model`` (an onnx ModelProto, changed in place), replace each zero ``Pad`` that pads only
    the channel axis of a 4-D float tensor by a 1x1
    ``Conv`` whose weight copies input channel i to output channel ``before + i`` (zeros elsewhere),
    folding in the ``Slice`` nodes that feed it when they only subsample height and width from 0
    with one step (``x[:, :, ::s, ::s]``: the Conv's stride). In float the Conv computes exactly the
    same tensor; quantized, ONNX Runtime runs it as one QLinearConv in uint8 instead of
    DequantizeLinear -> float Pad -> QuantizeLinear. Needs the pads and the input's channel count
    to be known (run after ``quant_pre_process``, which folds constants and infers shapes); other
    Pads are left as they are. Returns what changed."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    shapes = {v.name: v.type.tensor_type for v in (*g.value_info, *g.input, *g.output)}
    producer = {o: n for n in g.node for o in n.output}
    users = Counter(name for n in g.node for name in n.input) + Counter(o.name for o in g.output)
    names = _names(g)

    def const(name: str):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    done: list[PadAsConv] = []
    removed: set[str] = set()  # outputs of the Slices folded away
    orphans: set[str] = set()  # inputs of the removed nodes: dropped below if nothing else reads them
    for node in list(g.node):
        if node.op_type != "Pad" or len(node.input) < 2 or (len(node.input) > 3 and node.input[3]):
            continue  # pads as an attribute (opset < 11) or with explicit axes (opset 18): left alone
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
        pads = const(node.input[1])
        value = const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        info = shapes.get(node.input[0])
        if mode != "constant" or pads is None or value is None or np.any(value != 0) or len(pads) != 8:
            continue
        if info is None or info.elem_type != onnx.TensorProto.FLOAT or len(info.shape.dim) != 4:
            continue
        before, after = int(pads[1]), int(pads[5])
        if np.any(np.delete(pads, [1, 5]) != 0) or before < 0 or after < 0 or before + after == 0:
            continue
        # walk back over Slices that only subsample H and W: x[:, :, ::s, ::s]
        x, stride, slices = node.input[0], {2: 1, 3: 1}, []
        while x in producer and producer[x].op_type == "Slice" and users[x] == 1:
            steps = _slice_steps(producer[x], const)
            if steps is None or any(stride[a] != 1 for a in steps):
                break
            stride.update(steps)
            slices.append(producer[x])
            x = producer[x].input[0]
        c_dim = info.shape.dim[1]  # the Slices keep the channels
        if not c_dim.HasField("dim_value"):
            continue
        c = c_dim.dim_value
        weight = np.zeros((before + c + after, c, 1, 1), np.float32)
        weight[before + np.arange(c), np.arange(c)] = 1.0
        w_name = _unique(f"{node.name}/as_conv_weight", names)
        g.initializer.append(numpy_helper.from_array(weight, w_name))
        conv_name = _unique(f"{node.name}/as_conv", names)
        conv = helper.make_node("Conv", [x, w_name], [node.output[0]], name=conv_name,
                                kernel_shape=[1, 1], strides=[stride[2], stride[3]])
        index = list(g.node).index(node)
        g.node.insert(index, conv)
        g.node.remove(node)
        orphans.update(node.input[1:])
        for dropped in slices:
            removed.update(dropped.output)
            orphans.update(dropped.input[1:])
            g.node.remove(dropped)
        done.append(PadAsConv(node.name, conv_name, tuple(n.name for n in reversed(slices)), c,
                              before + c + after, (stride[2], stride[3])))
    if done:
        _drop_value_info(g, removed)  # tensors no node produces now
        still_read = {name for n in g.node for name in n.input} | {o.name for o in g.output}
        for init in [i for i in g.initializer if i.name in orphans and i.name not in still_read]:
            g.initializer.remove(init)
    return done


def _slice_steps(node, const) -> dict[int, int] | None:
    """{axis: step} of a Slice that takes H and/or W (axes 2, 3) from 0 to the end with a positive
    step; None for any other Slice."""
    parts = [const(name) if name else None for name in list(node.input[1:]) + [""] * (5 - len(node.input))]
    starts, ends, axes, steps = parts[0], parts[1], parts[2], parts[3]
    if starts is None or ends is None:
        return None
    axes = np.arange(len(starts)) if axes is None else np.where(axes < 0, axes + 4, axes)
    steps = np.ones(len(starts), np.int64) if steps is None else steps
    if not set(axes.tolist()) <= {2, 3} or np.any(starts != 0) or np.any(ends < _END) or np.any(steps < 1):
        return None
    return {int(a): int(s) for a, s in zip(axes, steps, strict=True)}
