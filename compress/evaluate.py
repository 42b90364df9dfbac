"""Accuracy of a deployed artifact on held-out data, paired with the baseline's, sample by sample.

The evaluator only sees a ``Session`` and a split: it never knows which steps made the model.
Per-sample predictions are kept so that the comparison with the baseline is paired (same samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress import stats
from compress.progress import track


@dataclass
class EvalResult:
    split: str
    n: int
    top1: float  # percent
    top5: float | None  # percent, when there are more than 5 classes
    predictions: np.ndarray  # int64 [n]
    correct: np.ndarray  # bool [n]
    confidence: np.ndarray  # float32 [n], max softmax probability

    def to_dict(self, *, keep_predictions: bool = True) -> dict:
        out = {"split": self.split, "n": self.n, "top1": self.top1, "top5": self.top5}
        if keep_predictions:
            out["predictions"] = self.predictions.tolist()
        return out


def _softmax_max(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e.max(axis=1) / e.sum(axis=1)).astype(np.float32)


def evaluate(session, split, *, batch_size: int = 256, progress=None, description: str = "evaluating") -> EvalResult:
    """Run ``session`` over every sample of ``split`` and score top-1 (and top-5)."""
    preds, top5_hits, conf = [], [], []
    n_batches = (len(split) + batch_size - 1) // batch_size
    with track(progress, description, n_batches) as advance:
        for x, y in split.batches(batch_size):
            logits = np.asarray(session.run(x), dtype=np.float32)
            if logits.ndim != 2 or logits.shape[0] != len(y):
                raise ValueError(f"model output has shape {logits.shape}; expected [batch, classes] logits")
            preds.append(logits.argmax(axis=1))
            conf.append(_softmax_max(logits))
            if logits.shape[1] > 5:
                top = np.argpartition(-logits, 5, axis=1)[:, :5]
                top5_hits.append((top == y[:, None]).any(axis=1))
            advance()
    predictions = np.concatenate(preds).astype(np.int64)
    correct = predictions == split.labels
    top5 = float(100 * np.concatenate(top5_hits).mean()) if top5_hits else None
    return EvalResult(
        split=split.role, n=len(split), top1=float(100 * correct.mean()), top5=top5,
        predictions=predictions, correct=correct, confidence=np.concatenate(conf),
    )


def compare(variant: EvalResult, baseline: EvalResult, *, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Paired comparison on the same samples: change in points with a 95% bootstrap interval,
    McNemar's exact test, and agreement of predictions."""
    if variant.n != baseline.n:
        raise ValueError("variant and baseline were evaluated on different samples")
    interval = stats.paired_bootstrap_diff(
        variant.correct, baseline.correct, n_resamples=n_resamples, seed=seed
    )
    mc = stats.mcnemar_exact(variant.correct, baseline.correct)
    return {
        "change_points": variant.top1 - baseline.top1,
        "change_interval": interval.to_dict(),
        "mcnemar": mc.to_dict(),
        "agreement": float(100 * (variant.predictions == baseline.predictions).mean()),
    }
