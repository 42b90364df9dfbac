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


class LineProgress:
    """A rich ``Progress`` stand-in for logs and CI (no terminal): each task still running after
    ``every_s`` seconds is reported as a log line (done/total, elapsed, time left at this pace) at
    most once per ``every_s``, so long work (fine-tuning, calibration, timing) shows it is moving
    without flooding a log. Supports what compress calls: add_task, advance, update, remove_task."""

    def __init__(self, log, every_s: float = 30.0, clock=None):
        import time

        self.log = log
        self.every_s = every_s
        self.clock = clock or time.monotonic
        self._tasks: dict[int, dict] = {}
        self._next = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._tasks.clear()

    def add_task(self, description: str, total: float | None = None, **_) -> int:
        self._next += 1
        now = self.clock()
        self._tasks[self._next] = {"description": description, "total": total, "completed": 0.0,
                                   "start": now, "said": now}
        return self._next

    def advance(self, task: int, advance: float = 1) -> None:
        t = self._tasks.get(task)
        if t is not None:
            t["completed"] += advance
            self._maybe_say(t)

    def update(self, task: int, *, completed: float | None = None, description: str | None = None,
               total: float | None = None, **_) -> None:
        t = self._tasks.get(task)
        if t is None:
            return
        if completed is not None:
            t["completed"] = completed
        if description is not None:
            t["description"] = description
        if total is not None:
            t["total"] = total
        self._maybe_say(t)

    def remove_task(self, task: int) -> None:
        self._tasks.pop(task, None)

    def _maybe_say(self, t: dict) -> None:
        now = self.clock()
        if now - t["said"] < self.every_s:
            return
        t["said"] = now
        elapsed = now - t["start"]
        done, total = t["completed"], t["total"]
        if total:
            left = f", about {_duration(elapsed * (total - done) / done)} left" if 0 < done < total else ""
            self.log(f"{t['description']}: {done:g}/{total:g} ({100 * done / total:.0f}%), "
                     f"{_duration(elapsed)} elapsed{left}")
        else:
            self.log(f"{t['description']}: {done:g} done, {_duration(elapsed)} elapsed")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
