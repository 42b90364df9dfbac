"""Model sources and checkpoints.

- ``torchvision:NAME``: a torchvision architecture, randomly initialised (no download ever).
- ``python:MODULE_OR_FILE.py:FACTORY``: calls FACTORY(**kwargs) from your module or file. This
  RUNS YOUR CODE; it is explicit in the recipe for that reason.
- ``onnx:PATH``: an ONNX file; torch-only steps (prune, finetune) cannot apply to it.
- ``hf:DIR``: a saved Hugging Face text or image classifier, loaded offline
  (``compress.sources.hf``); a directory with a config and no weights gives an untrained model.

Checkpoints are state_dicts loaded with ``torch.load(weights_only=True)``, never pickled modules.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import InputError

MODEL_SCHEMES = {
    "torchvision": "NAME",
    "python": "MODULE_OR_FILE.py:FACTORY",
    "onnx": "PATH",
    "hf": "DIR",
}


def resolve(path: str | Path, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def load_python_object(ref: str, base_dir: Path, what: str) -> Any:
    """``module.sub:NAME`` or ``path/to/file.py:NAME`` -> the object. Runs that module's code."""
    mod_ref, sep, attr = ref.rpartition(":")
    if not sep or not mod_ref or not attr:
        raise InputError(f"{what} 'python:{ref}' must be python:MODULE_OR_FILE.py:NAME")
    if mod_ref.endswith(".py"):
        path = resolve(mod_ref, base_dir)
        if not path.is_file():
            raise InputError(f"{what}: python file {str(path)!r} does not exist")
        name = "compress_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        if name in sys.modules:
            module = sys.modules[name]
        else:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[name]
                raise InputError(f"{what}: importing {path} failed: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(mod_ref)
        except ImportError as err:
            raise InputError(f"{what}: cannot import module {mod_ref!r}: {err}") from err
    if not hasattr(module, attr):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise InputError(f"{what}: {mod_ref} has no {attr!r}; callables there: {', '.join(public[:20])}")
    return getattr(module, attr)


@dataclass
class ModelSpec:
    """How to rebuild the architecture: pruned weights are reloaded into it after resizing."""

    source: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    base_dir: Path = Path(".")

    @property
    def scheme(self) -> str:
        return self.source.partition(":")[0]

    def build(self, saved_config: Path | None = None):
        """The architecture (untrained, or an hf: directory's weights). ``saved_config``: the HF
        config saved with a (pruned) artifact, whose architecture replaces the directory's."""
        scheme, _, ref = self.source.partition(":")
        if scheme == "hf":
            from compress.sources import hf

            return hf.build(resolve(ref, self.base_dir), saved_config=saved_config)
        if scheme == "torchvision":
            import torchvision

            names = torchvision.models.list_models()
            if ref not in names:
                raise InputError(
                    f"model source torchvision:{ref}: no such torchvision model; e.g. "
                    + ", ".join(n for n in names if n.startswith(("resnet", "mobilenet")))
                )
            try:
                return torchvision.models.get_model(ref, weights=None, **self.kwargs)
            except TypeError as err:
                raise InputError(f"model.kwargs do not fit torchvision:{ref}: {err}") from err
        if scheme == "python":
            factory = load_python_object(ref, self.base_dir, "model source")
            try:
                module = factory(**self.kwargs)
            except TypeError as err:
                raise InputError(f"model.kwargs do not fit python:{ref}: {err}") from err
            import torch

            if not isinstance(module, torch.nn.Module):
                raise InputError(
                    f"model source python:{ref} returned {type(module).__name__}, not a torch.nn.Module"
                )
            return module
        raise InputError(f"model source {self.source!r} is not a torch model")


def onnx_path(source: str, base_dir: Path) -> Path:
    """Check that an ``onnx:PATH`` source is a readable ONNX model and return its path."""
    import onnx

    path = resolve(source.partition(":")[2], base_dir)
    if not path.is_file():
        raise InputError(f"model source {source!r}: file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as err:
        raise InputError(
            f"model source {source!r}: {path} is not a valid ONNX model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); export it with torch.onnx.export"
        ) from None
    return path


def read_state_dict(path: Path, key: str | None = None, strip_prefix: str | None = None) -> dict:
    import torch

    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist; check model.checkpoint")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(
            f"checkpoint {path} cannot be loaded safely with torch.load(weights_only=True): "
            f"{str(err).splitlines()[0][:300]}. Save a state_dict (model.state_dict()), not a pickled module"
        ) from None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            keys = list(obj)[:10] if isinstance(obj, dict) else []
            raise InputError(f"checkpoint {path} has no key {key!r}; top-level keys: {keys}")
        obj = obj[key]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        hint = ""
        if isinstance(obj, dict):
            nested = [k for k, v in obj.items() if isinstance(v, dict)]
            if nested:
                hint = f"; it looks nested: set model.checkpoint.key to one of {nested}"
        raise InputError(f"checkpoint {path} is not a state_dict of tensors{hint}")
    if strip_prefix:
        obj = {k.removeprefix(strip_prefix): v for k, v in obj.items()}
    return obj


def load_state_dict_checked(module, state_dict: dict, origin: str) -> None:
    """Load strictly; on mismatch, name the missing, unexpected and wrongly shaped keys.

    Missing and unexpected keys are the ones ``load_state_dict`` reports, so a module that fills in
    its own defaults for keys an older checkpoint lacks (in ``_load_from_state_dict``) loads."""
    own = module.state_dict()
    # Checkpoints from before PyTorch 0.4.1 (e.g. the akamaster CIFAR ResNets) have no batch-norm
    # step counters; they only matter for momentum=None, so the model's own are kept.
    state_dict = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state_dict}
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    missing: list[str] = []
    unexpected: list[str] = []
    if not wrong:
        result = module.load_state_dict(state_dict, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        prefixes = {k.split(".")[0] + "." for k in unexpected}
        hint = ""
        if len(prefixes) == 1 and missing and all(k.split(".", 1)[-1] in own for k in unexpected[:5]):
            hint = f"; the keys carry a prefix: set model.checkpoint.strip_prefix: '{prefixes.pop()}'"
        raise InputError(f"checkpoint {origin} does not fit the model: " + "; ".join(parts) + hint)


def resize_to_state_dict(module, state_dict: dict) -> None:
    """Shrink Conv/Linear/BatchNorm layers to the widths stored in a (pruned) state_dict, put the
    identity where it marks a removed block, shorten the layer lists it records as shortened, and let
    attention modules and Hugging Face configs follow (heads, FFN width, layers), so the weights load
    without pickling any code."""
    import torch
    from torch import nn

    from compress.pruning.channels import is_custom_prunable

    if any(k.endswith(".compress_removed_block") for k in state_dict):
        from compress.pruning.blocks import restore_removed_blocks

        restore_removed_blocks(module, state_dict)
    transformer = any(k.endswith(".compress_kept_layers") for k in state_dict) or "transformers" in sys.modules
    if transformer:
        from compress.pruning.transformers import restore_layer_lists

        restore_layer_lists(module, state_dict)

    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        w = state_dict.get(prefix + "weight")
        if isinstance(m, nn.modules.conv._ConvNd) and w is not None and w.shape != m.weight.shape:
            m.out_channels = w.shape[0]
            m.in_channels = w.shape[1] * m.groups
            m.weight = nn.Parameter(torch.empty_like(w))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0]))
        elif isinstance(m, nn.Linear) and w is not None and w.shape != m.weight.shape:
            m.out_features, m.in_features = w.shape
            m.weight = nn.Parameter(torch.empty_like(w))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0]))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            rm = state_dict.get(prefix + "running_mean")
            if rm is not None and rm.shape[0] != m.num_features:
                n = rm.shape[0]
                m.num_features = n
                if m.affine:
                    m.weight = nn.Parameter(torch.empty(n))
                    m.bias = nn.Parameter(torch.empty(n))
                m.running_mean = torch.zeros(n)
                m.running_var = torch.ones(n)
        elif is_custom_prunable(m):
            # a custom prunable layer (docs/steps/prune.md): its own tensors take the stored shapes
            for key, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
                stored = state_dict.get(prefix + key)
                if stored is not None and stored.shape != t.shape:
                    new = torch.empty_like(stored)
                    setattr(m, key, nn.Parameter(new) if isinstance(t, nn.Parameter) else new)
    if transformer:
        from compress.pruning.transformers import sync_configs

        sync_configs(module)
