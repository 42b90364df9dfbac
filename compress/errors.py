"""One exception hierarchy. Every message says what went wrong and what to do about it.

The CLI maps these to exit codes: ``RecipeError``/``InputError`` -> 2, ``StepError``/``RuntimeFailure`` -> 3.
"""

from __future__ import annotations


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
            f"Install it with: pip install 'compress[{extra}]'"
        )
        self.package = package
        self.extra = extra


class StepError(CompressError):
    """A compression step failed while building a variant. Exit code 3."""

    exit_code = 3


class RuntimeFailure(CompressError):
    """A runtime could not load or run an artifact. Exit code 3."""

    exit_code = 3
