"""Fine-tune a torch model on the train split, optionally distilling from the unpruned baseline."""

from __future__ import annotations

from pydantic import Field

from compress.artifacts import Artifact, digest_of
from compress.steps.base import StepConfig, StepContext, register_step


class DistillConfig(StepConfig):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the KL term; 1 - alpha goes to CE")


class FinetuneConfig(StepConfig):
    epochs: int = Field(2, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(5e-4, ge=0)
    distill: DistillConfig | None = Field(None, description="Knowledge distillation from the baseline")


def run_finetune(module, cfg: FinetuneConfig, ctx: StepContext, label: str = "fine-tuning") -> dict:
    from compress.training import train

    teacher = None
    if cfg.distill is not None and ctx.baseline is not None:
        teacher = ctx.baseline.load_module()
    return train(
        module, ctx.data("train"), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay, seed=ctx.seed, teacher=teacher,
        temperature=cfg.distill.temperature if cfg.distill else 4.0,
        alpha=cfg.distill.alpha if cfg.distill else 0.0, progress=ctx.progress, description=label,
    )


@register_step("finetune", config=FinetuneConfig, accepts={"torch"})
def apply(art: Artifact, cfg: FinetuneConfig, ctx: StepContext) -> Artifact:
    """Train on the train split (never held-out), with optional distillation from the baseline."""
    module = art.load_module()
    history = run_finetune(module, cfg, ctx)
    meta = dict(art.meta)
    meta["finetune"] = history
    return Artifact(
        kind="torch",
        digest=digest_of(art.digest, "finetune", cfg.model_dump(), ctx.seed, ctx.splits["train"].fingerprint()),
        module=module, model_spec=art.model_spec, lineage=[*art.lineage, f"finetune({cfg.epochs} ep)"],
        meta=meta,
    )
