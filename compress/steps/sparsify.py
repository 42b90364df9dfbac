"""The ``sparsify`` step: 2:4 semi-structured sparsity (masks via torch.nn.utils.prune), optionally
fine-tuned with the masks held fixed. MACs and shapes do not change, so any speed-up has to be
measured on the target: ONNX Runtime on a CPU runs the zeros as dense arithmetic, and the report
says so instead of claiming a MAC-based gain."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.artifacts import Artifact
from compress.errors import StepError
from compress.pruning import semistructured as ss
from compress.pruning.channels import check_patterns
from compress.steps.base import StepConfig, StepContext, register_step
from compress.steps.finetune import FinetuneConfig, run_finetune


class SparsifyConfig(StepConfig):
    pattern: Literal["2:4"] = Field("2:4", description="Two zeros in every group of four input weights")
    ignore: list[str] = Field(default_factory=list, description="Module-name patterns kept dense")
    finetune: FinetuneConfig | None = Field(None, description="Recover accuracy with the masks held fixed")


@register_step(
    "sparsify", config=SparsifyConfig, accepts={"torch"},
    roles=lambda cfg: {"train": "finetune: fine-tuning trains"} if cfg.finetune is not None else {},
    example={"finetune": {"epochs": 1}},
)
def apply(art: Artifact, cfg: SparsifyConfig, ctx: StepContext) -> Artifact:
    """Zero two of every four input weights (2:4) in each eligible layer, then optionally fine-tune."""
    module = art.load_module().eval()
    check_patterns(module, cfg.ignore, "sparsify.ignore")
    layers, skipped = ss.eligible_layers(module, ctx.splits.num_classes, cfg.ignore)
    if not layers:
        raise StepError(
            "sparsify found no layer to make 2:4 sparse: it needs Conv2d/Linear layers whose input "
            f"dim is a multiple of 4 (skipped for shape: {', '.join(skipped) or 'none'})"
        )
    ss.apply_masks(layers)
    history = run_finetune(module, cfg.finetune, ctx) if cfg.finetune is not None else None
    ss.make_permanent(layers)
    meta = dict(art.meta)
    # Channel pruning before this step keeps its facts; the 2:4 facts go beside them.
    pruning = dict(art.meta.get("pruning") or {
        "target": "2:4", "macs_before": art.meta.get("macs"), "macs_after": art.meta.get("macs"),
        "params_before": art.meta.get("params"), "params_after": art.meta.get("params"),
        "mac_ratio": 1.0, "finetune": [],
    })
    pruning["sparsity"] = {
        "pattern": cfg.pattern, "layers": len(layers), "skipped_layers": skipped,
        "zero_fraction": ss.zero_fraction(layers), "finetune": history,
    }
    meta["pruning"] = pruning
    return Artifact(
        kind="torch", module=module, model_spec=art.model_spec,
        lineage=[*art.lineage, "sparsify(2:4)" + (" + finetune" if cfg.finetune else "")], meta=meta,
    )
