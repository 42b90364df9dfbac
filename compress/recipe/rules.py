"""Rules between a recipe's keys, as generic loops over the plug-ins' declarations.

No rule here names a step or reads a step's fields: each step declares the artifact kinds it
accepts, the data roles and targets its config needs and any other check (``StepSpec``); each
runtime declares its devices and options (``RuntimeSpec``, checked by ``TargetConfig``). Every
problem is a message that starts with its key path; all of them are reported at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compress.runtimes.base import RUNTIMES
from compress.search.space import check_search
from compress.steps.base import STEP_ROLES, STEPS

if TYPE_CHECKING:
    from compress.recipe.schema import Recipe

EXAMPLE_FRACTIONS = {"train": 0.6, "calibration": 0.1, "tuning": 0.1}
KIND_NAMES = {"torch": "a torch", "onnx": "an ONNX", "openvino": "an OpenVINO IR", "tensorrt": "a TensorRT"}


def check_rules(recipe: Recipe) -> list[str]:
    """Every problem between the recipe's keys, each starting with its key path."""
    problems = _from_chains(recipe)
    if problems:  # the rules below walk the chains
        return problems
    kinds, broken = _step_order(recipe, problems)
    problems += _targets(recipe, kinds, broken)
    problems += _step_needs(recipe)
    problems += _other_keys(recipe)
    problems += check_search(recipe)
    return problems


def _steps(recipe: Recipe):
    """(key path, step name, spec, config) of every step of every variant."""
    for name, v in recipe.variants.items():
        for i, (step_name, cfg) in enumerate(v.step_list()):
            yield f"variants.{name}.steps[{i}].{step_name}", step_name, STEPS.get(step_name), cfg


def _from_chains(recipe: Recipe) -> list[str]:
    problems = []
    for name, v in recipe.variants.items():
        if v.from_ is None:
            continue
        if v.from_ not in recipe.variants:
            problems.append(
                f"variants.{name}.from: unknown variant {v.from_!r}; valid: {', '.join(recipe.variants)}"
            )
            continue
        seen, cur = {name}, v.from_
        while cur is not None and cur in recipe.variants:
            if cur in seen:
                problems.append(f"variants.{name}.from: `from` chain loops back to {cur!r}")
                break
            seen.add(cur)
            cur = recipe.variants[cur].from_
    return problems


def _step_order(recipe: Recipe, problems: list[str]) -> tuple[dict[str, str], set[str]]:
    """Each step must accept the kind the previous one produced. Returns each variant's final kind
    and the variants whose chain is broken (their final kind is unknown)."""
    start = recipe.start_kind
    kinds: dict[str, str] = {"baseline": start}
    broken: set[str] = set()
    for name in recipe.variant_order():
        v = recipe.variants[name]
        kind = kinds[v.from_] if v.from_ else start
        if v.from_ in broken:
            broken.add(name)
        for i, (step_name, cfg) in enumerate(v.step_list()):
            spec = STEPS.get(step_name)
            where = f"variants.{name}.steps[{i}].{step_name}"
            if kind not in spec.accepts:
                # keyed by the kind the variant has here: a torch model needs exporting first; an
                # onnx model is too late for a torch-only step
                hint = {
                    ("torch", "onnx"): "add `- export: {format: onnx}` before it",
                    ("onnx", "torch"): "move it before the export step",
                }.get((kind, min(spec.accepts)), "")
                problems.append(
                    f"{where}: needs {' or '.join(KIND_NAMES.get(k, k) for k in sorted(spec.accepts))} "
                    f"model, but the variant has {KIND_NAMES.get(kind, kind)} model at this point"
                    + (f"; {hint}" if hint else "")
                )
                broken.add(name)
                break
            refusal = spec.check_input(cfg, kind) if spec.check_input else None
            if refusal:
                problems.append(f"{where}: {refusal}")
                broken.add(name)
                break
            kind = spec.produces(cfg, kind)
        kinds[name] = kind
    return kinds, broken


def _targets(recipe: Recipe, kinds: dict[str, str], broken: set[str]) -> list[str]:
    problems = []
    names = [t.name for t in recipe.targets]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"targets: name {dup!r} is used twice; target names must be unique")
    for name, kind in kinds.items():
        if name != "baseline" and name not in broken and not any(
            kind in RUNTIMES.get(t.runtime).accepts for t in recipe.targets
        ):
            problems.append(
                f"variants.{name}: ends with {KIND_NAMES.get(kind, kind)} model, which no target can run "
                f"(targets: {', '.join(f'{t.name}={t.runtime}' for t in recipe.targets)})"
            )
    valid = ", ".join(sorted(names))
    runtimes = {t.name: t.runtime for t in recipe.targets}
    for name, v in recipe.variants.items():
        for t in v.targets or []:
            if t not in names:
                problems.append(f"variants.{name}.targets: unknown target {t!r}; valid: {valid}")
        chosen = [t for t in v.targets or [] if t in runtimes]
        if chosen and name not in broken and not any(kinds[name] in RUNTIMES.get(runtimes[t]).accepts for t in chosen):
            problems.append(
                f"variants.{name}.targets: none of {', '.join(f'{t}={runtimes[t]}' for t in chosen)} runs "
                f"{KIND_NAMES.get(kinds[name], kinds[name])} model, so the variant would never be timed; "
                "name a target that runs it"
            )
    for where, _step, spec, cfg in _steps(recipe):
        named = spec.targets(cfg)
        pairs = named.items() if isinstance(named, dict) else ((None, t) for t in named)
        for key, t in pairs:
            if t not in names:
                problems.append(f"{where}{'.' + key if key else ''}: unknown target {t!r}; valid: {valid}")
    ref, ref_target = recipe.gate.reference, recipe.gate.reference_target
    if ref_target is not None and ref_target not in names:
        problems.append(f"gate.reference_target: unknown target {ref_target!r}; valid: {valid}")
    elif (ref_target is not None and ref in kinds and ref not in broken
          and kinds[ref] not in RUNTIMES.get(runtimes[ref_target]).accepts):
        problems.append(
            f"gate.reference_target: {ref_target} ({runtimes[ref_target]}) cannot run the reference "
            f"{ref!r}, {KIND_NAMES.get(kinds[ref], kinds[ref])} model, so no speed-up could be "
            "measured; name a target that runs it"
        )
    return problems


def _step_needs(recipe: Recipe) -> list[str]:
    """The data roles each step's config declares, and each step's own check."""
    problems = []
    have = recipe.data.roles()
    for where, step_name, spec, cfg in _steps(recipe):
        needed = spec.roles(cfg)
        reasons = needed if isinstance(needed, dict) else {r: f"the {step_name} step reads data" for r in needed}
        for role, reason in reasons.items():
            if role not in STEP_ROLES:  # a plug-in bug, caught by the conformance tests too
                problems.append(f"{where}: the step declares data role {role!r}; steps may use {', '.join(STEP_ROLES)}")
            elif role not in have:
                key, sep, why = reason.partition(": ")
                if not sep or " " in key:
                    key, why = "", reason
                fix = (f"data.sources.{role}" if recipe.data.sources is not None
                       else f"data.split.{role} (e.g. {EXAMPLE_FRACTIONS[role]})")
                problems.append(
                    f"{where}{'.' + key if key else ''}: {why} on the {role} split, and the data has "
                    f"none; set {fix}"
                )
        if spec.check is not None:
            problems += [f"{where}: {p}" for p in spec.check(cfg, recipe)]
    return problems


def _other_keys(recipe: Recipe) -> list[str]:
    problems = []
    ref = recipe.gate.reference
    if ref != "baseline" and ref not in recipe.variants:
        problems.append(f"gate.reference: unknown variant {ref!r}; valid: baseline, {', '.join(recipe.variants)}")
    if recipe.gate.speedup_batch_sizes:
        missing = set(recipe.gate.speedup_batch_sizes) - set(recipe.profile.batch_sizes)
        if missing:
            problems.append(
                f"gate.speedup_batch_sizes: {sorted(missing)} are not in profile.batch_sizes "
                f"{recipe.profile.batch_sizes}"
            )
    problems += _baseline(recipe)
    problems += _modality(recipe)
    problems += _profile_shapes(recipe)
    return problems


def _modality(recipe: Recipe) -> list[str]:
    """Keys whose valid values depend on whether the data is text or images."""
    from compress.measure.corruptions import CORRUPTIONS
    from compress.measure.text_corruptions import TEXT_CORRUPTIONS

    text = recipe.data.is_text
    kind, valid = ("text", TEXT_CORRUPTIONS) if text else ("image", CORRUPTIONS)
    problems = []
    if recipe.data.drift and recipe.data.drift.corruption and recipe.data.drift.corruption not in valid:
        problems.append(
            f"data.drift.corruption: {recipe.data.drift.corruption!r} is not a corruption of {kind} data; "
            f"valid: {', '.join(sorted(valid))}"
        )
    wrong = [c for c in recipe.evaluate.robustness.corruptions or [] if c not in valid]
    if wrong:
        problems.append(f"evaluate.robustness.corruptions: {', '.join(wrong)} do not apply to {kind} data; "
                        f"valid: {', '.join(sorted(valid))}")
    if not text and recipe.model.input_shape is None and recipe.model.source.partition(":")[0] != "onnx":
        problems.append("model.input_shape: image data needs one sample's shape, e.g. [3, 32, 32]")
    if not text and recipe.model.tokenizer is not None:
        problems.append("model.tokenizer: a tokenizer applies to text data; remove it for image data")
    if text and recipe.model.input_shape is not None:
        problems.append("model.input_shape: text models take token arrays (data.text.max_length sets "
                        "their length); remove input_shape")
    return problems


def _profile_shapes(recipe: Recipe) -> list[str]:
    """Sequence lengths and real-length timing apply to text models only, on a split that exists."""
    profile = recipe.profile
    if not recipe.data.is_text:
        return [f"profile.{key}: only a text model has a sequence axis to profile; this recipe's data "
                f"is images (text data comes from csv:, tsv:, jsonl:, hf-dataset: or hf-disk:), so remove "
                f"profile.{key}"
                for key, given in (("seq_lens", profile.seq_lens is not None),
                                   ("real_lengths", profile.real_lengths is not None and profile.real_lengths.enabled))
                if given]
    real = profile.real_lengths_config(text=True)
    if real is not None and real.split not in recipe.data.roles():
        return [f"profile.real_lengths.split: the data has no {real.split} split; use one of "
                f"{', '.join(sorted(recipe.data.roles()))}"]
    return []


def _baseline(recipe: Recipe) -> list[str]:
    """How the baseline is obtained: a file, a checkpoint, or training on the train split."""
    model = recipe.model
    scheme, _, ref = model.source.partition(":")
    if scheme == "onnx":
        if recipe.baseline.train is not None:
            return ["baseline.train: an onnx: model cannot be trained; remove baseline.train"]
        return []
    problems = []
    if scheme == "hf":  # whether the directory has weights is checked with the files (load.check_files)
        return []
    if model.checkpoint is None and recipe.baseline.train is None:
        problems.append(
            "model.checkpoint: the model has no checkpoint and baseline.train is not set; give "
            "model.checkpoint, or add `baseline: {train: {epochs: 4}}` to train one on the train split"
        )
    if model.checkpoint is None and recipe.baseline.train is not None and "train" not in recipe.data.roles():
        problems.append("baseline.train: training the baseline needs a train split, and the data has "
                        "none; set data.split.train (e.g. 0.6)")
    if scheme == "torchvision":
        names = _torchvision_models()
        if names is not None and ref not in names:
            near = [n for n in names if n.startswith(ref[:3])] or [n for n in names if n.startswith("resnet")]
            problems.append(f"model.source: no torchvision model {ref!r}; e.g. {', '.join(near[:12])} "
                            "(torchvision.models.list_models() lists them all)")
    return problems


def _torchvision_models() -> list[str] | None:
    """torchvision's model names, without building one (None when torchvision is not installed)."""
    try:
        import torchvision
    except ImportError:
        return None
    return list(torchvision.models.list_models())
