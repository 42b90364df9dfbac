#!/usr/bin/env bash
# The GPU check: what compress does on one NVIDIA GPU, sized for about ten minutes (never timed: no GPU has run it yet). Run from the
# repository root in an environment with compress installed (pip install -e '.[dev,nvml]'; add
# '.[tensorrt]' and onnxruntime-gpu to check TensorRT). It never stops at a failure: every stage
# prints RAN, FAILED or NOT RUN (with why), and the summary at the end lists them all.
#   bash eval/gpu_check.sh [OUT_DIR]        (default /tmp/gpu-check)
set -u
OUT=${1:-/tmp/gpu-check}
mkdir -p "$OUT"
SUMMARY=()

stage() {  # stage NAME SECONDS COMMAND...: run it with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name"
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    SUMMARY+=("RAN     $name"); tail -n 15 "$OUT/$name.log"
  else
    local rc=$?
    SUMMARY+=("FAILED  $name (exit $rc$([ $rc = 124 ] && echo ", over ${limit}s"); see $OUT/$name.log)")
    tail -n 15 "$OUT/$name.log"
  fi
}
skip() { SUMMARY+=("NOT RUN $1: $2"); echo "== $1: not run: $2"; }

if ! command -v nvidia-smi >/dev/null; then
  echo "no nvidia-smi: this check needs an NVIDIA GPU and its driver"; exit 2
fi
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv | tee "$OUT/gpu.csv"

stage versions 60 python - <<'PY'
import importlib
for name in ("torch", "onnxruntime", "tensorrt", "pynvml"):
    try:
        m = importlib.import_module(name)
        print(f"{name}: {getattr(m, '__version__', 'installed')}")
    except Exception as err:
        print(f"{name}: not available ({type(err).__name__}: {err})")
import torch, onnxruntime as ort
print("torch CUDA:", torch.version.cuda, "available:", torch.cuda.is_available())
print("ORT providers:", ort.get_available_providers())
PY

HAS_TRT=$(python -c "import tensorrt" >/dev/null 2>&1 && echo 1 || echo 0)
HAS_ORT_TRT=$(python -c "import onnxruntime as o, sys; sys.exit('TensorrtExecutionProvider' not in o.get_available_providers())" 2>/dev/null && echo 1 || echo 0)
HAS_NVML=$(python -c "import pynvml" >/dev/null 2>&1 && echo 1 || echo 0)

# the unit tests that need a GPU / TensorRT (they skip with the reason where something is missing)
stage gpu-tests 300 python -m pytest -q -rs -m "gpu or tensorrt" tests/test_tensorrt.py tests/test_ort_tensorrt.py
[ "$HAS_TRT" = 1 ] || skip "tensorrt engines" "the tensorrt package is not installed (pip install -e '.[tensorrt]')"
[ "$HAS_ORT_TRT" = 1 ] || skip "ORT TensorRT provider" "onnxruntime has no TensorrtExecutionProvider (pip install onnxruntime-gpu >= 1.27 for TensorRT 11)"

if [ "$HAS_NVML" = 1 ]; then
  stage nvml-energy 60 python - <<'PY'
import torch
from compress.measure.energy import EnergyWindow, default_meter
meter = default_meter("cuda:0")
print("NVML available:", meter.available(), meter.reason)
x = torch.randn(4096, 4096, device="cuda")
window = EnergyWindow(meter)
with window:  # about 1000 4096^2 matmuls: long enough for NVML's ~100 ms counter updates
    for _ in range(1000):
        x @ x
    torch.cuda.synchronize()
r = window.result(n_inferences=1000)
print(r.to_dict())
assert r.to_dict()["measured"], r
PY
else
  skip nvml-energy "pynvml is not installed (pip install -e '.[nvml]')"
fi

# the whole pipeline: torch CUDA fp32/fp16/bf16, ORT CUDA and TensorRT providers, engines, CPU
stage recipe 420 compress run eval/gpu_check.yaml --out "$OUT/run" --no-cache -q
REPORT=$(ls -t "$OUT"/run/*/report.md 2>/dev/null | head -1)
if [ -n "$REPORT" ]; then
  echo "report: $REPORT"
  grep -iE "not profiled|not built|failed|cannot" "$REPORT" | head -20 || true
fi

echo; echo "== summary"
printf '%s\n' "${SUMMARY[@]}"
