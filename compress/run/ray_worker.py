"""What a Ray worker does for a run: it rebuilds the splits from the recipe and seed (same
fingerprints as the driver's), reads artifacts from the shared store, and runs one build, one
evaluation or one target's profiling. Only small things travel through Ray's object store: the
recipe, artifact descriptors (digest, path, facts) and results, never data arrays or modules.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

from compress.artifacts import Artifact, Cache, code_digest
from compress.errors import CompressError

#: one run's state per worker process (splits, store, baseline), reused by its next tasks
_STATE: dict = {}


def log_to_stderr(msg: str) -> None:
    """A worker's log line: Ray forwards a worker's stderr to the driver's."""
    print(msg, file=sys.stderr, flush=True)


def light(art: Artifact | None) -> Artifact | None:
    """An artifact's descriptor for the object store: digest, path and facts, no module."""
    if art is None:
        return None
    return dataclasses.replace(art, module=None, model_spec=None, meta=dict(art.meta))


@dataclasses.dataclass(frozen=True)
class RunRef:
    """What every task of a run is given: the recipe, where its files are, the shared store, and
    the driver's code and baseline digests (a worker checks it would make the same artifacts), and
    the driver's torch thread count (training's float sums, so its weights, depend on it)."""

    recipe: object
    recipe_path: Path
    store_root: Path
    code: str
    baseline_digest: str
    torch_threads: int


def same_code_and_threads(code: str, torch_threads: int) -> None:
    """Refuse to work for a driver running other compress code; use the driver's torch threads."""
    if code_digest() != code:
        raise CompressError(
            f"this Ray worker runs other compress code (code digest {code_digest()}) than the driver "
            f"({code}), so its artifacts would differ: install the same compress on every node"
        )
    import torch

    # Ray sets OMP_NUM_THREADS to a task's CPUs; training with the driver's thread count gives the
    # in-process run's weights (on the same kind of CPU), hence the same accuracies
    torch.set_num_threads(torch_threads)


def state(run: RunRef) -> dict:
    """This worker's splits, store and baseline for the run (built on its first task)."""
    same_code_and_threads(run.code, run.torch_threads)
    if _STATE.get("run") != run:
        from compress.run.build import build_baseline, data_fingerprints
        from compress.sources.data import make_splits

        recipe, cache = run.recipe, Cache(Path(run.store_root))
        trains = recipe.model.checkpoint_config is None and not recipe.model.source.startswith("onnx:")
        if trains and not (Path(run.store_root) / run.baseline_digest / "artifact.json").is_file():
            raise CompressError(not_shared(run.store_root, f"the trained baseline {run.baseline_digest}"))
        # a tokenizer trained on train is read from the store, as the driver stored it
        splits = make_splits(recipe.data, Path(run.recipe_path).parent, recipe.seed, recipe.model, cache.root)
        baseline, _ = build_baseline(recipe, Path(run.recipe_path).parent, splits, cache, log=lambda _m: None)
        _STATE.clear()
        _STATE.update(run=run, splits=splits, cache=cache, baseline=baseline,
                      data_fp=data_fingerprints(splits), corrupted=None)
    return _STATE


def not_shared(store_root, what: str) -> str:
    return (f"{what} is not in the artifact store {store_root} on this node: the store must be on a "
            "filesystem every Ray node mounts at the same path (give compress run --out a directory there)")


def load(st: dict, art: Artifact) -> Artifact:
    """The full artifact (its torch module loaded) for a descriptor, from the shared store."""
    baseline = st["baseline"]
    if art.digest == baseline.digest:
        return baseline
    got = st["cache"].get(art.digest, baseline.model_spec)
    if got is None:
        raise CompressError(not_shared(st["cache"].root, f"artifact {art.digest}"))
    return got


def build(run: RunRef, name: str, parent):
    """One variant's steps from its built parent (a Built with a light artifact, or None)."""
    from compress.run.build import build_variant

    st, recipe = state(run), run.recipe
    if parent is not None and parent.ok:
        parent = dataclasses.replace(parent, artifact=load(st, parent.artifact))
    with tempfile.TemporaryDirectory(prefix=f"compress-{name}-") as work:
        built = build_variant(recipe, name, parent, st["baseline"], st["splits"], st["cache"], st["data_fp"],
                              Path(work), log=log_to_stderr)
    return dataclasses.replace(built, artifact=light(built.artifact))


def evaluate(run: RunRef, name: str, art, target, key: str):
    """One model on one split (a role, production, or a corrupted copy of held-out)."""
    from compress.run.evaluate import evaluate_on
    from compress.runtimes.base import RUNTIMES

    st, recipe = state(run), run.recipe
    session = RUNTIMES.get(target.runtime).load(load(st, art), target)
    try:
        return evaluate_on(session, name, key, st["splits"], _corrupted(st, recipe), recipe, None)
    finally:
        session.close()


def _corrupted(st: dict, recipe) -> dict:
    """The corrupted copies of held-out, as the driver makes them (same seed, same samples)."""
    from compress.run.evaluate import robustness_active

    if st["corrupted"] is None:
        from compress.measure.drift import corrupted_splits

        st["corrupted"] = {}
        if robustness_active(recipe, st["splits"]):
            rb = recipe.evaluate.robustness
            names = rb.corruptions_for(st["splits"].is_text)
            st["corrupted"] = corrupted_splits(st["splits"]["heldout"], names, rb.severities, seed=recipe.seed)
    return st["corrupted"]


def profile(run: RunRef, pairs: dict) -> dict:
    """One group of targets' (model, target) pairs, timed in one interleaved loop on this node."""
    from compress.run.pipeline import batch_maker, profile_settings
    from compress.run.profiling import profile_pairs

    st, recipe = state(run), run.recipe
    loaded = {key: (load(st, art), target) for key, (art, target) in pairs.items()}
    return profile_pairs(loaded, batch_maker(recipe, st["splits"]), **profile_settings(recipe, st["splits"]),
                         log=log_to_stderr)
