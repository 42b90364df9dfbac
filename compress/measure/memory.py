"""Peak memory of a loaded model, measured in a fresh subprocess.

Measuring in the profiling process would be wrong twice over: every other session loaded there
counts too, and memory freed by one session stays in the allocator and is silently reused by the
next. So each (variant, target) gets its own Python process, which

1. imports the runtime's library (onnxruntime or torch) and reads its resident set size (RSS);
2. resets the kernel's peak-RSS counter (``/proc/self/clear_refs``; Linux), so the import's own
   peak does not count;
3. loads the artifact with the target's runtime and runs every batch size a few times;
4. reads the peak RSS (``VmHWM``) and, on CUDA with torch, ``torch.cuda.max_memory_allocated``.

``session_peak_bytes`` = peak RSS - RSS before loading: what loading and running this model costs
on top of an interpreter that has already imported the runtime. Where the peak counter cannot be
reset (not Linux), ``ru_maxrss`` is used and the result says so (``method``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        return None
    return None


def _rss_bytes() -> int:
    rss = _status_bytes("VmRSS")
    if rss is not None:
        return rss
    import psutil

    return int(psutil.Process().memory_info().rss)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def _peak_rss_bytes(reset_ok: bool) -> int:
    hwm = _status_bytes("VmHWM") if reset_ok else None
    if hwm is not None:
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _child(spec: dict) -> dict:
    """Runs inside the subprocess: load, run, report."""
    import importlib

    import compress.runtimes  # noqa: F401  (registers the runtimes; their libraries load lazily)
    from compress.runtimes.base import RUNTIMES

    for module in RUNTIMES.get(spec["target"]["runtime"]).imports:  # declared at registration
        importlib.import_module(module)
    if spec.get("model_spec") and spec["model_spec"]["source"].startswith("torchvision:"):
        importlib.import_module("torchvision")
    from compress.artifacts import Artifact
    from compress.runtimes.target import TargetConfig
    from compress.sources.inputs import InputSpec
    from compress.sources.models import ModelSpec

    target = TargetConfig.model_validate(spec["target"])
    model_spec = None
    if spec.get("model_spec"):
        ms = spec["model_spec"]
        model_spec = ModelSpec(ms["source"], ms["kwargs"], Path(ms["base_dir"]))
    art = Artifact(kind=spec["kind"], digest="memory", path=Path(spec["path"]), model_spec=model_spec)
    # text: examples at the full max_length, the worst case; input_shape: an image sample's shape
    inputs = (InputSpec.from_dict(spec["input_spec"]) if "input_spec" in spec
              else InputSpec.image(spec["input_shape"]))
    batches = {bs: inputs.example(bs, fill="normal") for bs in spec["batch_sizes"]}
    rss_before = _rss_bytes()
    reset_ok = _reset_peak()
    session = RUNTIMES.get(target.runtime).load(art, target)
    rss_loaded = _rss_bytes()
    # torch's counters see what torch allocates: the torch runtime's model and activations, the
    # tensorrt runtime's I/O buffers (TensorRT's own activation memory is reported beside them)
    gpu_torch = target.runtime in ("torch", "tensorrt") and target.device == "cuda"
    device = f"cuda:{int(getattr(target.options, 'device_id', 0))}"  # CUDA's numbering (CUDA_VISIBLE_DEVICES applies)
    if gpu_torch:
        import torch

        torch.cuda.reset_peak_memory_stats(device)
    for bs in spec["batch_sizes"]:
        for _ in range(spec["repeats"]):
            session.run(batches[bs])
    peak = _peak_rss_bytes(reset_ok)
    out = {
        "measured": True,
        "method": "VmHWM after reset (fresh process)" if reset_ok else "ru_maxrss (fresh process, includes imports)",
        "rss_before_load_bytes": rss_before,
        "load_bytes": max(rss_loaded - rss_before, 0),
        "peak_rss_bytes": peak,
        "session_peak_bytes": max(peak - rss_before, 0) if reset_ok else peak,
        "batch_sizes": spec["batch_sizes"],
    }
    if gpu_torch:
        import torch

        out["device_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["device_method"] = f"torch.cuda.max_memory_allocated({device!r})"
        if target.runtime == "tensorrt":
            out["device_method"] += " (I/O buffers only)"
            out["engine_device_memory_bytes"] = session.info.get("engine_device_memory_bytes")
    elif target.device != "cpu":
        out["device_peak_bytes"] = None
        out["device_method"] = f"not measured: no peak device-memory counter for {target.runtime}"
    return out


def measure_memory(artifact, target, input_spec, batch_sizes: list[int], *, repeats: int = 3,
                   timeout_s: float = 300) -> dict:
    """Peak memory of ``artifact`` on ``target`` fed examples of ``input_spec`` (an InputSpec, or
    an image sample's shape), or ``{"measured": False, "reason": ...}``."""
    from compress.sources.inputs import as_input_spec
    with tempfile.TemporaryDirectory(prefix="compress-mem-") as tmp:
        path = artifact.path
        model_spec = None
        if artifact.kind == "torch":
            if artifact.model_spec is None:
                return {"measured": False, "reason": "the torch model has no architecture to rebuild"}
            if path is None:
                from compress.artifacts import save_torch

                path = Path(tmp) / "model.pt"
                save_torch(artifact.module, path)
            ms = artifact.model_spec
            model_spec = {"source": ms.source, "kwargs": ms.kwargs, "base_dir": str(ms.base_dir)}
        if path is None:
            return {"measured": False, "reason": f"the {artifact.kind} artifact has no file"}
        spec = {
            "kind": artifact.kind, "path": str(path), "model_spec": model_spec,
            "target": target.model_dump(mode="json"), "input_spec": as_input_spec(input_spec).to_dict(),
            "batch_sizes": list(batch_sizes), "repeats": repeats,
        }
        return run_child(spec, timeout_s=timeout_s)


def measure_memory_many(jobs: dict, input_spec, batch_sizes: list[int], *, workers: int = 2,
                        log=None) -> dict:
    """``{key: (artifact, target)}`` -> ``{key: memory}``; a few subprocesses at a time (each
    measures only itself, so running them side by side does not change the numbers)."""
    from concurrent.futures import ThreadPoolExecutor

    if log is not None and jobs:
        log(f"measuring peak memory of {len(jobs)} model/target pair(s), one subprocess each ...")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {key: pool.submit(measure_memory, art, target, input_spec, batch_sizes)
                   for key, (art, target) in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


def run_child(spec: dict, *, timeout_s: float = 300) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "compress.measure.memory"], input=json.dumps(spec), capture_output=True,
            text=True, timeout=timeout_s, env=env,
        )
    except subprocess.TimeoutExpired:
        return {"measured": False, "reason": f"the memory probe took more than {timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"measured": False, "reason": f"the memory probe failed: {tail}"}
    return json.loads(lines[-1])


def main() -> None:  # pragma: no cover (runs in the subprocess; exercised by tests through run_child)
    spec = json.loads(sys.stdin.read())
    try:
        result = _child(spec)
    except Exception as err:  # report, never crash the parent's run
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
