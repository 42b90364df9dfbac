"""The evaluation stage of a run: every model on every labelled split, paired with the baseline, plus
the held-out overlap, overfitting and drift checks. Fills the results dict the gate and report read.

Which split each number comes from is recorded beside it (``split``, ``n``), so a reader never has
to guess whether an accuracy is held-out, train or drift.
"""

from __future__ import annotations

from collections.abc import Callable

from compress.measure.accuracy import EvalResult, compare, evaluate, overfit_gap, predict
from compress.measure.drift import (
    corrupted_splits,
    drift_degradation,
    labelled_shift,
    prediction_shift,
    robustness_profile,
)
from compress.measure.overlap import FIT_ROLES, heldout_overlap

LABELLED_ROLES = ("heldout", "train", "calibration", "tuning", "drift")


def fit_roles(consumed, baseline_trained: bool, splits) -> list[str]:
    """Splits a model was fitted on: those its steps consumed, plus train when the baseline was
    trained here (every variant inherits that)."""
    roles = set(consumed) & set(FIT_ROLES)
    if baseline_trained:
        roles.add("train")
    return [r for r in FIT_ROLES if r in roles and r in splits]


def robustness_active(recipe, splits) -> bool:
    when = recipe.evaluate.robustness.when
    if when == "never":
        return False
    return when == "always" or ("drift" not in splits and "production" not in splits)


def eval_keys(roles, splits, corrupted) -> list[str]:
    """What one model is evaluated on: every role, the production sample, every corrupted copy."""
    return [*roles, *(["production"] if "production" in splits else []), *corrupted]


def evaluate_on(session, name: str, key: str, splits, corrupted, recipe, progress):
    """One model on one of its ``eval_keys``: an EvalResult for a role, predictions for production,
    the per-sample correct flags for a corrupted copy of held-out."""
    bs = recipe.evaluate.batch_size
    if key == "production":
        return predict(session, splits["production"], batch_size=bs, progress=progress,
                       description=f"predicting {name} (production)")
    if key in corrupted:
        return evaluate(session, corrupted[key], batch_size=bs, progress=progress,
                        description=f"evaluating {name} ({key})", keep_logits=False).correct
    return evaluate(session, splits[key], batch_size=bs, progress=progress,
                    description=f"evaluating {name} ({key})", keep_logits=(key == "heldout"))


def model_results(got: dict, roles, corrupted) -> dict:
    """``{key: result}`` of one model (``evaluate_on`` for each key) in the shape the entries read."""
    return {"evals": {r: got[r] for r in roles}, "production": got.get("production"),
            "robustness": {k: got[k] for k in corrupted}}


def _evaluate_model(session, name, roles, splits, corrupted, recipe, progress) -> dict:
    got = {key: evaluate_on(session, name, key, splits, corrupted, recipe, progress)
           for key in eval_keys(roles, splits, corrupted)}
    return model_results(got, roles, corrupted)


def evaluate_models(recipe, splits, models: dict, roles, corrupted, load: Callable, progress=None) -> dict:
    """Each model on every split in turn, in this process: ``{name: results}``. The baseline's
    failure raises; a variant's is returned as the exception, so the others still run."""
    out: dict = {}
    for name, art in models.items():
        try:
            session = load(art)
            try:
                out[name] = _evaluate_model(session, name, roles, splits, corrupted, recipe, progress)
            finally:
                session.close()
        except Exception as err:
            if name == "baseline":
                raise
            out[name] = err
    return out


def _drift_entry(recipe, model: dict, base: dict | None, splits) -> dict:
    """Labelled drift, production shift and robustness of one model (against the baseline's)."""
    ev = model["evals"]
    alpha = 1.0 - recipe.evaluate.confidence
    kw = {"n_resamples": recipe.evaluate.bootstrap_resamples, "seed": recipe.seed}
    out: dict = {}
    if "drift" in ev:
        paired = recipe.data.drift is not None and recipe.data.drift.corruption is not None
        lab = labelled_shift(ev["heldout"].correct, ev["drift"].correct, paired=paired,
                             alpha=alpha, **kw)
        lab["drift_source"] = splits["drift"].source
        if base is not None:
            lab["degradation"] = drift_degradation(
                ev["heldout"].correct, base["evals"]["heldout"].correct,
                ev["drift"].correct, base["evals"]["drift"].correct,
                confidence=recipe.evaluate.confidence,
            )
        out["labelled"] = lab
    if model["production"] is not None:
        held = ev["heldout"]
        prod = model["production"]
        shift = prediction_shift(held.predictions, held.confidence, prod.predictions,
                                 prod.confidence, prod.n_classes, alpha=alpha)
        shift["production_source"] = splits["production"].source
        out["production"] = shift
    if model["robustness"]:
        out["robustness"] = robustness_profile(
            model["robustness"], None if base is None else base["robustness"]
        )
    return out


def _overfit_entry(recipe, model: dict, base: dict, roles: list[str]) -> dict:
    by_split = {
        role: overfit_gap(model["evals"], base["evals"], role, confidence=recipe.evaluate.confidence)
        for role in roles if role in model["evals"]
    }
    if not by_split:
        return {"gap_increase_points": None, "reason": "the model was fitted on no split here"}
    # The headline (gated) gap is on the data weights were trained or tuned on. Calibration is
    # also read by steps that only check their output (export compares outputs on it), so it
    # counts only when nothing was trained or tuned; its gap is reported either way.
    gated = [r for r in by_split if r in ("train", "tuning")] or list(by_split)
    worst = max((by_split[r] for r in gated), key=lambda g: g["gap_increase_points"])
    return {**worst, "by_split": by_split, "gated_splits": gated}


def _accuracy(evals: dict[str, EvalResult]) -> dict:
    return {r: e.to_dict(keep_predictions=(r == "heldout")) for r, e in evals.items()}


def evaluate_all(recipe, splits, baseline, baseline_info: dict, built: dict, variants: dict,
                 load: Callable, target_name: Callable, progress=None, log=print,
                 run_models: Callable | None = None) -> dict:
    """Evaluate the baseline and every built variant; fill ``variants[name]`` in place and return
    the baseline's results entry (without artifact/profile fields).

    ``load(artifact) -> session`` opens the runtime the artifact is judged on, the target named
    ``target_name(artifact)``. ``run_models(models, roles, corrupted)`` evaluates the models
    (default: ``evaluate_models`` in this process; an executor may spread them over workers).
    """
    trained = bool(baseline_info.get("trained"))
    base_fit = fit_roles((), trained, splits)
    variant_fit = {n: fit_roles(variants[n]["consumed_splits"], trained, splits) for n in built}
    needed = {"heldout", "drift", "train", *base_fit, *(r for rs in variant_fit.values() for r in rs)}
    roles = [r for r in LABELLED_ROLES if r in splits and r in needed]
    corrupted = {}
    if robustness_active(recipe, splits):
        rb = recipe.evaluate.robustness
        names = rb.corruptions_for(splits.is_text)
        log(f"robustness: {len(names)} corruptions x severities {rb.severities} of held-out")
        corrupted = corrupted_splits(splits["heldout"], names, rb.severities, seed=recipe.seed)
    log("evaluating on " + ", ".join(roles + (["production"] if "production" in splits else []))
        + " ...")
    if run_models is None:
        def run_models(models, roles, corrupted):
            return evaluate_models(recipe, splits, models, roles, corrupted, load, progress)
    models = {"baseline": baseline, **{n: b.artifact for n, b in built.items() if b.ok}}
    evaluated = run_models(models, roles, corrupted)
    base = evaluated["baseline"]
    if isinstance(base, BaseException):
        raise base
    baseline_entry = {
        "accuracy": _accuracy(base["evals"]), "evaluated_on": target_name(baseline),
        "fit_splits": base_fit,
    }
    if base_fit:
        baseline_entry["heldout_overlap"] = heldout_overlap(splits, base_fit)
        baseline_entry["overfit"] = {
            "by_split": {r: {"fit_split": r, "fit_n": base["evals"][r].n,
                             "gap_points": base["evals"][r].top1 - base["evals"]["heldout"].top1}
                         for r in base_fit}
        }
    baseline_entry["drift"] = _drift_entry(recipe, base, None, splits)
    for name, b in built.items():
        if not b.ok:
            continue
        target = target_name(b.artifact)
        model = evaluated[name]
        if isinstance(model, BaseException):
            variants[name].update(status="failed", error=f"evaluation on {target} failed: {model}")
            continue
        acc = _accuracy(model["evals"])
        acc.update(compare(model["evals"]["heldout"], base["evals"]["heldout"],
                           confidence=recipe.evaluate.confidence))
        if "drift" in model["evals"]:
            acc["drift_change_points"] = model["evals"]["drift"].top1 - base["evals"]["drift"].top1
        entry = variants[name]
        entry["accuracy"] = acc
        entry["evaluated_on"] = target
        entry["fit_splits"] = variant_fit[name]
        entry["heldout_overlap"] = heldout_overlap(splits, variant_fit[name])
        entry["overfit"] = _overfit_entry(recipe, model, base, variant_fit[name])
        entry["drift"] = _drift_entry(recipe, model, base, splits)
    return baseline_entry
