"""The openvino runtime, export to OpenVINO IR and NNCF quantization (backend: nncf)."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import numpy as np
import pytest

from compress.artifacts import Artifact
from compress.errors import MissingDependency, RecipeError, RuntimeFailure, install_hint
from compress.recipe import TargetConfig, parse_recipe
from compress.runtimes import RUNTIMES
from compress.steps.base import StepContext

ov = pytest.importorskip("openvino", reason="openvino is not installed (the openvino extra)")
pytestmark = pytest.mark.openvino


@pytest.fixture
def onnx_file(tmp_path: Path, tiny_module) -> Path:
    from compress.steps.export import export_onnx

    path = tmp_path / "tiny.onnx"
    export_onnx(tiny_module, (3, 8, 8), path, opset=17, dynamic_batch=True)
    return path


def _target(**options) -> TargetConfig:
    return TargetConfig(name="ov", runtime="openvino", threads=1, options=options)


def _load(path: Path, **options):
    art = Artifact(kind="onnx" if path.suffix == ".onnx" else "openvino", digest="t", path=path)
    return RUNTIMES.get("openvino").load(art, _target(**options))


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 8, 8), dtype=np.float32)


def _torch_logits(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


def test_f32_matches_torch_and_reports_the_compiled_precision(onnx_file, tiny_module):
    sess = _load(onnx_file, precision="f32")
    x = _inputs(5)
    np.testing.assert_allclose(sess.run({"pixel_values": x}), _torch_logits(tiny_module, x), rtol=1e-4, atol=1e-4)
    compiled = sess._get(1)
    assert sess.info["precision"] == "f32"
    assert "float32" in str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()


def test_default_precision_is_read_back_not_assumed(onnx_file):
    sess = _load(onnx_file)
    hint = str(sess._get(1).get_property("INFERENCE_PRECISION_HINT")).lower()
    expected = "bf16" if "bfloat16" in hint else ("f16" if "float16" in hint else "f32")
    assert sess.info["precision"] == expected
    assert sess.info["precision_requested"] == "default"


def test_throughput_mode_returns_every_result_in_order(onnx_file, tiny_module):
    sess = _load(onnx_file, precision="f32", hint="THROUGHPUT", requests=3)
    x = _inputs(7, seed=1)  # 7 over 3 requests: chunks of 3, 2, 2
    np.testing.assert_allclose(sess.run({"pixel_values": x}), _torch_logits(tiny_module, x), rtol=1e-4, atol=1e-4)


def test_throughput_target_is_timed_with_every_request_on_a_whole_batch(onnx_file):
    from compress.measure.timing import time_sessions

    sess = _load(onnx_file, precision="f32", hint="THROUGHPUT", requests=3)
    assert sess.info["timing"] == "concurrent" and sess.info["concurrent_requests"] == 3
    ms = sess.time_run_ms({"pixel_values": _inputs(4)})
    pool = sess._pools[-4]  # three full-batch requests were created and all ran
    assert len(pool) == 3 and ms > 0
    started = [np.array(r.get_input_tensor(0).data).shape for r in pool]
    assert started == [(4, 3, 8, 8)] * 3
    out = time_sessions({"ov": sess}, lambda n: {"pixel_values": _inputs(n)}, [4], rounds=2, min_round_s=0.01, warmup_max_s=0.0)
    assert out["ov"][4]["throughput_per_s"] == pytest.approx(4e3 / out["ov"][4]["p50_ms"])
    # a LATENCY session has no such timer: the profiler times its run() with the host clock
    assert not hasattr(_load(onnx_file, precision="f32"), "time_run_ms")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"precision": "int4"}, "unknown precision"),
        ({"hint": "FASTEST"}, "unknown hint 'FASTEST'; valid: LATENCY, THROUGHPUT"),
        ({"streams": 0}, "streams: Input should be greater than or equal to 1"),
        ({"requests": 0}, "requests: Input should be greater than or equal to 1"),
        ({"threads_per_stream": 2}, "unknown option"),
    ],
)
def test_bad_settings_are_clear_errors(onnx_file, options, match):
    # caught when the recipe is loaded (ValueError inside pydantic) or when the runtime loads
    with pytest.raises((RecipeError, ValueError), match=match):
        _load(onnx_file, **options)


def test_device_the_runtime_cannot_use_is_rejected_in_the_recipe():
    with pytest.raises(ValueError, match="cannot run on device 'cuda'"):
        TargetConfig(name="ov", runtime="openvino", device="cuda")


def test_absent_device_is_a_runtime_failure(onnx_file):
    core = ov.Core()
    if "NPU" in core.available_devices:
        pytest.skip("this machine has an NPU")
    art = Artifact(kind="onnx", digest="t", path=onnx_file)
    with pytest.raises(RuntimeFailure, match="device NPU is not available"):
        RUNTIMES.get("openvino").load(art, TargetConfig(name="n", runtime="openvino", device="npu"))


def test_precision_the_device_cannot_run(onnx_file, monkeypatch):
    monkeypatch.setattr(ov.Core, "get_property", lambda self, dev, name: ["FP32", "INT8"])
    with pytest.raises(RuntimeFailure, match="cannot run precision bf16"):
        _load(onnx_file, precision="bf16")


def test_missing_openvino_names_the_extra(monkeypatch):
    from compress.runtimes.openvino import import_openvino

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependency, match=re.escape(install_hint("openvino"))):
        import_openvino()


# --------------------------------------------------------------------------- NNCF and IR export


@pytest.fixture
def ctx(tmp_path, tiny_project):
    from compress.recipe import DataConfig
    from compress.sources.data import make_splits

    tiny_project(tmp_path)
    data = DataConfig(source="npz:tiny.npz", split={"train": 0.5, "calibration": 0.2, "tuning": 0.0,
                                                     "heldout": 0.3})
    splits = make_splits(data, tmp_path, 0)
    work = tmp_path / "work"
    work.mkdir()
    return StepContext(splits=splits, model_spec=None, input_shape=(3, 8, 8), seed=0, workdir=work)


def _fake_quantize_count(xml: Path) -> int:
    model = ov.Core().read_model(str(xml))
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def test_nncf_options_reach_nncf(onnx_file, ctx, tmp_path):
    from compress.quantization.nncf import IgnoredScopeConfig, NNCFConfig, quantize_nncf

    path, kind, meta = quantize_nncf(onnx_file, "onnx", NNCFConfig(subset_size=16), ctx, 0)
    assert kind == "openvino" and path.suffix == ".xml"
    full = _fake_quantize_count(path)
    assert full > 0 and meta["calibration_samples"] == 16
    ctx.workdir = tmp_path / "work2"
    ctx.workdir.mkdir()
    fewer, _, _ = quantize_nncf(
        onnx_file, "onnx",
        NNCFConfig(subset_size=16, ignored_scope=IgnoredScopeConfig(types=["Convolution"])), ctx, 0,
    )
    assert _fake_quantize_count(fewer) < full


def test_nncf_onnx_output_runs_in_onnxruntime_as_qdq(onnx_file, ctx):
    from compress.quantization.coverage import int8_coverage, source_op_counts
    from compress.quantization.nncf import NNCFConfig, quantize_nncf

    path, kind, _ = quantize_nncf(onnx_file, "onnx", NNCFConfig(subset_size=16, output="onnx"), ctx, 0)
    assert kind == "onnx"
    assert source_op_counts(path)["QuantizeLinear"] > 0
    assert int8_coverage(path).int8.get("Conv", 0) > 0


def test_accuracy_control_needs_a_tuning_split(onnx_file, ctx):
    from compress.errors import StepError
    from compress.quantization.nncf import AccuracyControlConfig, NNCFConfig, quantize_nncf

    cfg = NNCFConfig(subset_size=8, accuracy_control=AccuracyControlConfig(max_drop=1.0))
    with pytest.raises(StepError, match="tuning split"):
        quantize_nncf(onnx_file, "onnx", cfg, ctx, 0)


def test_export_to_openvino_ir_keeps_the_onnx_file_and_a_fingerprint(tiny_module, ctx):
    import json

    from compress.steps.export import ExportConfig
    from compress.steps.export import apply as export

    art = Artifact(kind="torch", digest="t", module=tiny_module)
    out = export(art, ExportConfig(format="openvino"), ctx)
    assert out.kind == "openvino"
    names = {p.name for p in out.files()}
    assert {"model.xml", "model.bin", "model.onnx", "openvino_fingerprint.json"} <= names
    fp = json.loads((out.path.parent / "openvino_fingerprint.json").read_text())
    assert fp["openvino"] == ov.__version__
    sess = _load(out.path, precision="f32")
    x = _inputs(2)
    np.testing.assert_allclose(sess.run({"pixel_values": x}), _torch_logits(tiny_module, x), rtol=1e-4, atol=1e-4)


def test_recipe_rules_for_openvino_models(recipe_dict):
    recipe_dict["targets"].append({"name": "ov", "runtime": "openvino", "threads": 1})
    recipe_dict["gate"].pop("reference", None)
    recipe_dict["variants"] = {
        "ir": {"steps": [{"export": {"format": "openvino"}}]},
        "ir-int8": {"from": "ir", "steps": [{"quantize": {"backend": "nncf"}}]},
    }
    recipe = parse_recipe(recipe_dict)
    assert recipe.final_kinds()["ir-int8"] == "openvino"
    recipe_dict["variants"]["ir-int8"]["steps"] = [{"quantize": {"mode": "static"}}]
    with pytest.raises(RecipeError, match="quantized with backend: nncf"):
        parse_recipe(recipe_dict)
    recipe_dict["variants"]["ir-int8"]["steps"] = [{"quantize": {"nncf": {"preset": "mixed"}}}]
    with pytest.raises(RecipeError, match="need backend: nncf"):
        parse_recipe(recipe_dict)


def test_throughput_session_lets_the_process_exit(onnx_file):
    """A THROUGHPUT session used async requests; the interpreter must still exit (no GIL deadlock
    between OpenVINO's stream threads and the compiled model's destructor)."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from compress.artifacts import Artifact\n"
        "from compress.recipe import TargetConfig\n"
        "from compress.runtimes import RUNTIMES\n"
        f"art = Artifact(kind='onnx', digest='t', path=Path({str(onnx_file)!r}))\n"
        "t = TargetConfig(name='ov', runtime='openvino', threads=2,"
        " options={'hint': 'THROUGHPUT', 'requests': 2})\n"
        "s = RUNTIMES.get('openvino').load(art, t)\n"
        "for _ in range(20):\n"
        "    s.run({'pixel_values': np.zeros((8, 3, 8, 8), np.float32)})\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")


RELEASED_ELSEWHERE = r'''
import gc, os, signal, sys, threading
from compress.artifacts import Artifact
from compress.recipe import TargetConfig
from compress.runtimes import RUNTIMES

target = TargetConfig(name="ov", runtime="openvino", threads=1, options={"hint": "THROUGHPUT"})
session = RUNTIMES.get("openvino").load(Artifact(kind="onnx", digest="t", path=sys.argv[1]), target)
box = [session]
del session
# released on another thread, as Python's garbage collector may do
worker = threading.Thread(target=lambda: (box[0].close(), box.clear(), gc.collect()))
worker.start()
worker.join()
try:
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: Python's handler runs on the alternate stack, if any
    signal.pause()
except KeyboardInterrupt:
    sys.exit(130)
'''


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="sigaltstack is checked on Linux")
def test_ctrl_c_after_an_openvino_session_stops_the_process_instead_of_crashing_it(onnx_file, tmp_path):
    """OpenVINO leaves an alternate signal stack installed on the compiling thread and unmaps it when
    the Core is released on another thread; the next signal then crashed the process (SIGSEGV, exit
    -11) instead of raising KeyboardInterrupt. The session keeps the thread's own stack."""
    import subprocess
    import sys

    import compress

    script = tmp_path / "released_elsewhere.py"
    script.write_text(RELEASED_ELSEWHERE)
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(compress.__file__).resolve().parents[1])}
    got = subprocess.run([sys.executable, str(script), str(onnx_file)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert got.returncode == 130, (got.returncode, got.stderr[-2000:])


def test_compiling_keeps_the_threads_alternate_signal_stack(onnx_file):
    import ctypes
    import sys

    from compress.runtimes.openvino import _SignalStack

    if not sys.platform.startswith("linux"):
        pytest.skip("sigaltstack is checked on Linux")
    libc = ctypes.CDLL(None, use_errno=True)

    def current() -> tuple:
        st = _SignalStack()
        assert libc.sigaltstack(None, ctypes.byref(st)) == 0
        return st.ss_sp, st.ss_flags, st.ss_size

    before = current()
    session = _load(onnx_file, hint="LATENCY")
    session.run({"input": _inputs(2)} if "input" in session.input_names else {session.input_names[0]: _inputs(2)})
    assert current() == before
    session.close()
