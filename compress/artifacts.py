"""Artifacts (a model at one point of a variant's chain) and the content-hash cache.

An artifact's ``digest`` hashes everything that made it: the baseline, each step's name and
config, the seed, the data it may consume, what the step declares (``cache_key``, e.g. the GPU a
TensorRT engine is built for) and compress's own code (``code_digest``). It is computed in one place,
``compress.run.build.step_key``. Two variants that share steps (``from:``) or a re-run of the same
recipe find the artifact in the cache instead of rebuilding it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILENAMES = {"torch": "model.pt", "onnx": "model.onnx", "openvino": "model.xml", "tensorrt": "engine.plan"}

#: meta keys that are the run's bookkeeping, not facts about the model: results.json records them
#: elsewhere (consumed_splits, steps[].seconds/machine, baseline.info.train) or not at all
BOOKKEEPING_META = frozenset({"consumed", "step_seconds", "step_machine", "cached", "extra_files", "train"})


def digest_of(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


@functools.cache
def code_digest() -> str:
    """Hash of compress's own source files. It is part of every cache key, so an artifact built by
    other code (an upgrade, or a local edit of a step) is rebuilt rather than silently reused."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


@dataclass
class Artifact:
    kind: str  # torch | onnx | openvino | tensorrt
    digest: str = ""  # the cache key; set by compress.run.build (steps never compute one)
    path: Path | None = None
    module: Any = None  # the nn.Module, for kind == "torch"
    model_spec: Any = None  # how to rebuild a torch architecture when reloading from disk
    lineage: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """What the steps that made this artifact recorded about it (every step copies its input's
        meta, so the whole chain's facts are here): results.json's ``artifact.facts``."""
        return {k: v for k, v in self.meta.items() if k not in BOOKKEEPING_META}

    def load_module(self):
        """A fresh copy of the torch module (callers may move or modify it)."""
        if self.kind != "torch":
            raise TypeError(f"a {self.kind} artifact has no torch module")
        if self.module is not None:
            return copy.deepcopy(self.module)
        return load_torch(self.path, self.model_spec)

    @property
    def size_bytes(self) -> int | None:
        if (self.path is None or not self.path.exists()) and self.module is not None:
            # an in-memory torch model: the bytes of its state_dict, as model.pt would hold them
            return sum(t.numel() * t.element_size() for t in self.module.state_dict().values())
        if self.path is None or not self.path.exists():
            return None
        # the files a deployment needs: model.onnx (+ .data), model.xml + model.bin, engine.plan
        needed = [self.path, self.path.with_name(self.path.name + ".data"), self.path.with_suffix(".bin")]
        return sum(p.stat().st_size for p in dict.fromkeys(needed) if p.exists())

    def files(self) -> list[Path]:
        if self.path is None:
            return []
        out = [self.path]
        extras = [self.path.name + ".data", self.path.stem + ".bin", *self.meta.get("extra_files", [])]
        if self.kind == "torch":
            from compress.sources.hf import SAVED_CONFIG

            extras.append(SAVED_CONFIG)
        for extra in extras:
            p = self.path.with_name(extra)
            if p.exists() and p not in out:
                out.append(p)
        return out


def save_torch(module, path: Path) -> None:
    """Save a state_dict: it reloads with weights_only=True, pruned widths included. A Hugging Face
    model's config (heads, layers and widths after pruning) is saved beside it (``hf_config.json``)."""
    import torch

    from compress.sources.hf import SAVED_CONFIG, save_config

    torch.save(module.state_dict(), path)
    save_config(module, path.with_name(SAVED_CONFIG))


def load_torch(path: Path, model_spec):
    from compress.sources.hf import SAVED_CONFIG
    from compress.sources.models import (
        load_state_dict_checked,
        read_state_dict,
        resize_to_state_dict,
    )

    sd = read_state_dict(Path(path))
    saved_config = Path(path).with_name(SAVED_CONFIG)
    module = model_spec.build(saved_config) if saved_config.is_file() else model_spec.build()
    resize_to_state_dict(module, sd)
    load_state_dict_checked(module, sd, str(path))
    return module.eval()


def atomic_dir(final: Path):
    """A temporary sibling directory that the caller renames onto ``final`` when complete."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))


class Cache:
    """Artifacts by digest under ``root``; entries are written to a temp dir and renamed, and a
    complete entry is never removed or rewritten, so workers that share ``root`` (a Ray cluster's
    shared filesystem) never see half an artifact."""

    def __init__(self, root: Path | None):
        self.root = root

    def _entry(self, digest: str) -> Path | None:
        return None if self.root is None else self.root / digest

    def get(self, digest: str, model_spec=None) -> Artifact | None:
        entry = self._entry(digest)
        if entry is None or not (entry / "artifact.json").is_file():
            return None
        info = json.loads((entry / "artifact.json").read_text())
        art = Artifact(
            kind=info["kind"], digest=digest, path=entry / info["file"], model_spec=model_spec,
            lineage=info["lineage"], meta=info["meta"],
        )
        if art.kind == "torch":
            art.module = load_torch(art.path, model_spec)
        art.meta["cached"] = True
        return art

    def put(self, art: Artifact) -> Artifact:
        """Store ``art`` (its files move into the cache) and return it pointing there."""
        if not art.digest:
            raise ValueError("an artifact is cached under its key: set art.digest (compress.run.build.step_key)")
        entry = self._entry(art.digest)
        if entry is None:
            return art
        if entry.exists() and not (entry / "artifact.json").is_file():  # damaged by hand: replace it
            shutil.rmtree(entry)
        tmp = atomic_dir(entry)
        try:
            if art.kind == "torch" and art.path is None:
                name = FILENAMES["torch"]
                save_torch(art.module, tmp / name)
            else:
                name = art.path.name
                for f in art.files():
                    shutil.copy2(f, tmp / f.name)
            info = {"kind": art.kind, "file": name, "lineage": art.lineage,
                    "meta": {k: v for k, v in art.meta.items() if k != "cached"}}
            (tmp / "artifact.json").write_text(json.dumps(info, indent=2, default=str))
            try:
                os.replace(tmp, entry)
            except OSError:
                if not (entry / "artifact.json").is_file():
                    raise
                # another worker stored the same digest first (a store shared by Ray workers):
                # its complete entry stays, so no reader ever sees it half-written or removed
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:  # a failed write, Ctrl-C or SIGTERM: no temp directory left in the cache
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        art.path = entry / name
        return art
