"""The run directory's life: claimed under a hidden ``.<name>.partial`` name that records its owner
process, renamed when complete, removed on any failure or termination, swept when its owner died.

A SIGTERM (what CI systems send on cancel) is turned into :class:`compress.errors.Terminated`, so
cleanup runs as it does for Ctrl-C instead of the process dying with the directory half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from compress.errors import Terminated

OWNER_FILE = "owner.json"
PARTIAL_SUFFIX = ".partial"


def owner_record() -> dict:
    """Who owns a partial directory: this process, told apart from a later one with the same pid."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "process_started": psutil.Process().create_time()}


def owner_is_dead(owner: dict) -> bool:
    """True only when the owner is known to be gone: on this host, and its pid is free, a zombie, or
    now another process (started at another time)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        proc = psutil.Process(owner["pid"])
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # it exists and is not ours to look at: maybe alive
        return False
    recorded = owner.get("process_started")
    return isinstance(recorded, (int, float)) and abs(started - recorded) > 1.0


def sweep_stale_partials(root: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Remove ``root/.*.partial`` directories whose owner process is dead; returns those removed.

    A directory of a live run (here or on another host sharing ``root``) is left alone, and so is
    one without an owner record (written by an older compress, or being created right now)."""
    removed = []
    if not root.is_dir():
        return removed
    for d in sorted(root.glob(f".*{PARTIAL_SUFFIX}")):
        if not d.is_dir():
            continue
        try:
            owner = json.loads((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            log(f"left {d}: it has no owner record, so it may belong to a run still going "
                "(remove it by hand if no compress run is using this directory)")
            continue
        if isinstance(owner, dict) and owner_is_dead(owner):
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(d)
                log(f"removed {d.name}, left by a run that died (pid {owner.get('pid')})")
    return removed


def claim_run_dir(root: Path, stamp: str) -> tuple[Path, Path]:
    """``(final_dir, partial_dir)``: a free run-directory name under ``root``, claimed by creating its
    partial directory (atomic, so two runs started in the same second never share one)."""
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        name = stamp if n == 1 else f"{stamp}-{n}"
        n += 1
        final_dir, partial = root / name, root / f".{name}{PARTIAL_SUFFIX}"
        if final_dir.exists():
            continue
        try:
            partial.mkdir()
        except FileExistsError:  # another live run holds this name
            continue
        if final_dir.exists():  # finished and renamed between our check and our mkdir
            partial.rmdir()
            continue
        (partial / OWNER_FILE).write_text(json.dumps(owner_record()))
        return final_dir, partial


def finish_run_dir(partial: Path, final_dir: Path) -> None:
    """Rename the complete partial directory to its final name."""
    os.replace(partial, final_dir)  # first: a kill in between leaves a whole run, never an ownerless partial
    (final_dir / OWNER_FILE).unlink(missing_ok=True)


def _importing(frame) -> bool:
    """Whether the interrupted code is inside an import (any frame of importlib's machinery)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then arrive as they would have.

    For writes that must not be cut in half: a KeyboardInterrupt or Terminated raised inside
    SQLAlchemy's commit of an Optuna study surfaced as optuna's StorageInternalError (exit 3, "an
    unexpected error") instead of an interrupt (seen in CI). Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, h in before.items():
        if h is not None and h is not signal.SIG_IGN:
            signal.signal(s, lambda signum, _frame: held.append(signum))
    try:
        yield
    finally:
        for s, h in before.items():
            if h is not None and h is not signal.SIG_IGN:
                signal.signal(s, h)
        for s in dict.fromkeys(held):
            os.kill(os.getpid(), s)  # delivered again now, to the handler that was there


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` (like SIGINT raises KeyboardInterrupt).

    Only in the main thread and only over the default handler: a handler the caller installed
    (a notebook, a service) is theirs and stays."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        if _importing(frame):
            # raising inside a module's import, which a C extension may be running (torch's
            # pybind11 code), aborts the whole process: deliver the signal again a moment later
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
