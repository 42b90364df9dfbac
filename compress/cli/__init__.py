"""The `compress` command. Thin: parse arguments, call the library, map errors to exit codes.

``app`` (compress/cli/app.py) holds the error guard and global options; each command module
registers its commands on it: run.py (run, validate, schema), results.py (gate, compare),
tools.py (sensitivity, profile), search.py (search).
"""

from compress.cli.app import app, main  # isort: skip
from compress.cli import run  # noqa: F401, I001  isort: skip  (the --help order: run first)
from compress.cli import results, search, tools  # noqa: F401, I001  isort: skip

__all__ = ["app", "main"]
