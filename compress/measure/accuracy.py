"""Accuracy of a deployed artifact on held-out data, paired with the baseline's, sample by sample.

The evaluator only sees a ``Session`` and a split: it never knows which steps made the model.
Per-sample predictions (and logits) are kept so that the comparison with the baseline is paired
(same samples, same order): the change in top-1 gets a paired score interval and McNemar's test, and
the outputs get a fidelity measure (cosine similarity and KL divergence of the softmax).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.errors import InputError
from compress.measure import paired, stats
from compress.run.progress import track
from compress.sources.text_splits import length_order


@dataclass
class EvalResult:
    split: str
    n: int
    top1: float  # percent
    top5: float | None  # percent, when there are more than 5 classes
    predictions: np.ndarray  # int64 [n]
    correct: np.ndarray  # bool [n]
    confidence: np.ndarray  # float32 [n], max softmax probability
    labels: np.ndarray | None = None  # int64 [n]
    logits: np.ndarray | None = None  # float32 [n, classes]
    top5_correct: np.ndarray | None = None  # bool [n], when there are more than 5 classes

    @property
    def n_classes(self) -> int | None:
        return None if self.logits is None else int(self.logits.shape[1])

    def to_dict(self, *, keep_predictions: bool = True) -> dict:
        out = {"split": self.split, "n": self.n, "top1": self.top1, "top5": self.top5}
        if keep_predictions:
            out["predictions"] = self.predictions.tolist()
        return out


@dataclass
class Predictions:
    """What a model says about unlabelled samples (a production sample): classes and confidence."""

    split: str
    n: int
    predictions: np.ndarray  # int64 [n]
    confidence: np.ndarray  # float32 [n]
    n_classes: int


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _softmax_max(logits: np.ndarray) -> np.ndarray:
    return _softmax(logits).max(axis=1).astype(np.float32)


def _run_logits(session, split, batch_size: int, progress, description: str) -> np.ndarray:
    if len(split) == 0:
        raise InputError(
            f"the {split.role} split is empty: it needs at least one sample; "
            "raise its fraction in data.split or give a source with samples"
        )
    out = []
    n_batches = (len(split) + batch_size - 1) // batch_size
    order = length_order(split)  # text: by length, so batches pad little; images: as they are
    with track(progress, description, n_batches) as advance:
        for x, y in split.batches(batch_size, order):
            logits = np.asarray(session.run(x), dtype=np.float32)
            if logits.ndim != 2 or logits.shape[0] != len(y):
                raise ValueError(f"model output has shape {logits.shape}; expected [batch, classes] logits")
            out.append(logits)
            advance()
    logits = np.concatenate(out)
    restored = np.empty_like(logits)
    restored[order] = logits  # row i of the result is sample i of the split
    return restored


def evaluate(session, split, *, batch_size: int = 256, progress=None, description: str = "evaluating",
             keep_logits: bool = True) -> EvalResult:
    """Run ``session`` over every sample of ``split`` and score top-1 (and top-5)."""
    logits = _run_logits(session, split, batch_size, progress, description)
    labels = np.asarray(split.labels, dtype=np.int64)
    n_classes = logits.shape[1]
    if labels.max() >= n_classes:
        raise InputError(
            f"the {split.role} split has labels up to {int(labels.max())}, but the model outputs "
            f"{n_classes} classes: every split must share the model's label space "
            "(check the source's classes, or the model's num_classes)"
        )
    predictions = logits.argmax(axis=1).astype(np.int64)
    correct = predictions == labels
    top5_correct = None
    if n_classes > 5:
        top = np.argpartition(-logits, 5, axis=1)[:, :5]
        top5_correct = (top == labels[:, None]).any(axis=1)
    return EvalResult(
        split=split.role, n=len(split), top1=float(100 * correct.mean()),
        top5=None if top5_correct is None else float(100 * top5_correct.mean()),
        predictions=predictions, correct=correct, confidence=_softmax_max(logits),
        labels=labels, logits=logits if keep_logits else None, top5_correct=top5_correct,
    )


def predict(session, split, *, batch_size: int = 256, progress=None,
            description: str = "predicting") -> Predictions:
    """Predicted classes and confidence on a split whose labels are not used (production data)."""
    logits = _run_logits(session, split, batch_size, progress, description)
    return Predictions(split.role, len(split), logits.argmax(axis=1).astype(np.int64),
                       _softmax_max(logits), int(logits.shape[1]))


# --- more than top-1 ------------------------------------------------------------------------------


def per_class_accuracy(result: EvalResult, n_classes: int) -> tuple[list[float | None], list[int]]:
    """Top-1 per class in percent (None for a class with no samples) and samples per class."""
    if result.labels is None:
        raise ValueError("per-class accuracy needs the labels: evaluate() keeps them")
    counts = np.bincount(result.labels, minlength=n_classes)
    hits = np.bincount(result.labels, weights=result.correct.astype(np.float64), minlength=n_classes)
    acc = [float(100 * h / c) if c else None for h, c in zip(hits, counts, strict=True)]
    return acc, counts.astype(int).tolist()


def fidelity(variant_logits: np.ndarray, baseline_logits: np.ndarray) -> dict:
    """How closely the variant's outputs follow the baseline's on the same samples: mean cosine
    similarity of the logits, and mean KL(baseline softmax || variant softmax) in nats."""
    if variant_logits.shape != baseline_logits.shape:
        raise ValueError(
            f"variant logits {variant_logits.shape} and baseline logits {baseline_logits.shape} "
            "differ: both must score the same samples with the same classes"
        )
    v = variant_logits.astype(np.float64)
    b = baseline_logits.astype(np.float64)
    norms = np.linalg.norm(v, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.sum(v * b, axis=1) / np.maximum(norms, 1e-12)
    log_p = b - b.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    log_q = v - v.max(axis=1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(axis=1, keepdims=True))
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            "kl_mean_nats": float(kl.mean()), "kl_max_nats": float(kl.max())}


def _check_same_samples(variant: EvalResult, baseline: EvalResult) -> None:
    if variant.n != baseline.n or (
        variant.labels is not None and baseline.labels is not None
        and not np.array_equal(variant.labels, baseline.labels)
    ):
        raise ValueError("variant and baseline were evaluated on different samples")


def compare(variant: EvalResult, baseline: EvalResult, *, confidence: float = 0.95) -> dict:
    """Paired comparison on the same samples: change in points with the paired score interval,
    McNemar's exact test, agreement of predictions, top-5, per-class accuracy and fidelity."""
    _check_same_samples(variant, baseline)
    interval = paired.paired_diff_interval(variant.correct, baseline.correct, confidence=confidence)
    mc = stats.mcnemar_exact(variant.correct, baseline.correct)
    out = {
        "change_points": variant.top1 - baseline.top1,
        "change_interval": interval.to_dict(),
        "mcnemar": mc.to_dict(),
        "agreement": float(100 * (variant.predictions == baseline.predictions).mean()),
        "change_split": baseline.split,
        "change_n": baseline.n,
        "discordance_rate": (mc.n_variant_only + mc.n_baseline_only) / baseline.n,
    }
    if variant.top5_correct is not None and baseline.top5_correct is not None:
        out["top5_change_points"] = variant.top5 - baseline.top5
        out["top5_change_interval"] = paired.paired_diff_interval(
            variant.top5_correct, baseline.top5_correct, confidence=confidence
        ).to_dict()
    n_classes = variant.n_classes or baseline.n_classes
    if n_classes and variant.labels is not None and baseline.labels is not None:
        v_acc, counts = per_class_accuracy(variant, n_classes)
        b_acc, _ = per_class_accuracy(baseline, n_classes)
        drops = [(b - v, c) for c, (v, b) in enumerate(zip(v_acc, b_acc, strict=True)) if v is not None]
        worst_drop, worst = max(drops)
        uppers = paired.per_class_drop_upper(variant.correct, baseline.correct, variant.labels,
                                            n_classes, confidence=confidence)
        high, high_class = max((u, c) for c, u in enumerate(uppers) if u is not None)
        out["per_class"] = {
            "variant_top1": v_acc, "baseline_top1": b_acc, "n": counts,
            "worst_class": int(worst), "worst_class_drop_points": float(worst_drop),
            "worst_class_n": int(counts[worst]),
            # Upper limit of the largest true per-class drop (the largest per-class upper limit).
            "worst_class_drop_high_points": float(high), "worst_class_drop_high_class": int(high_class),
        }
    if variant.logits is not None and baseline.logits is not None:
        out["fidelity"] = fidelity(variant.logits, baseline.logits)
    return out


# --- can the held-out set decide at this tolerance? ------------------------------------------------


def drop_decision(acc: dict, tolerance_points: float) -> dict:
    """Whether the held-out interval of the drop lies wholly within, wholly beyond, or across the
    tolerance; across it, about how many held-out samples would decide with the same interval
    (``paired.samples_to_decide``, at the observed rates of each kind of discordant pair)."""
    if tolerance_points is None or tolerance_points < 0:
        raise ValueError(
            f"the accuracy tolerance must be a number of points >= 0, got {tolerance_points!r}"
        )
    iv = acc["change_interval"]
    drop, drop_low, drop_high = -acc["change_points"], -iv["high"], -iv["low"]
    n = acc.get("change_n") or (acc.get("heldout") or {}).get("n")
    out = {"tolerance_points": tolerance_points, "drop_points": drop, "drop_low": drop_low,
           "drop_high": drop_high, "confidence": iv["confidence"], "n": n, "needed_n": None}
    if drop_high <= tolerance_points + 1e-9:
        out["state"] = "within"
    elif drop_low > tolerance_points + 1e-9:
        out["state"] = "beyond"
    else:
        out["state"] = "undecided"
        # Rates of each kind of discordant pair, from the change and the discordance rate.
        rate, change = acc.get("discordance_rate"), acc["change_points"] / 100.0
        mc = acc.get("mcnemar")
        if rate is None and n and mc:
            rate = (mc["n_variant_only"] + mc["n_baseline_only"]) / n
        if rate is not None:
            out["needed_n"] = paired.samples_to_decide(
                max((rate + change) / 2.0, 0.0), max((rate - change) / 2.0, 0.0),
                tolerance_points, iv["confidence"],
            )
    return out


# --- overfitting ------------------------------------------------------------------------------------


def overfit_gap(variant: dict[str, EvalResult], baseline: dict[str, EvalResult], fit_role: str, *,
                confidence: float = 0.95) -> dict:
    """Accuracy on the data a model was fitted on minus held-out accuracy, for the variant and the
    baseline, and the growth of the variant's gap over the baseline's with an interval
    (``paired.paired_diff_in_diff``).

    A variant fine-tuned until it memorises its (small) train split shows a gap far larger than
    the baseline's; one that generalises shows about the same gap.
    """
    for d, who in ((variant, "variant"), (baseline, "baseline")):
        missing = {"heldout", fit_role} - set(d)
        if missing:
            raise ValueError(f"overfit_gap needs the {who}'s {sorted(missing)} results")
    v_gap = variant[fit_role].top1 - variant["heldout"].top1
    b_gap = baseline[fit_role].top1 - baseline["heldout"].top1
    interval = paired.paired_diff_in_diff(
        variant[fit_role].correct, baseline[fit_role].correct,
        variant["heldout"].correct, baseline["heldout"].correct, confidence=confidence,
    )
    return {
        "fit_split": fit_role, "fit_n": variant[fit_role].n, "heldout_n": variant["heldout"].n,
        "variant_fit_top1": variant[fit_role].top1, "variant_heldout_top1": variant["heldout"].top1,
        "baseline_fit_top1": baseline[fit_role].top1, "baseline_heldout_top1": baseline["heldout"].top1,
        "variant_gap_points": v_gap, "baseline_gap_points": b_gap,
        "gap_increase_points": v_gap - b_gap, "gap_increase_interval": interval.to_dict(),
    }
