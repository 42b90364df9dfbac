"""Measure a candidate's latency on a recipe target, the profiler's way: the candidate and the
unpruned model are exported to the artifact kind the target runs, and timed interleaved in the
same run, so machine noise hits both alike and the ratio of medians is what counts."""

from __future__ import annotations

from pathlib import Path

from compress.errors import StepError
from compress.sources.inputs import example_inputs


class LatencyProbe:
    """Times candidates against the unpruned ``reference`` module on ``target``."""

    def __init__(self, reference, target, input_spec, workdir: Path, *, batch_size: int,
                 rounds: int = 5, min_round_s: float = 0.1, seed: int = 0):
        from compress.runtimes.base import RUNTIMES

        self.target = target
        self.runtime = RUNTIMES.get(target.runtime)
        if "onnx" in self.runtime.accepts:
            self.kind = "onnx"
        elif "torch" in self.runtime.accepts:
            self.kind = "torch"
        else:
            raise StepError(
                f"prune.latency_budget.target {target.name!r} runs {target.runtime}, which takes "
                f"{', '.join(sorted(self.runtime.accepts))} models; pick a target that runs onnx or torch"
            )
        self.input_spec = input_spec
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.rounds = rounds
        self.min_round_s = min_round_s
        self.batch = example_inputs(self.input_spec, batch_size, fill="normal", seed=seed)
        self.n = 0
        self.reference = self._session(reference, "unpruned")

    def _session(self, module, label: str):
        from compress.artifacts import Artifact

        if self.kind == "onnx":
            from compress.steps.export import DEFAULT_OPSET, export_onnx

            path = self.workdir / f"{label}.onnx"
            export_onnx(module, example_inputs(self.input_spec, 2), path, opset=DEFAULT_OPSET,
                        dynamic_batch=True)
            if getattr(self.input_spec, "kind", "image") == "text":
                from compress.steps.export import transformer_fusions

                # as the export step does for text by default: candidates are timed as they would ship
                transformer_fusions(module, path, self.input_spec, [], 1e-3, lambda _m: None)
            art = Artifact(kind="onnx", digest=label, path=path)
        else:
            art = Artifact(kind="torch", digest=label, module=module)
        return self.runtime.load(art, self.target)

    def measure(self, module) -> dict:
        """{latency_ms, unpruned_ms, fraction} at this probe's batch size (medians, same run)."""
        from compress.measure.timing import time_sessions

        self.n += 1
        cand = self._session(module, f"candidate-{self.n}")
        try:
            t = time_sessions({"unpruned": self.reference, "candidate": cand}, lambda _bs: self.batch,
                              [self.batch_size], warmup=3, rounds=self.rounds,
                              min_round_s=self.min_round_s, device=self.target.device)
        finally:
            cand.close()
        ref = t["unpruned"][self.batch_size]["p50_ms"]
        got = t["candidate"][self.batch_size]["p50_ms"]
        return {"latency_ms": got, "unpruned_ms": ref, "fraction": got / ref}

    def measure_reference(self) -> float:
        """The unpruned model's median latency, in ms."""
        from compress.measure.timing import time_sessions

        t = time_sessions({"unpruned": self.reference}, lambda _bs: self.batch, [self.batch_size],
                          warmup=3, rounds=self.rounds, min_round_s=self.min_round_s,
                          device=self.target.device)
        return t["unpruned"][self.batch_size]["p50_ms"]

    def close(self) -> None:
        self.reference.close()
