"""Fine-tune a torch model on the train split, optionally distilling from the unpruned baseline.

Only the train split is used. Early stopping, when asked for, watches a stratified validation slice
carved out of train (and trains on the rest); held-out data is never seen by a step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.steps.base import StepConfig, StepContext, register_step


class DistillConfig(StepConfig):
    temperature: float = Field(4.0, gt=0, description="Softens both logit sets before the KL term")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term; 1 - alpha goes to CE")
    features: list[str] = Field(
        default_factory=list, description="Module names whose outputs the student also matches to the "
        "teacher's (mean squared error); their shapes must agree, e.g. the stage outputs of a "
        "block-pruned ResNet"
    )
    hidden_states: bool = Field(
        False, description="Also match each transformer layer's output to the teacher layer it came from "
        "(after layers were removed, the kept ones pair with their originals); needs a transformer"
    )
    feature_weight: float = Field(1.0, gt=0, description="Weight of the feature term")


class EarlyStoppingConfig(StepConfig):
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Stratified slice of the train split watched for early stopping"
    )
    patience: int = Field(1, ge=1, description="Stop after this many epochs without a better top-1")


class AugmentConfig(StepConfig):
    flip: bool = Field(True, description="Random horizontal flips (do not use for data where left/right matters)")
    crop_padding: int = Field(
        4, ge=0, description="Random crops of each image padded by this many pixels per side (0: no crops)"
    )


class FinetuneConfig(StepConfig):
    epochs: int = Field(2, ge=1)
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd", description="sgd (Nesterov momentum; CNNs) or adamw (transformers); a cosine schedule either way"
    )
    lr: float | None = Field(None, gt=0, description="Learning rate; 0.01 with sgd, 5e-5 with adamw when not given")
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay (with adamw: on weight matrices only)")
    warmup: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the steps over which the learning rate rises linearly "
        "from 0 (then the cosine decay), as baseline.train"
    )
    max_grad_norm: float | None = Field(None, gt=0, description="Clip the gradient norm to this (e.g. 1.0)")
    distill: DistillConfig | None = Field(None, description="Knowledge distillation from the baseline")
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="Keep the best epoch on a validation slice of train; stop when it stalls"
    )
    augment: AugmentConfig | None = Field(
        None, description="Augment training images (flips, padded crops); off when absent"
    )


def _features(module, teacher, cfg: FinetuneConfig) -> list | None:
    """The modules whose outputs are distilled: the named ones, plus each transformer layer paired with
    the teacher layer it came from (``hidden_states``)."""
    if cfg.distill is None or teacher is None:
        return None
    names: list = list(cfg.distill.features)
    if cfg.distill.hidden_states:
        from compress.pruning.transformers import layer_pairs

        names += layer_pairs(module, teacher)
    return names or None


def run_finetune(module, cfg: FinetuneConfig, ctx: StepContext, label: str = "fine-tuning") -> dict:
    """Train ``module`` in place on the train split; returns the training history."""
    from compress.training import DEFAULT_LR, carve_validation, train

    teacher = None
    if cfg.distill is not None:
        if ctx.baseline is None or ctx.baseline.kind != "torch":
            raise StepError(
                "finetune.distill needs the unpruned baseline as a torch model (the teacher); "
                "this baseline is not a torch model: remove distill"
            )
        teacher = ctx.baseline.load_module().eval()
    split = ctx.data("train")
    validation = None
    if cfg.early_stopping is not None:
        try:
            split, validation = carve_validation(split, cfg.early_stopping.validation_fraction, ctx.seed)
        except ValueError as err:
            raise StepError(f"finetune.{err}") from None
    sample_shape = getattr(split, "sample_shape", None)  # text splits have none
    if cfg.augment is not None and (sample_shape is None or len(sample_shape) != 3):
        what = "text" if sample_shape is None else f"samples of shape {sample_shape}"
        raise StepError(
            f"finetune.augment needs image inputs (N, C, H, W); this train split holds {what}: remove augment"
        )
    history = train(
        module, split, epochs=cfg.epochs, lr=cfg.lr or DEFAULT_LR[cfg.optimizer], batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay, seed=ctx.seed, teacher=teacher,
        temperature=cfg.distill.temperature if cfg.distill else 4.0,
        alpha=cfg.distill.alpha if cfg.distill else 0.0, progress=ctx.progress, description=label,
        validation=validation, patience=cfg.early_stopping.patience if cfg.early_stopping else None,
        augment=cfg.augment.model_dump() if cfg.augment else None,
        feature_layers=_features(module, teacher, cfg),
        feature_weight=cfg.distill.feature_weight if cfg.distill else 1.0, optimizer=cfg.optimizer,
        warmup=cfg.warmup, max_grad_norm=cfg.max_grad_norm,
    )
    history["distilled"] = teacher is not None
    return history


@register_step(
    "finetune", config=FinetuneConfig, accepts={"torch"}, roles={"train": "fine-tuning trains"},
    example={"epochs": 1, "distill": {"alpha": 0.5}},
)
def apply(art: Artifact, cfg: FinetuneConfig, ctx: StepContext) -> Artifact:
    """Train on the train split (never held-out), with optional distillation from the baseline."""
    module = art.load_module()
    history = run_finetune(module, cfg, ctx)
    meta = dict(art.meta)
    meta["finetune"] = history
    return Artifact(
        kind="torch",
        module=module, model_spec=art.model_spec, lineage=[*art.lineage, f"finetune({cfg.epochs} ep)"],
        meta=meta,
    )
