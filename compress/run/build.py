"""Build the baseline and every variant's artifact chain, through the content-hash cache."""

from __future__ import annotations

import functools
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from compress.artifacts import Artifact, Cache, code_digest, digest_of, file_digest
from compress.errors import CompressError, InputError, StepError
from compress.sources.inputs import InputSpec
from compress.sources.models import (
    ModelSpec,
    load_state_dict_checked,
    onnx_path,
    read_state_dict,
    resolve,
)
from compress.steps.base import STEPS, StepContext


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """The machine a step ran on, in one line (CPU model, cores, GPUs), for its compression cost."""
    from compress.run.environment import cpu_info, gpu_info

    cpu = cpu_info()
    text = f"{cpu.get('model', cpu.get('machine', '?'))}, {cpu.get('logical_cores')} logical cores"
    gpus = [g.get("name", "?") for g in gpu_info()]
    return text + (f", {', '.join(gpus)}" if gpus else ", no GPU")


@dataclass
class Built:
    """One variant's outcome: its final artifact, or the error that stopped it."""

    name: str
    artifact: Artifact | None = None
    error: str | None = None
    steps: list[dict] = field(default_factory=list)  # {step, seconds, cached}
    consumed: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.artifact is not None


def input_spec_for(recipe, splits) -> InputSpec:
    """The model's inputs: a text split's own spec (token names, max_length, vocabulary), else one
    ``pixel_values`` of ``model.input_shape``, checked against the data's image samples."""
    heldout = splits["heldout"]
    spec = getattr(heldout, "input_spec", None)
    if spec is not None and spec.kind == "text":
        return spec
    shape = recipe.model.input_shape
    if shape is None:
        raise InputError("model.input_shape is required for image data, e.g. [3, 32, 32]")
    sample_shape = tuple(spec.sample_shape if spec is not None else heldout.sample_shape)
    if tuple(shape) != sample_shape:
        raise InputError(
            f"model.input_shape {list(shape)} does not match the data's samples "
            f"{list(sample_shape)}; fix input_shape or data.transform (resize/channels)"
        )
    return InputSpec.image(shape)


def build_baseline(recipe, base_dir: Path, splits, cache: Cache, progress=None, log=print) -> tuple[Artifact, dict]:
    """The uncompressed model: an ONNX file, a checkpoint, or (no checkpoint) trained on train."""
    mcfg = recipe.model
    info: dict = {"source": mcfg.source}
    input_spec = input_spec_for(recipe, splits)
    if mcfg.source.startswith("onnx:"):
        path = onnx_path(mcfg.source, base_dir)
        info["trained"] = False
        return Artifact(kind="onnx", digest=file_digest(path), path=path, lineage=["baseline(onnx)"]), info
    spec = ModelSpec(mcfg.source, dict(mcfg.kwargs), base_dir)
    pretrained = _pretrained_digest(spec)  # an hf: directory's weights, else None
    ck = mcfg.checkpoint_config
    if ck is not None:
        path = resolve(ck.path, base_dir)
        module = _checked_labels(spec.build(), splits)
        load_state_dict_checked(module, read_state_dict(path, ck.key, ck.strip_prefix), str(path))
        digest = digest_of(mcfg.source, mcfg.kwargs, file_digest(path), ck.key, ck.strip_prefix)
        info.update(checkpoint=str(path), trained=False)
        art = Artifact(kind="torch", digest=digest, module=module.eval(), model_spec=spec,
                       lineage=["baseline(checkpoint)"])
    elif pretrained is not None and recipe.baseline.train is None:
        module = _checked_labels(spec.build(), splits)
        info["trained"] = False
        art = Artifact(kind="torch", digest=digest_of(mcfg.source, pretrained), module=module.eval(),
                       model_spec=spec, lineage=["baseline(pretrained)"])
    else:
        tcfg = recipe.baseline.train
        if tcfg is None:
            what = "its hf: directory has no weights" if spec.scheme == "hf" else "the model has no checkpoint"
            raise InputError(
                f"{what} and baseline.train is not set: give model.checkpoint, "
                "or add `baseline: {train: {epochs: 4}}` to train one on the train split"
            )
        if "train" not in splits:
            raise InputError("baseline.train needs a train split (data.split.train > 0)")
        digest = digest_of(mcfg.source, mcfg.kwargs, tcfg.model_dump(), recipe.seed, splits["train"].fingerprint(),
                           code_digest(), *([pretrained] if pretrained is not None else []))
        art = cache.get(digest, spec)
        if art is not None:
            log("baseline: trained model found in the cache")
            info.update(trained=True, cached=True, train=art.meta.get("train"))
        else:
            import torch

            from compress.training import train

            torch.manual_seed(recipe.seed)
            module = _checked_labels(spec.build(), splits)
            history = train(
                module, splits["train"], epochs=tcfg.epochs, lr=tcfg.lr, batch_size=tcfg.batch_size,
                momentum=tcfg.momentum, weight_decay=tcfg.weight_decay, seed=recipe.seed,
                optimizer=tcfg.optimizer, warmup=tcfg.warmup, max_grad_norm=tcfg.max_grad_norm,
                progress=progress, description="training baseline",
            )
            art = Artifact(kind="torch", digest=digest, module=module.eval(), model_spec=spec,
                           lineage=["baseline(trained)"], meta={"train": history})
            art = cache.put(art)
            info.update(trained=True, cached=False, train=history)
    from compress.steps.prune import count_macs_params

    art.meta["macs"], art.meta["params"] = count_macs_params(art.module, input_spec)
    return art, info


def _pretrained_digest(spec: ModelSpec) -> str | None:
    """A hash of an hf: directory that holds weights (None for other sources or a config alone)."""
    if spec.scheme != "hf":
        return None
    from compress.sources import hf

    path = hf.check_dir(resolve(spec.source.partition(":")[2], spec.base_dir))
    if not hf.has_weights(path):
        return None
    return digest_of(*[(p.name, file_digest(p)) for p in sorted(path.iterdir()) if p.is_file()])


def _checked_labels(module, splits):
    """A Hugging Face model must have as many labels as the data has classes."""
    config = getattr(module, "config", None)
    n = getattr(config, "num_labels", None)
    if n is not None and n != splits.num_classes:
        raise InputError(
            f"model.source: the model has num_labels={n} but the data has {splits.num_classes} classes "
            f"({', '.join(splits.classes[:10])}): set num_labels (and id2label) in the model's config.json "
            "to the data's classes, or check data.text.label_column"
        )
    return module


def step_key(art: Artifact, spec, cfg, ctx: StepContext, data_fp: dict) -> str:
    """The one cache key of a step's output: its input, the step and its config, the seed, the data
    a step may consume, what the step declares (``StepSpec.cache_key``, e.g. a TensorRT engine's
    GPU fingerprint) and compress's code. Steps never compute a digest of their own."""
    declared = spec.cache_key(cfg, ctx) if spec.cache_key is not None else None
    return digest_of(art.digest, spec.name, cfg.model_dump(), ctx.seed, data_fp, declared, code_digest())


def data_fingerprints(splits) -> dict[str, str]:
    """The fingerprints of the splits a step may consume: the data part of every step's cache key.
    Held-out and the unlabelled production sample never reach a step, so they do not key the cache."""
    return {r: s.fingerprint() for r, s in splits.items() if r not in ("heldout", "production")}


def build_variants(recipe, baseline: Artifact, splits, cache: Cache, workroot: Path,
                   progress=None, log=print) -> dict[str, Built]:
    """Apply every variant's steps; a failure stops that variant (and its children) only."""
    data_fp = data_fingerprints(splits)
    results: dict[str, Built] = {}
    for name in recipe.variant_order():
        v = recipe.variants[name]
        parent = results[v.from_] if v.from_ is not None else None
        results[name] = build_variant(recipe, name, parent, baseline, splits, cache, data_fp,
                                      workroot, progress, log)
    return results


def build_variant(recipe, name: str, parent: Built | None, baseline: Artifact, splits, cache: Cache,
                  data_fp: dict[str, str], workroot: Path, progress=None, log=print) -> Built:
    """One variant's steps, from its built ``from:`` parent (None: from the baseline)."""
    v = recipe.variants[name]
    built = Built(name)
    if parent is not None:
        if not parent.ok:
            built.error = f"not built: the variant it starts from ({v.from_}) failed"
            return built
        art = parent.artifact
        built.steps = [dict(s, inherited=True) for s in parent.steps]
        built.consumed |= parent.consumed
    else:
        art = baseline
    input_spec = input_spec_for(recipe, splits)
    for i, (step_name, cfg) in enumerate(v.step_list()):
        spec = STEPS.get(step_name)
        workdir = workroot / name / f"{i}-{step_name}"
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = StepContext(
            splits=splits, model_spec=art.model_spec, input_spec=input_spec,
            seed=recipe.seed, workdir=workdir, baseline=baseline, progress=progress, log=log,
            targets=list(recipe.targets),
        )
        try:
            key = step_key(art, spec, cfg, ctx, data_fp)
        except CompressError as err:  # e.g. the engine step on a machine without a GPU
            built.error = f"step {i} ({step_name}): {err}"
            break
        except Exception as err:  # a library raised while fingerprinting: this variant only
            tb = traceback.format_exception_only(type(err), err)[-1].strip()
            built.error = f"step {i} ({step_name}) cache key failed unexpectedly: {tb}"
            break
        t0 = time.perf_counter()
        cached = cache.get(key, art.model_spec)
        if cached is not None:
            nxt = cached
            nxt.model_spec = art.model_spec
            ctx.consumed.update(cached.meta.get("consumed", []))
        else:
            log(f"{name}: {step_name} ...")
            try:
                nxt = spec.apply(art, cfg, ctx)
            except CompressError as err:
                built.error = f"step {i} ({step_name}): {err}"
                break
            except Exception as err:  # a library raised: report it, keep the other variants going
                tb = traceback.format_exception_only(type(err), err)[-1].strip()
                built.error = f"step {i} ({step_name}) failed unexpectedly: {tb}"
                break
            nxt.digest = key
            nxt.model_spec = art.model_spec
            nxt.meta["consumed"] = sorted(ctx.consumed)
            nxt.meta["step_seconds"] = time.perf_counter() - t0
            nxt.meta["step_machine"] = _machine()
            nxt = cache.put(nxt)
        seconds = time.perf_counter() - t0
        built.steps.append({
            "step": step_name, "config": cfg.model_dump(mode="json"), "seconds": seconds,
            "compute_seconds": seconds if cached is None else nxt.meta.get("step_seconds", seconds),
            "cached": cached is not None,
            "machine": nxt.meta.get("step_machine"),  # where compute_seconds was spent
        })
        built.consumed |= ctx.consumed
        built.notes += ctx.notes
        if nxt.kind == "torch" and nxt.module is None:
            raise StepError(f"step {step_name} returned a torch artifact without a module")
        art = nxt
    else:
        built.artifact = art
    return built
