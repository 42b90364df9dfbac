"""``hf:DIR``: a saved Hugging Face classifier, loaded offline (nothing is ever downloaded).

The directory holds ``config.json`` and, usually, weights (``model.safetensors`` or
``pytorch_model.bin``) and a tokenizer. Text models are built with
``AutoModelForSequenceClassification``, vision models with ``AutoModelForImageClassification``
(chosen by the config's ``architectures``, else its ``model_type``), always with eager attention so
ONNX Runtime's optimizer can fuse Attention. A directory with a config and no weights gives an
untrained model that ``baseline.train`` trains. The module is wrapped (``HFClassifier``) so that
``forward(**inputs)`` returns the logits tensor; its HF ``config`` stays reachable as ``module.config``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

from compress.errors import InputError, MissingDependency

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
#: written next to a saved torch artifact of an HF model: its (possibly pruned) config
SAVED_CONFIG = "hf_config.json"


def require_transformers(purpose: str):
    try:
        import transformers
    except ImportError as err:
        raise MissingDependency("transformers", "transformers", purpose) from err
    return transformers


def check_dir(path: Path, where: str = "model.source") -> Path:
    """The model directory, or an error naming what is missing."""
    if not path.is_dir():
        raise InputError(f"{where}: Hugging Face model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise InputError(
            f"{where}: {path} has no config.json, so it is not a saved Hugging Face model; save one "
            "with model.save_pretrained(DIR) (or config.save_pretrained(DIR) for an untrained model)"
        )
    return path


def has_weights(path: Path) -> bool:
    return any((path / name).is_file() for name in WEIGHT_FILES)


def has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def load_config(path: Path, where: str = "model.source"):
    """The directory's ``PretrainedConfig`` (offline)."""
    transformers = require_transformers("Loading a Hugging Face model (hf:DIR)")
    check_dir(path, where)
    try:
        return transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{where}: {path}/config.json cannot be loaded: {err}") from err


def model_class(config, where: str = "model.source"):
    """The sequence or image classification class for ``config``: the one its ``architectures``
    name when they name one, else the class its ``model_type`` maps to."""
    transformers = require_transformers("Loading a Hugging Face model (hf:DIR)")
    found = [auto._model_mapping[type(config)] for auto in (transformers.AutoModelForSequenceClassification,
             transformers.AutoModelForImageClassification) if type(config) in auto._model_mapping]
    archs = set(getattr(config, "architectures", None) or [])
    named = [c for c in found if c.__name__ in archs]
    if named or found:
        return (named or found)[0]
    raise InputError(
        f"{where}: model_type {config.model_type!r} has no sequence or image classification model "
        "in transformers; compress loads hf: directories as text or image classifiers"
    )


def is_text_model(config) -> bool:
    cls = model_class(config)
    return "input_ids" in inspect.signature(cls.forward).parameters


def forward_input_names(config) -> list[str]:
    """The named inputs the model's forward accepts (e.g. input_ids, attention_mask, token_type_ids)."""
    return list(inspect.signature(model_class(config).forward).parameters)


def wrap(model):
    """``model`` wrapped so that forward returns the logits tensor (``hf_module``)."""
    from compress.sources.hf_module import HFClassifier, HFImageClassifier

    takes_pixels = "pixel_values" in inspect.signature(type(model).forward).parameters
    return (HFImageClassifier if takes_pixels else HFClassifier)(model).eval()


def build(path: Path, *, saved_config: Path | None = None, where: str = "model.source"):
    """The model of ``hf:path``: its weights when there are some, else untrained from its config.
    With ``saved_config`` (a pruned artifact's config), an untrained model of that config (the
    caller loads the artifact's weights into it)."""
    transformers = require_transformers("Loading a Hugging Face model (hf:DIR)")
    if saved_config is not None:
        saved = _full_width_heads(json.loads(saved_config.read_text()))
        config = transformers.AutoConfig.for_model(**_without_type(saved))
        return _from_config(config, where)
    config = load_config(path, where)
    if not has_weights(path):
        return _from_config(config, where)
    cls = model_class(config, where)
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError, RuntimeError) as err:
        raise InputError(f"{where}: the weights in {path} cannot be loaded: {str(err).splitlines()[0][:300]}") from err
    return wrap(model)


def _full_width_heads(d: dict) -> dict:
    """A head-pruned config (``num_attention_heads`` x ``head_dim`` < ``hidden_size``) as one that builds:
    BERT-style attention derives its head size from hidden_size / num_attention_heads (and refuses a
    count that does not divide it), so the model is built with the full width's head count and the
    stored weights narrow it again (``resize_to_state_dict``: the config then says the pruned count)."""
    heads, head_dim, hidden = d.get("num_attention_heads"), d.get("head_dim"), d.get("hidden_size")
    if heads and head_dim and hidden and heads * head_dim < hidden and hidden % head_dim == 0:
        d = {**d, "num_attention_heads": hidden // head_dim}
    return d


def _without_type(d: dict) -> dict:
    return {"model_type": d.pop("model_type"), **d}


def _from_config(config, where: str):
    config._attn_implementation = "eager"
    model = model_class(config, where)._from_config(config, attn_implementation="eager")
    return wrap(model)


def save_config(module, path: Path) -> bool:
    """Write the HF config of ``module`` (if it is an HF model) to ``path``; True when written."""
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "to_json_string"):
        return False
    path.write_text(config.to_json_string(use_diff=False))
    return True


def tokenizer_digest(tokenizer) -> str:
    """A hash of the tokenizer's full definition (vocabulary, normalisation, special tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]
