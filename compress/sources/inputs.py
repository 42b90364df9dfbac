"""Named model inputs: a batch is a mapping of input name -> array, and a model returns logits.

An image classifier has one input, ``pixel_values`` (float32 NCHW, normalised), the name
transformers uses for vision models; a text model will have several (``input_ids``,
``attention_mask``, ...). The export step names the ONNX inputs after the data's, and a runtime
feeds a batch by name. A model with a single input is fed the single array whatever its input is
called, so an ``onnx:`` file exported elsewhere (input ``input``, ``data``, ...) runs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

PIXEL_VALUES = "pixel_values"
#: a text model's inputs, in the order models take them
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def bind(inputs: Mapping[str, np.ndarray], names: Sequence[str], model: str) -> dict[str, np.ndarray]:
    """The feed for a model whose inputs are ``names``: by name, or the one array to the one input."""
    if not isinstance(inputs, Mapping):
        raise TypeError(f"{model} takes a mapping of named input arrays, got {type(inputs).__name__}")
    if set(inputs) == set(names):
        return {n: inputs[n] for n in names}
    if len(inputs) == 1 and len(names) == 1:
        return {names[0]: next(iter(inputs.values()))}
    raise ValueError(
        f"{model} has inputs {sorted(names)} but the data gives {sorted(inputs)}: the data's "
        "input names must match the model's"
    )


def batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """The number of samples in a batch of named inputs (the first axis, the same for all)."""
    sizes = {len(v) for v in inputs.values()}
    if len(sizes) != 1:
        raise ValueError(f"named inputs have different batch sizes {sorted(sizes)}")
    return sizes.pop()


def take(inputs: Mapping[str, np.ndarray], rows) -> dict[str, np.ndarray]:
    """Rows ``rows`` (a slice or index array) of every named input."""
    return {k: v[rows] for k, v in inputs.items()}


def only_input(inputs: Mapping[str, np.ndarray], model: str) -> np.ndarray:
    """The array of a single-input batch; an error naming the inputs otherwise."""
    if not isinstance(inputs, Mapping):
        raise TypeError(f"{model} takes a mapping of named input arrays, got {type(inputs).__name__}")
    if len(inputs) != 1:
        raise ValueError(f"{model} runs single-input models; the data gives {sorted(inputs)}")
    return next(iter(inputs.values()))


def to_torch(inputs: Mapping[str, np.ndarray], device=None) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) if device is not None
            else torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


def call_module(module, inputs: Mapping):
    """``module(x)`` for a single input (image classifiers take it positionally), else
    ``module(**inputs)`` (transformers models take keywords)."""
    if len(inputs) == 1:
        return module(next(iter(inputs.values())))
    return module(**inputs)


@dataclass(frozen=True)
class InputSpec:
    """The named inputs a model takes, described per sample, with what examples of them look like.

    An image model takes one float32 ``pixel_values`` of ``sample_shape`` (C, H, W). A text model
    takes int64 token tensors (``input_ids``, ``attention_mask``, optional ``token_type_ids``) of
    shape (batch, sequence), both axes dynamic; ``seq_len`` is the length examples use unless told
    (the recipe's ``max_length``) and token ids in random examples stay below ``vocab_size``.
    Everything that needs example inputs (tracing for pruning, export, timing, memory, TensorRT
    profiles) asks this object, never builds arrays from a shape by itself."""

    kind: Literal["image", "text"]
    names: tuple[str, ...]
    sample_shape: tuple[int, ...] = ()
    seq_len: int = 0
    vocab_size: int = 0

    @classmethod
    def image(cls, shape: Sequence[int]) -> InputSpec:
        return cls("image", (PIXEL_VALUES,), tuple(int(d) for d in shape))

    @classmethod
    def text(cls, names: Sequence[str], seq_len: int, vocab_size: int) -> InputSpec:
        unknown = [n for n in names if n not in TEXT_INPUTS]
        if unknown or "input_ids" not in names:
            raise ValueError(f"text inputs are input_ids plus any of {TEXT_INPUTS[1:]}; got {list(names)}")
        ordered = tuple(n for n in TEXT_INPUTS if n in names)  # the order models take them
        return cls("text", ordered, (), int(seq_len), int(vocab_size))

    def shape(self, name: str, batch: int, seq_len: int | None = None) -> tuple[int, ...]:
        """The full shape of input ``name`` for a batch (and, for text, a sequence length)."""
        if self.kind == "image":
            return (batch, *self.sample_shape)
        return (batch, seq_len or self.seq_len)

    def example(self, batch: int = 1, *, fill: str = "zeros", seed: int = 0,
                seq_len: int | None = None) -> dict[str, np.ndarray]:
        """Named example inputs: ``zeros`` (tracing; text gets token id 0 with a full attention
        mask) or ``normal`` (timing: standard normal pixels, uniform token ids below vocab_size)."""
        if fill not in ("zeros", "normal"):
            raise ValueError(f"fill must be 'zeros' or 'normal', got {fill!r}")
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        for name in self.names:
            shape = self.shape(name, batch, seq_len)
            if name == PIXEL_VALUES:
                out[name] = (np.zeros(shape, np.float32) if fill == "zeros"
                             else rng.standard_normal(shape).astype(np.float32))
            elif name == "input_ids":
                out[name] = (np.zeros(shape, np.int64) if fill == "zeros"
                             else rng.integers(0, max(1, self.vocab_size), shape, dtype=np.int64))
            elif name == "attention_mask":
                out[name] = np.ones(shape, np.int64)
            else:  # token_type_ids: one segment
                out[name] = np.zeros(shape, np.int64)
        return out

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes of every input: batch, and for text the sequence too."""
        axes = {0: "batch"} if self.kind == "image" else {0: "batch", 1: "sequence"}
        return {n: dict(axes) for n in self.names}

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``pixel_values 3x32x32``."""
        if self.kind == "image":
            return f"{PIXEL_VALUES} {'x'.join(map(str, self.sample_shape))}"
        return f"{', '.join(self.names)} (up to {self.seq_len} tokens, vocabulary {self.vocab_size})"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "names": list(self.names), "sample_shape": list(self.sample_shape),
                "seq_len": self.seq_len, "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, d: Mapping) -> InputSpec:
        """The spec ``to_dict`` wrote (e.g. passed as JSON to a measuring subprocess)."""
        if d["kind"] == "image":
            return cls.image(d["sample_shape"])
        if d["kind"] == "text":
            return cls.text(d["names"], d["seq_len"], d["vocab_size"])
        raise ValueError(f"an input spec's kind is image or text, got {d['kind']!r}")


def as_input_spec(spec_or_shape) -> InputSpec:
    """An InputSpec as given, or one image sample's shape (e.g. (3, 32, 32)) made into one."""
    return spec_or_shape if isinstance(spec_or_shape, InputSpec) else InputSpec.image(spec_or_shape)


def torch_example(spec_or_shape, batch: int = 1):
    """Zero example inputs as Torch-Pruning takes them (a tensor is passed positionally, a dict as
    keywords): the one tensor of an image model, else a dict of named tensors."""
    x = to_torch(example_inputs(spec_or_shape, batch))
    return next(iter(x.values())) if len(x) == 1 else x


def example_inputs(spec_or_shape, batch: int = 1, *, fill: str = "zeros", seed: int = 0,
                   seq_len: int | None = None) -> dict[str, np.ndarray]:
    """Named example inputs of an InputSpec (or of an image sample's shape): ``InputSpec.example``."""
    return as_input_spec(spec_or_shape).example(batch, fill=fill, seed=seed, seq_len=seq_len)
