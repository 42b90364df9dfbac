"""Progress reporting that library code can use without knowing whether a terminal is there."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def track(progress, description: str, total: int | None):
    """Yield ``advance(n=1)``; shows a rich progress bar when ``progress`` is a rich Progress."""
    if progress is None:
        yield lambda n=1: None
        return
    task = progress.add_task(description, total=total)
    try:
        yield lambda n=1: progress.advance(task, n)
    finally:
        progress.remove_task(task)
