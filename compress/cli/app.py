"""The `compress` app: consoles, the guard that maps every error to its exit code, global options.

Exit codes: 0 every gated variant passes; 1 a gate failed; 2 the recipe or its inputs are
invalid; 3 a step or runtime failed, or anything unexpected (a bug: one line, --debug for the
traceback); 130 interrupted (Ctrl-C); 141 the reader of stdout left (`| head`); 143 terminated
(SIGTERM). 1 never means anything but a gate.
"""

from __future__ import annotations

import contextlib
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
from compress.errors import DISTRIBUTION, CompressError, Terminated
from compress.results.gate import GATE_MODES
from compress.run import passive_openmp_wait

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
    cli = Path(__file__).resolve().parent
    package = cli.parent
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        path = Path(frame.filename).resolve()
        if path.is_relative_to(package) and not path.is_relative_to(cli):
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
passive_openmp_wait()  # before torch is imported (compress/run/__init__.py says why)


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


def _ci_outputs(results: dict, junit: Path | None, report_path: Path | None) -> None:
    """--junit and $GITHUB_STEP_SUMMARY, for `run` and `gate`."""
    from compress.results.ci import append_step_summary, summary_markdown, write_junit

    if junit is not None:
        write_junit(results, junit)
        err_console.print(f"JUnit: {junit}", highlight=False, soft_wrap=True, markup=False)
    append_step_summary(summary_markdown(results, report_path))


def _dim_log(message: str) -> None:
    err_console.print(f"[dim]{escape(message)}[/]", highlight=False)




def main() -> None:  # pragma: no cover
    app()
