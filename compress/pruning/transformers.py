"""Structured pruning of transformers: whole attention heads and FFN neurons (Torch-Pruning), and
the fixups that keep a pruned model's attention modules and Hugging Face config in step with its
weights, so it runs, saves, reloads and exports.

What is found by structure, whatever wraps the model:

- attention: Hugging Face BERT-style self-attention (``query``/``key``/``value`` Linears with
  ``num_attention_heads`` and ``attention_head_size``) and ViT-style (``q_proj``/``k_proj``/``v_proj``
  with ``head_dim``). Heads are removed whole; the head size and the model width stay.
  ``torch.nn.MultiheadAttention`` fuses its projections with the model width, so its heads cannot be
  removed (its FFN neurons can);
- FFN neurons: the first Linear of each feed-forward block (``intermediate.dense`` in BERT, ``fc1`` of
  an MLP with ``fc1``/``fc2``, ``linear1`` of ``nn.TransformerEncoderLayer``), cut with the second
  Linear's inputs;
- layers: the ``nn.ModuleList`` of transformer layers (``encoder.layer``, ``layers``); removing one
  shrinks the list (``compress.pruning.blocks``), and ``num_hidden_layers`` follows.

The hidden width (embeddings, residual stream, LayerNorms) is never cut. Import lazily: it imports torch.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass

from torch import nn

from compress.errors import StepError
from compress.sources.inputs import torch_example

#: the buffer on a layer list that records which original layers it still holds (see blocks.py)
KEPT_LAYERS = "compress_kept_layers"


@dataclass
class Attention:
    """One self-attention module: its projections (query, key, value), heads and head size."""

    name: str
    module: nn.Module
    projections: tuple[nn.Linear, nn.Linear, nn.Linear]
    head_size: int

    @property
    def heads(self) -> int:
        return self.projections[0].out_features // self.head_size


def _linears(m, names) -> tuple | None:
    found = tuple(getattr(m, n, None) for n in names)
    return found if all(isinstance(x, nn.Linear) for x in found) else None


def attention_modules(module) -> list[Attention]:
    """Every Hugging Face self-attention module whose heads can be removed."""
    out = []
    for name, m in module.named_modules():
        if not hasattr(m, "num_attention_heads"):
            continue
        bert, vit = _linears(m, ("query", "key", "value")), _linears(m, ("q_proj", "k_proj", "v_proj"))
        if bert and hasattr(m, "attention_head_size"):
            out.append(Attention(name, m, bert, int(m.attention_head_size)))
        elif vit and hasattr(m, "head_dim"):
            out.append(Attention(name, m, vit, int(m.head_dim)))
    return out


def ffn_layers(module) -> list[tuple[str, nn.Linear]]:
    """(name, Linear) of the first Linear of every feed-forward block: its outputs are the neurons."""
    out = []
    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
            out.append((prefix + "linear1", m.linear1))
        elif isinstance(getattr(m, "intermediate", None), nn.Module) and isinstance(
                getattr(m.intermediate, "dense", None), nn.Linear):
            out.append((prefix + "intermediate.dense", m.intermediate.dense))
        elif _linears(m, ("fc1", "fc2")):
            out.append((prefix + "fc1", m.fc1))
    return out


def layer_lists(module) -> list[tuple[str, nn.ModuleList]]:
    """(name, list) of every ``nn.ModuleList`` of transformer layers (items holding attention)."""
    attn = {a.module for a in attention_modules(module)}
    out = []
    for name, m in module.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) and all(
                any(x in attn or isinstance(x, nn.MultiheadAttention) for x in item.modules()) for item in m):
            out.append((name, m))
    return out


def hf_configs(module) -> list:
    """The distinct Hugging Face configs reachable from ``module`` (its own ``config`` included)."""
    if "transformers" not in sys.modules:  # no Hugging Face model can be inside
        return []
    from transformers import PretrainedConfig

    seen = {}
    for m in module.modules():
        cfg = getattr(m, "config", None)
        if isinstance(cfg, PretrainedConfig):
            seen[id(cfg)] = cfg
    return list(seen.values())


def sync_configs(module) -> dict:
    """Make every attention module's head count and every Hugging Face config follow the weights:
    ``num_attention_heads`` (and ``head_dim``, which keeps the head size on reload), ``intermediate_size``,
    ``num_hidden_layers``. Returns what the config now says (empty for a model without one); a count
    that differs between layers is left out of the config and listed per layer."""
    attns = attention_modules(module)
    for a in attns:
        a.module.num_attention_heads = a.heads
        if hasattr(a.module, "all_head_size"):
            a.module.all_head_size = a.heads * a.head_size
    facts: dict = {}
    heads = sorted({a.heads for a in attns})
    ffn = sorted({lin.out_features for _, lin in ffn_layers(module)})
    lists = layer_lists(module)
    if len(heads) > 1:
        facts["heads_per_layer"] = [a.heads for a in attns]
    if len(ffn) > 1:
        facts["ffn_per_layer"] = [lin.out_features for _, lin in ffn_layers(module)]
    for name, lst in lists:
        parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
        if isinstance(parent, nn.TransformerEncoder | nn.TransformerDecoder):
            parent.num_layers = len(lst)
    for cfg in hf_configs(module):
        if len(heads) == 1:
            cfg.num_attention_heads = heads[0]
            if hasattr(cfg, "hidden_size") and heads[0] * attns[0].head_size != cfg.hidden_size:
                cfg.head_dim = attns[0].head_size  # read by ViT-style attention when it is rebuilt
            facts["num_attention_heads"] = heads[0]
        if len(ffn) == 1 and hasattr(cfg, "intermediate_size"):
            cfg.intermediate_size = facts["intermediate_size"] = ffn[0]
        if len(lists) == 1 and hasattr(cfg, "num_hidden_layers"):
            cfg.num_hidden_layers = facts["num_hidden_layers"] = len(lists[0][1])
    return facts


def shape_summary(module) -> dict:
    """Heads, FFN width and layers of a transformer (for the pruning facts)."""
    attns = attention_modules(module)
    ffn = ffn_layers(module)
    lists = layer_lists(module)
    return {"heads": sum(a.heads for a in attns), "ffn_neurons": sum(lin.out_features for _, lin in ffn),
            "layers": sum(len(lst) for _, lst in lists)}


def is_transformer(module) -> bool:
    return bool(attention_modules(module)) or any(isinstance(m, nn.MultiheadAttention) for m in module.modules())


def make_head_pruner(module, *, head_ratio: float, ffn_ratio: float, importance: str, input_spec,
                     kept: list, iterative_steps: int = 1, round_to: int | None = None):
    """A Torch-Pruning pruner that removes ``head_ratio`` of each attention module's heads (rounded
    up) and ``ffn_ratio`` of each FFN block's neurons, nothing else. ``kept``: layers never cut."""
    import torch_pruning as tp

    from compress.pruning.importance import make_importance

    attns = [a for a in attention_modules(module) if not any(p in kept for p in a.projections)]
    ffns = [(n, lin) for n, lin in ffn_layers(module) if lin not in kept]
    if head_ratio > 0 and not attns:
        mha = any(isinstance(m, nn.MultiheadAttention) for m in module.modules())
        raise StepError(
            "prune.head_ratio: " + ("this model's attention is torch.nn.MultiheadAttention, whose heads "
                                    "cannot be removed (its projections are fused with the model width)"
                                    if mha else "this model has no attention module whose heads compress can "
                                    "remove (Hugging Face BERT- or ViT-style self-attention)")
            + "; set head_ratio: 0 to prune FFN neurons only")
    if ffn_ratio > 0 and not ffns:
        raise StepError("prune.ffn_ratio: this model has no feed-forward block compress recognises "
                        "(intermediate.dense, fc1/fc2, nn.TransformerEncoderLayer.linear1); set ffn_ratio: 0")
    for a in attns:
        if head_ratio > 0 and math.ceil(head_ratio * a.heads) >= a.heads:
            raise StepError(f"prune.head_ratio {head_ratio:g} removes all {a.heads} heads of {a.name}; use at "
                            f"most {(a.heads - 1) / a.heads:.3g}")
    num_heads, ratios = {}, {}
    for a in attns:
        for p in a.projections:
            num_heads[p] = a.heads
            if head_ratio > 0:
                ratios[p] = head_ratio
    for _, lin in ffns:
        if ffn_ratio > 0:
            ratios[lin] = ffn_ratio
    with warnings.catch_warnings():
        # the position embeddings and CLS token are "unwrapped parameters" of the hidden width: never cut here
        warnings.filterwarnings("ignore", message="Unwrapped parameters")
        try:
            return tp.pruner.BasePruner(
                module, torch_example(input_spec), importance=make_importance(importance), pruning_ratio=0.0,
                pruning_ratio_dict=ratios, num_heads=num_heads, prune_num_heads=head_ratio > 0,
                prune_head_dims=False, head_pruning_ratio=head_ratio, ignored_layers=kept,
                iterative_steps=iterative_steps, round_to=round_to,
            )
        except Exception as err:
            raise StepError(f"Torch-Pruning could not trace this model: {type(err).__name__}: {err}") from err


def prune_heads(pruner, module) -> None:
    """One pruner step, then the attention modules and configs follow the new weights."""
    pruner.step()
    sync_configs(module)
    module.zero_grad(set_to_none=True)


def layer_pairs(student, teacher) -> list[tuple[str, str]]:
    """(student layer, teacher layer) names for hidden-state distillation: each layer the student
    kept, paired with the teacher layer it came from (the ``compress_kept_layers`` record)."""
    pairs = []
    teacher_modules = dict(teacher.named_modules())
    for name, lst in layer_lists(student):
        kept = getattr(lst, KEPT_LAYERS, None)
        origin = kept.tolist() if kept is not None else list(range(len(lst)))
        for i, j in enumerate(origin):
            if f"{name}.{j}" not in teacher_modules:
                raise StepError(f"finetune.distill.hidden_states: the teacher has no layer {name}.{j}; the "
                                "baseline is not the model this one was pruned from")
            pairs.append((f"{name}.{i}", f"{name}.{j}"))
    if not pairs:
        raise StepError("finetune.distill.hidden_states needs a transformer (a list of layers with attention); "
                        "name modules in distill.features instead")
    return pairs


def restore_layer_lists(module, state_dict: dict) -> None:
    """Shrink every layer list that ``state_dict`` records as shortened (before loading it)."""
    import torch

    suffix = "." + KEPT_LAYERS
    for key, kept in state_dict.items():
        if not key.endswith(suffix):
            continue
        name = key[: -len(suffix)]
        try:
            lst = module.get_submodule(name)
        except AttributeError:
            continue  # the loader reports the unexpected key with the others
        if isinstance(lst, nn.ModuleList) and len(lst) >= len(kept):
            for i in range(len(lst) - 1, len(kept) - 1, -1):
                del lst[i]
            if hasattr(lst, KEPT_LAYERS):
                setattr(lst, KEPT_LAYERS, torch.zeros_like(kept))
            else:
                lst.register_buffer(KEPT_LAYERS, torch.zeros_like(kept))



class HeadCut:
    """Heads and FFN pruning as the prune step runs it: the ratios (explicit, or one searched ratio
    for both), cuts of copies for the budget searches, and the real cut in one or more steps."""

    def __init__(self, module, *, head_ratio: float | None, ffn_ratio: float | None, importance: str,
                 input_spec, num_classes: int, ignore: list[str], round_to: int | None, seed: int = 0):
        self.head_ratio, self.ffn_ratio = head_ratio, ffn_ratio
        self.importance, self.input_spec, self.num_classes = importance, input_spec, num_classes
        self.ignore, self.round_to, self.seed = list(ignore), round_to, seed
        heads = [a.heads for a in attention_modules(module)]
        # the deepest searched ratio keeps one head per layer (and 5% of the FFN)
        self.max_ratio = min([0.95, *((h - 1) / h for h in heads if h > 1)]) if heads else 0.95

    def ratios(self, ratio: float) -> tuple[float, float]:
        """(head ratio, FFN ratio): the explicit ones, else ``ratio`` for both."""
        return (ratio if self.head_ratio is None else self.head_ratio,
                ratio if self.ffn_ratio is None else self.ffn_ratio)

    def cut(self, module, head_ratio: float, ffn_ratio: float) -> None:
        import torch

        from compress.pruning.channels import kept_layers

        torch.manual_seed(self.seed)  # random importance: the same cut every time
        pruner = make_head_pruner(module, head_ratio=head_ratio, ffn_ratio=ffn_ratio, importance=self.importance,
                                  input_spec=self.input_spec, round_to=self.round_to,
                                  kept=kept_layers(module, self.num_classes, self.ignore))
        prune_heads(pruner, module)

    def cut_copy(self, module, ratio: float) -> None:
        self.cut(module, *self.ratios(ratio))

    def cut_step(self, module, ratio: float, step: int, steps: int) -> None:
        """This step's share: after it, ``(step + 1) / steps`` of each ratio is removed (of the original)."""
        def share(r: float) -> float:
            done, goal = r * step / steps, r * (step + 1) / steps
            return 0.0 if r == 0 else max(0.0, (goal - done) / (1 - done) - 1e-9)  # of what is left now

        head, ffn = self.ratios(ratio)
        self.cut(module, share(head), share(ffn))

