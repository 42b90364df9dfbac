"""One exception hierarchy. Every message says what went wrong and what to do about it.

The CLI maps these to exit codes: ``RecipeError``/``InputError`` -> 2, ``StepError``/``RuntimeFailure`` -> 3,
``Terminated`` -> 128 + the signal (143 for SIGTERM); anything else is a bug and exits 3 as well.
"""

from __future__ import annotations

from pathlib import Path

# The name on the package index. ``compress`` there is an unrelated project; the import and the
# command stay ``compress``.
DISTRIBUTION = "compress-models"


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` to this installation: from the source checkout this
    code runs from when there is one, else from the package index."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e '{checkout}[{extra}]'"
    return f"pip install '{DISTRIBUTION}[{extra}]'"


class CompressError(Exception):
    """Base class of every error compress raises on purpose."""

    exit_code = 3


class RecipeError(CompressError):
    """The recipe is invalid: a key, a value, or a rule between keys. Exit code 2."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


class InputError(CompressError):
    """An input the recipe points at is unusable: a missing file, a checkpoint that does not fit,
    an image folder with no images. Exit code 2."""

    exit_code = 2


class MissingDependency(CompressError):
    """An optional library is needed but not installed. The message names the extra. Exit code 2."""

    exit_code = 2

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: {install_hint(extra)}"
        )
        self.package = package
        self.extra = extra


class StepError(CompressError):
    """A compression step failed while building a variant. Exit code 3."""

    exit_code = 3


class RuntimeFailure(CompressError):
    """A runtime could not load or run an artifact. Exit code 3."""

    exit_code = 3


class Terminated(BaseException):
    """The process was told to stop (SIGTERM). A BaseException like KeyboardInterrupt, so that no
    ``except Exception`` on the way mistakes it for a failed step. Exit code 128 + the signal."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum
