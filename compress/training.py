"""Training loops for the baseline (when no checkpoint is given) and for fine-tuning after pruning.

They only ever see the train split. Optional knowledge distillation from a teacher (the unpruned
baseline): loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).
"""

from __future__ import annotations

import contextlib
import copy
import math

import numpy as np

from compress.errors import StepError
from compress.run.progress import track
from compress.sources.inputs import PIXEL_VALUES, call_module, to_torch
from compress.sources.text import length_batches
from compress.sources.text_splits import length_order


def kd_loss(student_logits, teacher_logits, labels, *, temperature: float, alpha: float):
    import torch.nn.functional as F

    ce = F.cross_entropy(student_logits, labels)
    if alpha <= 0 or teacher_logits is None:
        return ce
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * ce + alpha * (t * t) * kl


class FeatureTaps:
    """Forward hooks on modules of a student and its teacher, for feature distillation: ``loss()`` is
    the mean squared error between their latest outputs, summed over the modules. A name taps the
    same-named module of both; a (student name, teacher name) pair taps different ones (a pruned
    transformer's layer and the teacher layer it came from). Use as a context manager: the hooks come
    off on exit."""

    def __init__(self, student, teacher, names: list[str | tuple[str, str]]):
        self.pairs = [(n, n) if isinstance(n, str) else tuple(n) for n in names]
        self.names = [s for s, _ in self.pairs]
        self.outputs: dict[tuple[str, str], object] = {}
        self.modules = []
        for side, (role, model) in enumerate((("student", student), ("teacher", teacher))):
            own = dict(model.named_modules())
            missing = [p[side] for p in self.pairs if p[side] not in own]
            if missing:
                raise StepError(f"finetune.distill.features names no module of the {role}: {', '.join(missing)}; "
                                 f"names look like {', '.join(n for n in list(own)[1:7])}")
            self.modules += [(role, p[0], own[p[side]]) for p in self.pairs]
        self.hooks: list = []

    def __enter__(self):
        for role, name, m in self.modules:
            self.hooks.append(m.register_forward_hook(
                lambda _m, _i, out, key=(role, name): self.outputs.__setitem__(key, out)))
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()
        self.hooks.clear()
        self.outputs.clear()

    def loss(self):
        import torch.nn.functional as F

        total = 0.0
        for n in self.names:
            s, t = _tensor(self.outputs[("student", n)]), _tensor(self.outputs[("teacher", n)])
            if s.shape != t.shape:
                raise StepError(f"finetune.distill.features: {n!r} outputs {tuple(s.shape[1:])} in the student and "
                                 f"{tuple(t.shape[1:])} in the teacher; name modules whose outputs keep "
                                 "their shape (e.g. stage outputs after block pruning)")
            total = total + F.mse_loss(s, t.detach())
        return total


def _tensor(out):
    """A module's output tensor (a layer that returns a tuple gives its first element)."""
    return out[0] if isinstance(out, tuple | list) else out


OPTIMIZERS = ("sgd", "adamw")
#: learning rate when none is given: SGD for CNNs, AdamW's usual scale for transformers
DEFAULT_LR = {"sgd": 0.01, "adamw": 5e-5}


def make_optimizer(module, name: str, *, lr: float, weight_decay: float, momentum: float = 0.9):
    """SGD with (Nesterov) momentum, or AdamW with weight decay on weight matrices only (not on
    biases and LayerNorm/BatchNorm scales, as transformer fine-tuning does)."""
    import torch

    if name == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=momentum > 0)
    if name == "adamw":
        params = [p for p in module.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def augment_batch(x: np.ndarray, rng: np.random.Generator, *, flip: bool, crop_padding: int) -> np.ndarray:
    """Random horizontal flips (each image with probability 1/2) and random crops of the image padded
    by ``crop_padding`` zeros on every side (zero is the mean after normalisation), the standard
    augmentation for small-image fine-tuning. ``x`` is (N, C, H, W); a new array is returned."""
    if x.ndim != 4:
        raise ValueError(f"augmentation needs image batches (N, C, H, W), got shape {x.shape}")
    out = x.copy()
    if flip:
        flipped = rng.random(len(out)) < 0.5
        out[flipped] = out[flipped][..., ::-1]
    if crop_padding > 0:
        p = crop_padding
        h, w = out.shape[2:]
        padded = np.pad(out, ((0, 0), (0, 0), (p, p), (p, p)))
        dy, dx = rng.integers(0, 2 * p + 1, size=(2, len(out)))
        for i in range(len(out)):
            out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


def train(
    module,
    split,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    teacher=None,
    temperature: float = 4.0,
    alpha: float = 0.0,
    progress=None,
    description: str = "training",
    validation=None,
    patience: int | None = None,
    augment: dict | None = None,
    feature_layers: list[str | tuple[str, str]] | None = None,
    feature_weight: float = 1.0,
    optimizer: str = "sgd",
    warmup: float = 0.0,
    max_grad_norm: float | None = None,
) -> dict:
    """SGD with (Nesterov) momentum, or AdamW (``optimizer``: ``make_optimizer``), and a cosine
    schedule after ``warmup`` (a fraction of the steps with a linear rise); returns per-epoch loss and seconds. A text split (one with
    ``lengths()``) is read in length-bucketed batches (``compress.sources.text.length_batches``) so
    little is padded; images in a fresh random order every epoch.

    With a ``validation`` split (carved out of train, never held-out), top-1 on it is measured after
    every epoch, the best epoch's weights are kept, and training stops after ``patience`` epochs
    without improvement. ``augment`` ({"flip": bool, "crop_padding": int}) augments every training
    batch (``augment_batch``); the teacher sees the same augmented images. ``feature_layers``
    (module names present in both models, or (student, teacher) name pairs) adds ``feature_weight`` x
    the mean squared error between the student's and the teacher's outputs of those modules (feature
    distillation)."""
    import time

    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module.train()
    if teacher is not None:
        teacher.eval()
    opt = make_optimizer(module, optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum)
    n = len(split)
    lengths = split.lengths() if hasattr(split, "lengths") else None
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(total, int(warmup * total)))
    losses: list[float] = []
    val_top1: list[float] = []
    best = (-1.0, -1, None)  # (top-1, epoch, state_dict)
    features = FeatureTaps(module, teacher, feature_layers) if feature_layers and teacher is not None else None
    start = time.perf_counter()
    with features or contextlib.nullcontext(), track(progress, description, total) as advance:
        for epoch in range(epochs):
            if lengths is None:
                order = rng.permutation(n)
                chunks = [order[i * batch_size : (i + 1) * batch_size] for i in range(steps_per_epoch)]
            else:
                chunks = length_batches(lengths, batch_size, seed=seed + epoch)
            epoch_loss = 0.0
            for idx in chunks:
                if len(idx) < 2:  # batch norm needs two samples
                    advance()
                    continue
                batch = split.inputs(idx)
                y = torch.from_numpy(split.labels[idx])
                if augment:
                    batch = {k: augment_batch(v, rng, **augment) if k == PIXEL_VALUES else v
                             for k, v in batch.items()}
                x = to_torch(batch)
                out = call_module(module, x)
                t_out = None
                if teacher is not None and (alpha > 0 or features is not None):
                    with torch.no_grad():
                        t_out = call_module(teacher, x)
                loss = kd_loss(out, t_out, y, temperature=temperature, alpha=alpha)
                if features is not None:
                    loss = loss + feature_weight * features.loss()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
                opt.step()
                sched.step()
                epoch_loss += float(loss.detach()) * len(idx)
                advance()
            losses.append(epoch_loss / n)
            if validation is not None:
                acc = accuracy(module, validation)
                val_top1.append(acc)
                module.train()
                if acc > best[0]:
                    best = (acc, len(val_top1) - 1, copy.deepcopy(module.state_dict()))
                elif patience is not None and len(val_top1) - 1 - best[1] >= patience:
                    break
    module.eval()
    history = {"loss": losses, "seconds": time.perf_counter() - start, "samples": n,
               "epochs": epochs, "epochs_run": len(losses), "augment": augment or None, "optimizer": optimizer,
               "lr": lr}
    if validation is not None:
        module.load_state_dict(best[2])
        history.update(validation_top1=val_top1, best_epoch=best[1] + 1, validation_n=len(validation),
                       stopped_early=len(losses) < epochs)
    return history


def lr_factor(total_steps: int, warmup_steps: int):
    """The learning-rate multiplier at each step: a linear rise over ``warmup_steps``, then a
    cosine decay to 0 over the rest (the plain cosine when there is no warm-up)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor


def carve_validation(split, fraction: float, seed: int = 0):
    """(rest, validation): a stratified, seeded slice of a train split for early stopping, so
    fine-tuning never looks at held-out data. Both are new Split objects; ``split`` is unchanged."""
    from compress.sources.data import stratified_fractions

    parts = stratified_fractions(split.labels, {"validation": fraction, "rest": 1 - fraction}, seed)
    if len(parts["validation"]) == 0 or len(parts["rest"]) < 2:
        raise ValueError(
            f"early_stopping.validation_fraction {fraction:g} of {len(split)} train samples leaves an "
            "empty slice; raise the fraction or use more train data"
        )

    def sub(idx, role):
        return split.subset(idx, role=role, source=f"{split.source} ({role} slice of train)")

    return sub(parts["rest"], "train"), sub(parts["validation"], "validation")


def accuracy(module, split, batch_size: int = 256) -> float:
    """Top-1 of a torch module on a split, in percent (used for early stopping slices)."""
    import torch

    module.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in split.batches(batch_size, length_order(split)):
            correct += int((call_module(module, to_torch(x)).argmax(1).numpy() == y).sum())
    return 100.0 * correct / max(1, len(split))
