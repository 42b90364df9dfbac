"""Named model inputs: a batch is a mapping of input name -> array, and a model returns logits.

An image classifier has one input, ``pixel_values`` (float32 NCHW, normalised), the name
transformers uses for vision models; a text model will have several (``input_ids``,
``attention_mask``, ...). The export step names the ONNX inputs after the data's, and a runtime
feeds a batch by name. A model with a single input is fed the single array whatever its input is
called, so an ``onnx:`` file exported elsewhere (input ``input``, ``data``, ...) runs unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PIXEL_VALUES = "pixel_values"


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


def torch_example(input_shape: Sequence[int], batch: int = 1):
    """Zero example inputs as Torch-Pruning takes them (a tensor is passed positionally, a dict as
    keywords): the one tensor of an image model, else a dict of named tensors."""
    x = to_torch(example_inputs(input_shape, batch))
    return next(iter(x.values())) if len(x) == 1 else x


def example_inputs(input_shape: Sequence[int], batch: int = 1, *, fill: str = "zeros",
                   seed: int = 0) -> dict[str, np.ndarray]:
    """Named inputs of one image model's shape: zeros (tracing) or standard normal (timing)."""
    shape = (batch, *input_shape)
    if fill == "zeros":
        return {PIXEL_VALUES: np.zeros(shape, np.float32)}
    return {PIXEL_VALUES: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
