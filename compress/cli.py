"""The `compress` command. Thin: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 every gated variant passes; 1 a gate failed; 2 the recipe or its inputs are
invalid; 3 a step or runtime failed, or anything unexpected (a bug: one line, --debug for the
traceback); 130 interrupted (Ctrl-C); 141 the reader of stdout left (`| head`); 143 terminated
(SIGTERM). 1 never means anything but a gate.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from compress import __version__
from compress.errors import DISTRIBUTION, CompressError, InputError, RecipeError, Terminated
from compress.results.gate import GATE_MODES

DEBUG_ENV = "COMPRESS_DEBUG"


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # not a real file (a test's buffer)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """`compress run ... | head`: the reader left. Exit 141 as for SIGPIPE (rich's own choice is 1,
        which here would read as a failed gate)."""
        _silence_stdout()
        raise SystemExit(128 + 13)


err_console = _Console(stderr=True)
out_console = _Console()


def _fail(err: CompressError) -> typer.Exit:
    kind = {2: "invalid input", 3: "failed"}.get(err.exit_code, "error")
    err_console.print(f"[bold red]error[/] ({kind}): {escape(str(err))}", highlight=False, soft_wrap=True)
    return typer.Exit(err.exit_code)


def _where(err: BaseException) -> str:
    """The innermost line of the library the exception passed through, e.g.
    compress/measure/timing.py:88 ("" when it was raised before reaching it)."""
    package = Path(__file__).resolve().parent
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(package) and path != Path(__file__).resolve():
            where = f"{path.relative_to(package.parent)}:{frame.lineno}"
    return where


def _unexpected(err: Exception, command: str | None, debug: bool) -> typer.Exit:
    """A bug (ours or a library's), not a verdict: one line naming it, exit 3."""
    if debug:
        err_console.print("".join(traceback.format_exception(err)), highlight=False, markup=False)
    message = " ".join(str(err).split())
    if len(message) > 300:
        message = message[:297] + "..."
    where = _where(err)
    what = f"compress {command}" if command else "compress"
    hint = "" if debug else f"; rerun with --debug (or {DEBUG_ENV}=1) for the traceback"
    err_console.print(
        f"[bold red]error[/] (unexpected): {escape(what)} failed with {type(err).__name__}: "
        f"{escape(message)}{f' (at {where})' if where else ''}{hint}, and please report it",
        highlight=False, soft_wrap=True,
    )
    return typer.Exit(3)


class _Guarded(TyperGroup):
    """Every command runs here: SIGTERM ends it like Ctrl-C (cleanup runs, exit 143); a CompressError
    exits with its code; anything else exits 3 with one line, never 1 (a gate verdict)."""

    def invoke(self, ctx):
        from compress.run.rundir import sigterm_raises

        try:
            with sigterm_raises():
                return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except BrokenPipeError:  # `compress ... | head`: the reader left; not a bug, not a verdict
            _silence_stdout()
            raise typer.Exit(128 + 13) from None  # 141, as for SIGPIPE
        except Terminated as err:
            err_console.print(f"{err}: stopped, nothing half-written left", highlight=False, markup=False)
            raise typer.Exit(err.exit_code) from None
        except CompressError as err:
            raise _fail(err) from None
        except Exception as err:
            raise _unexpected(err, ctx.invoked_subcommand, _debug(ctx)) from None


def _debug(ctx) -> bool:
    return bool(ctx.params.get("debug"))  # --debug, or $COMPRESS_DEBUG through the option's envvar


app = typer.Typer(
    name="compress",
    cls=_Guarded,
    help=(
        "Prune, quantize and export a trained model into variants, then prove on held-out data "
        "and the target hardware which one is worth deploying.\n\n"
        "Start with: compress run recipes/resnet.yaml"
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",  # docstring paragraphs are reflowed to the terminal
    pretty_exceptions_enable=False,
)
# With OpenMP's default active wait, two PyTorch threads on a busy 2-core machine slow down many
# times over (seen here on a ResNet-18 forward pass). Passive waiting costs little when
# the machine is idle. Set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"compress {__version__} (distribution {DISTRIBUTION})")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", envvar=DEBUG_ENV,
        help="On an unexpected error, print the full traceback (it still exits 3).")] = False,
) -> None:
    """Global options (the app's help is the Typer(help=...) above)."""


RecipeArg = Annotated[Path, typer.Argument(help="The recipe YAML file.", show_default=False)]
GateMode = Enum("GateMode", {m: m for m in GATE_MODES}, type=str)


@app.command()
def run(
    recipe: RecipeArg,
    out: Annotated[Path | None, typer.Option(help="Where run directories go (default: the recipe's report.dir).")] = None,
    cache: Annotated[bool, typer.Option(help="Reuse artifacts built by earlier runs of the same steps.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Also write each gate check as a JUnit test case to this file.")] = None,
) -> None:
    """Build every variant of RECIPE, evaluate and profile it, write the report, apply the gate.

    Writes `runs/<name>/<timestamp>/` with recipe.yaml, environment.json, artifacts/, results.json
    and report.md. Exits 0 when every gated variant passes, 1 when a gate fails, 2 for an invalid
    recipe or input, 3 when a step or runtime fails or anything unexpected happens, 143 on
    SIGTERM (nothing half-written is left). With --junit, each gate check is also written
    as a JUnit test case; when $GITHUB_STEP_SUMMARY is set, the verdict and table are appended to it.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from compress.recipe import load_recipe
    from compress.run.pipeline import run_recipe

    try:
        rec = load_recipe(recipe)
    except CompressError as err:
        raise _fail(err) from None
    import time

    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            err_console.print(f"[dim]{time.perf_counter() - t0:7.1f}s  {escape(msg)}[/]", highlight=False)

    progress = None
    if not quiet:
        progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=err_console, transient=True,
        )
    try:
        if progress is not None:
            with progress:
                outcome = run_recipe(rec, recipe, out_dir=out, use_cache=cache, progress=progress, log=log)
        else:
            outcome = run_recipe(rec, recipe, out_dir=out, use_cache=cache, log=log)
    except CompressError as err:
        raise _fail(err) from None
    _print_summary(outcome)
    _ci_outputs(outcome.results, junit, outcome.run_dir / "report.md")
    raise typer.Exit(outcome.exit_code)


def _print_summary(outcome) -> None:
    from compress.report.markdown import comparison_table, verdict_section

    res = outcome.results
    out_console.print(verdict_section(res), highlight=False, markup=False)
    for t in res["targets"]:
        out_console.print(f"\nTarget {t['name']} ({t['runtime']} on {t['device']}):", highlight=False, markup=False)
        out_console.print(comparison_table(res, t["name"]), highlight=False, soft_wrap=True, markup=False)
    out_console.print(f"\nReport: {outcome.run_dir / 'report.md'}", highlight=False, soft_wrap=True, markup=False)


@app.command()
def validate(recipe: RecipeArg) -> None:
    """Check RECIPE without running anything: every problem is listed with its key path. Exit 2 if invalid."""
    from compress.recipe import load_recipe

    try:
        rec = load_recipe(recipe)
    except RecipeError as err:
        err_console.print(f"[bold red]{escape(str(recipe))} is invalid[/]", highlight=False)
        for p in err.problems if len(err.problems) > 1 or "\n" not in str(err) else [str(err)]:
            err_console.print(f"  {p}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    except CompressError as err:
        raise _fail(err) from None
    kinds = rec.final_kinds()
    out_console.print(f"{recipe}: valid ({len(rec.variants)} variants, {len(rec.targets)} target(s))",
                      highlight=False, markup=False)
    for name in rec.variant_order():
        v = rec.variants[name]
        steps = " → ".join(n for n, _ in v.step_list()) or "(no steps)"
        if v.from_:
            steps = f"[{v.from_}] → {steps}"
        out_console.print(f"  {name}: {steps} ⇒ {kinds[name]}", highlight=False, markup=False)


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema (point your editor's YAML plug-in at it for completion)."""
    from compress.recipe import recipe_json_schema

    typer.echo(json.dumps(recipe_json_schema(), indent=2))


def _ci_outputs(results: dict, junit: Path | None, report_path: Path | None) -> None:
    """--junit and $GITHUB_STEP_SUMMARY, for `run` and `gate`."""
    from compress.results.ci import append_step_summary, summary_markdown, write_junit

    try:
        if junit is not None:
            write_junit(results, junit)
            err_console.print(f"JUnit: {junit}", highlight=False, soft_wrap=True, markup=False)
        append_step_summary(summary_markdown(results, report_path))
    except CompressError as err:
        raise _fail(err) from None


ResultsArg = Annotated[Path, typer.Argument(
    help="A results.json, the run directory holding it, or a report directory (its newest run).",
    show_default=False)]


@app.command()
def gate(
    results: ResultsArg,
    max_accuracy_drop: Annotated[float | None, typer.Option(help="Override gate.max_accuracy_drop (points).")] = None,
    min_speedup: Annotated[float | None, typer.Option(help="Override gate.min_speedup (x).")] = None,
    speedup_batch_size: Annotated[list[int] | None, typer.Option(
        "--speedup-batch-size", help="Override gate.speedup_batch_sizes (repeat for several).")] = None,
    mode: Annotated[GateMode | None, typer.Option(help="Override gate.mode.", show_default=False)] = None,
    rule: Annotated[list[str] | None, typer.Option(
        help="Override any other gate rule, NAME=VALUE (e.g. max_worst_class_drop=5); repeatable.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write each gate check as a JUnit test case to this file.")] = None,
) -> None:
    """Re-apply the gate (possibly stricter) to an existing run's results, without rerunning anything.

    Options override the recipe's gate rules. Nothing in the run directory is changed. Exits 0 when
    every gated variant passes, 1 when a gate fails, 2 for invalid results or options, 3 when the
    run had a variant that failed to build or run.
    """
    from compress.report.markdown import verdict_section
    from compress.results.gate import apply_gate, override_gate
    from compress.results.schema import load_results

    overrides: dict = {"max_accuracy_drop": max_accuracy_drop, "min_speedup": min_speedup,
                       "speedup_batch_sizes": speedup_batch_size or None,
                       "mode": mode.value if mode is not None else None}
    try:
        for item in rule or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise RecipeError(f"--rule {item!r} is not NAME=VALUE, e.g. --rule max_worst_class_drop=5")
            overrides[key.strip()] = value.strip()
        res, file = load_results(results)
        recipe_gate = res["recipe"].get("gate", {})
        new_gate = override_gate(recipe_gate, overrides)
    except CompressError as err:
        raise _fail(err) from None
    for key in ("max_accuracy_drop", "min_speedup"):
        old, new = recipe_gate.get(key), new_gate.get(key)
        looser = old is not None and (new is None or (new > old if key == "max_accuracy_drop" else new < old))
        if looser:
            err_console.print(f"note: {key} = {new} is looser than the recipe's {old}", highlight=False, markup=False)
    summary = apply_gate(res, new_gate)
    out_console.print(f"Gate re-applied to {file}", highlight=False, soft_wrap=True, markup=False)
    out_console.print(verdict_section(res), highlight=False, soft_wrap=True, markup=False)
    for name, v in res["variants"].items():
        for c in v["gate"]["checks"]:
            out_console.print(f"  {'PASS' if c['passed'] else 'FAIL'}  {name}: {c['detail']}",
                              highlight=False, markup=False, soft_wrap=True)
    _ci_outputs(res, junit, None)
    raise typer.Exit(summary["exit_code"])


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="The reference run (e.g. main's last run): results.json or its directory.",
                                          show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="The candidate run (e.g. this branch's).", show_default=False)],
    max_accuracy_drop: Annotated[float | None, typer.Option(
        help="Points of held-out top-1 a model may lose from A to B (default: B's gate.max_accuracy_drop).")] = None,
    max_speedup_loss: Annotated[float | None, typer.Option(
        help="Fraction of A's speed-up a variant may lose, judged when the intervals do not overlap "
        "(off by default: on shared machines speed-ups move between runs).")] = None,
    max_latency_increase: Annotated[float | None, typer.Option(
        help="Fraction p50 latency may grow (off by default: absolute times move between machines).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the Markdown here.")] = None,
) -> None:
    """Markdown diff of the same variants in two runs, with intervals.

    Accuracy and latency changes with intervals, new and vanished variants. Exits 1 when a change
    is a regression beyond the tolerances, 2 for invalid input. Appends the diff to
    $GITHUB_STEP_SUMMARY when set.
    """
    from compress.results.ci import append_step_summary
    from compress.results.compare import Tolerances, compare_runs, render_comparison
    from compress.results.schema import load_results

    try:
        if max_speedup_loss is not None and not 0 <= max_speedup_loss < 1:
            raise RecipeError(f"--max-speedup-loss is a fraction in [0, 1), got {max_speedup_loss}")
        if max_latency_increase is not None and max_latency_increase < 0:
            raise RecipeError(f"--max-latency-increase is a fraction >= 0 (0.2 = 20% slower), got {max_latency_increase}")
        if max_accuracy_drop is not None and max_accuracy_drop < 0:
            raise RecipeError(f"--max-accuracy-drop is a tolerance in points and must be >= 0, got {max_accuracy_drop}")
        a, file_a = load_results(run_a)
        b, file_b = load_results(run_b)
        tol = Tolerances.from_results(b, max_accuracy_drop=max_accuracy_drop, max_speedup_loss=max_speedup_loss,
                                      max_latency_increase=max_latency_increase)
        cmp = compare_runs(a, b, tolerances=tol, seed=b["recipe"].get("seed", 0))
        cmp.notes.insert(0, f"A: `{file_a}` (started {a['run']['started']}); "
                            f"B: `{file_b}` (started {b['run']['started']})")
        text = render_comparison(cmp)
        if output is not None:
            try:
                output.write_text(text)
            except OSError as err:
                raise InputError(f"cannot write {output}: {err}") from None
        append_step_summary(text)
    except CompressError as err:
        raise _fail(err) from None
    typer.echo(text)
    raise typer.Exit(cmp.exit_code)


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
    try:
        rec = load_recipe(recipe)
        doc = run_for_recipe(rec, recipe, out, variant=variant, ratios=sorted(parsed), samples=samples,
                             max_drop_points=max_drop, log=_dim_log)
    except CompressError as err:
        raise _fail(err) from None
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
    input_shape: Annotated[str | None, typer.Option(help="One sample's shape, e.g. 3,224,224 (read from an ONNX file when fixed).")] = None,
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
            plan={"rounds": rounds, "min_round_s": min_round_s, "max_cv": max_cv},
            log=_dim_log,
        )
    except json.JSONDecodeError as err:
        raise _fail(InputError(f"--model-kwargs is not valid JSON: {err}")) from None
    except CompressError as err:
        raise _fail(err) from None
    out_console.print(render(result, requests_per_day, max_cv), highlight=False, soft_wrap=True, markup=False)
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(result, indent=1, default=str))
        except OSError as err:
            raise _fail(InputError(f"cannot write --json {json_out}: {err}")) from None
    if not any("latency" in e for e in result["targets"].values()):
        raise typer.Exit(3)


def _dim_log(message: str) -> None:
    err_console.print(f"[dim]{escape(message)}[/]", highlight=False)


def main() -> None:  # pragma: no cover
    app()
