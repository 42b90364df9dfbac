"""`compress sensitivity` and `compress profile`: tools around one model, without a full run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from compress.cli.app import (
    RecipeArg,
    _dim_log,
    _fail,
    app,
    out_console,
)
from compress.errors import InputError


@app.command()
def sensitivity(
    recipe: RecipeArg,
    variant: Annotated[str | None, typer.Option(help="Mirror this variant's prune settings (default: the first that prunes).")] = None,
    ratios: Annotated[str, typer.Option(help="Comma-separated fractions of a layer's channels to remove.")] = "0.25,0.5,0.75",
    samples: Annotated[int, typer.Option(min=10, help="Images of the calibration (else train) split to score on.")] = 500,
    max_drop: Annotated[float, typer.Option(min=0, help="Top-1 points a layer may lose for its suggested ratio.")] = 1.0,
    out: Annotated[Path, typer.Option(help="Where sensitivity.json and sensitivity.png go.")] = Path("sensitivity"),
) -> None:
    """Per-layer pruning sensitivity of RECIPE's baseline, and suggested per-layer ratios.

    Top-1 vs ratio for each prunable layer (one at a time, on a slice of calibration data, never
    held-out), a plot, and suggested non-uniform ratios to paste into a prune step's
    `layer_ratios`."""
    import yaml

    from compress.pruning.sensitivity import run_for_recipe
    from compress.recipe import load_recipe

    try:
        parsed = [float(r) for r in ratios.split(",") if r.strip()]
    except ValueError:
        raise _fail(InputError(f"--ratios {ratios!r} must be numbers like 0.25,0.5,0.75")) from None
    if not parsed or any(not 0 < r < 1 for r in parsed):
        raise _fail(InputError(f"--ratios {ratios!r}: each must be in (0, 1)"))
    rec = load_recipe(recipe)
    doc = run_for_recipe(rec, recipe, out, variant=variant, ratios=sorted(parsed), samples=samples,
                         max_drop_points=max_drop, log=_dim_log)
    head = "| layer | " + " | ".join(f"{r:g}" for r in doc["ratios"]) + " | suggested |"
    lines = [f"Top-1 on {doc['split']} (n={doc['n']}); unpruned {doc['unpruned_top1']:.2f}%", "",
             head, "|" + "---|" * (len(doc["ratios"]) + 2)]
    for name, accs in doc["layers"].items():
        lines.append(f"| {name} | " + " | ".join(f"{a:.1f}" for a in accs)
                     + f" | {doc['suggested_layer_ratios'][name]:g} |")
    out_console.print("\n".join(lines), highlight=False, markup=False)
    out_console.print(f"\nSuggested (drop <= {max_drop:g} points per layer), for a prune step:", highlight=False, markup=False)
    out_console.print(yaml.safe_dump({"layer_ratios": doc["suggested_layer_ratios"]}, sort_keys=False),
                      highlight=False, markup=False)
    out_console.print(f"Plot: {out / 'sensitivity.png'}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def profile(
    model: Annotated[str, typer.Argument(help="An .onnx file, or torchvision:NAME / python:FILE.py:FACTORY.", show_default=False)],
    target: Annotated[list[str], typer.Option(help="RUNTIME[:DEVICE][,KEY=VALUE...], e.g. onnxruntime:cpu,threads=2,instance=c7i.large; repeat for several.")] = ["onnxruntime:cpu"],  # noqa: B006
    batch_size: Annotated[list[int], typer.Option("--batch-size", "-b", help="Repeat for several.")] = [1, 32],  # noqa: B006
    input_shape: Annotated[str | None, typer.Option(help="One sample's shape, e.g. 3,224,224 (read from an ONNX file when fixed; 3,224,224 for torchvision:NAME).")] = None,
    seq_len: Annotated[list[int] | None, typer.Option("--seq-len", help="Text models: tokens per sample; repeat for a batch size x length grid (default 128).")] = None,
    model_kwargs: Annotated[str | None, typer.Option(help="JSON arguments of a torch model factory, e.g. '{\"num_classes\": 10}'.")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="state_dict for a torch model source.")] = None,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds.")] = 7,
    min_round_s: Annotated[float, typer.Option(help="Timed seconds per target per round.")] = 0.2,
    max_cv: Annotated[float, typer.Option(help="Round-to-round variation above which rounds are added.")] = 0.1,
    memory: Annotated[bool, typer.Option(help="Measure peak memory in a subprocess.")] = True,
    requests_per_day: Annotated[float | None, typer.Option(help="Traffic for the monthly cost.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write every number here.")] = None,
) -> None:
    """Profile one model file on one or more targets, without a recipe.

    Latency percentiles with intervals, throughput, stability, peak memory, energy where
    measurable, and cost."""
    from compress.run.profile_model import (
        load_model,
        parse_shape,
        parse_target,
        profile_model,
        render,
    )

    try:
        targets = [parse_target(t) for t in target]
        kwargs = json.loads(model_kwargs) if model_kwargs else None
        art, shape = load_model(model, parse_shape(input_shape), kwargs, checkpoint)
        result = profile_model(
            art, shape, targets, batch_size, memory=memory, requests_per_day=requests_per_day,
            plan={"rounds": rounds, "min_round_s": min_round_s, "max_cv": max_cv}, seq_lens=seq_len,
            log=_dim_log,
        )
    except json.JSONDecodeError as err:
        raise _fail(InputError(f"--model-kwargs is not valid JSON: {err}")) from None
    out_console.print(render(result, requests_per_day, max_cv), highlight=False, soft_wrap=True, markup=False)
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(result, indent=1, default=str))
        except OSError as err:
            raise _fail(InputError(f"cannot write --json {json_out}: {err}")) from None
    if not any("latency" in e for e in result["targets"].values()):
        raise typer.Exit(3)


