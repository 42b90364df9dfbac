import os
import sys
import types
from pathlib import Path

import pytest

from compress.measure.energy import (
    NVML_INSTALL_HINT,
    EnergyMeter,
    EnergyReading,
    EnergyUnavailable,
    EnergyWindow,
    MeterUnavailableError,
    NvmlMeter,
    RaplMeter,
    default_meter,
)


def write_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int = 1_000_000) -> Path:
    zone_dir = root / zone
    zone_dir.mkdir(parents=True)
    (zone_dir / "name").write_text(f"{name}\n")
    (zone_dir / "energy_uj").write_text(f"{energy_uj}\n")
    (zone_dir / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone_dir


def set_energy(zone_dir: Path, energy_uj: int) -> None:
    (zone_dir / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    """Two packages, a core sub-domain, an MMIO view and a psys zone: only the packages count."""
    write_zone(tmp_path, "intel-rapl:0", "package-0", 100_000)
    write_zone(tmp_path, "intel-rapl:0:0", "core", 50_000)
    write_zone(tmp_path, "intel-rapl:1", "package-1", 200_000)
    write_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 100_000)
    write_zone(tmp_path, "intel-rapl:2", "psys", 900_000)
    return tmp_path


class CountingMeter:
    """A fake meter whose counter rises by ``step_j`` at every read."""

    name = "fake"
    reason = ""

    def __init__(self, step_j: float = 2.0):
        self.step_j = step_j
        self.total_j = 0.0

    def available(self) -> bool:
        return True

    def read_j(self) -> float:
        self.total_j += self.step_j
        return self.total_j


def test_rapl_sums_package_zones_only(powercap: Path):
    meter = RaplMeter(powercap)
    assert meter.available(), meter.reason
    assert meter.reason == ""
    assert meter.zones == ["package-0", "package-1"]
    # 100_000 uJ + 200_000 uJ; the sub-domain, the MMIO view and psys would double count.
    assert meter.read_j() == pytest.approx(0.3)


def test_rapl_accumulates_deltas(powercap: Path):
    meter = RaplMeter(powercap)
    start_j = meter.read_j()
    set_energy(powercap / "intel-rapl:0", 400_000)  # +0.3 J
    set_energy(powercap / "intel-rapl:0:0", 999_999)  # ignored
    set_energy(powercap / "intel-rapl:1", 250_000)  # +0.05 J
    assert meter.read_j() - start_j == pytest.approx(0.35)


def test_rapl_handles_wraparound(powercap: Path):
    meter = RaplMeter(powercap)
    start_j = meter.read_j()
    # package-0 goes 100_000 -> 950_000 -> wraps at max 1_000_000 -> 30_000:
    # 850_000 + (30_000 - 950_000 + 1_000_000) = 850_000 + 80_000 = 930_000 uJ.
    set_energy(powercap / "intel-rapl:0", 950_000)
    meter.read_j()
    set_energy(powercap / "intel-rapl:0", 30_000)
    assert meter.read_j() - start_j == pytest.approx(0.93)


def test_rapl_missing_root_is_unavailable_with_reason(tmp_path: Path):
    meter = RaplMeter(tmp_path / "no-powercap")
    assert not meter.available()
    assert "does not exist" in meter.reason
    with pytest.raises(MeterUnavailableError, match="does not exist"):
        meter.read_j()


def test_rapl_root_without_zones_is_unavailable(tmp_path: Path):
    write_zone(tmp_path, "intel-rapl:0:0", "core", 1)
    meter = RaplMeter(tmp_path)
    assert not meter.available()
    assert "no intel-rapl:N zones" in meter.reason


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
)
def test_rapl_unreadable_counter_says_how_to_fix(powercap: Path):
    (powercap / "intel-rapl:1" / "energy_uj").chmod(0)
    meter = RaplMeter(powercap)
    assert not meter.available()
    assert "root" in meter.reason and "chmod" in meter.reason


def test_rapl_permission_error_reason(powercap: Path, monkeypatch: pytest.MonkeyPatch):
    """Same as above, but also runs as root: simulate the kernel's 0400 energy_uj."""
    real_read_text = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    meter = RaplMeter(powercap)
    assert not meter.available()
    assert "readable by root only" in meter.reason


def test_nvml_without_pynvml_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    meter = NvmlMeter()
    assert not meter.available()
    assert NVML_INSTALL_HINT in meter.reason
    with pytest.raises(MeterUnavailableError, match="pynvml"):
        meter.read_j()


def fake_pynvml(*, init_error: bool = False, count: int = 1, supported: bool = True):
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    module.NVMLError = NVMLError
    state = {"energy_mj": 5_000}

    def nvml_init():
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def total_energy(handle):
        if not supported:
            raise NVMLError("Not Supported")
        state["energy_mj"] += 1_500
        return state["energy_mj"]

    module.nvmlInit = nvml_init
    module.nvmlDeviceGetCount = lambda: count
    module.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    module.nvmlDeviceGetHandleByUUID = lambda uuid: f"gpu-{uuid}"
    module.nvmlDeviceGetTotalEnergyConsumption = total_energy
    return module


def test_nvml_without_driver_is_unavailable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    meter = NvmlMeter()
    assert not meter.available()
    assert "driver" in meter.reason.lower()


def test_nvml_without_gpu_is_unavailable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(count=0))
    meter = NvmlMeter()
    assert not meter.available()
    assert "no GPU at NVML index 0" in meter.reason


def test_nvml_unsupported_gpu_is_unavailable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(supported=False))
    meter = NvmlMeter()
    assert not meter.available()
    assert "Volta" in meter.reason


def test_nvml_reads_millijoules_as_joules(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    meter = NvmlMeter()
    assert meter.available(), meter.reason
    first_j = meter.read_j()
    assert meter.read_j() - first_j == pytest.approx(1.5)  # 1_500 mJ per read


def test_default_meter_picks_by_device(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert isinstance(default_meter("cpu"), RaplMeter)
    cuda = default_meter("cuda:1")
    assert isinstance(cuda, NvmlMeter) and cuda.device_index == 1
    assert isinstance(default_meter("cuda"), EnergyMeter)
    with pytest.raises(ValueError, match="'cpu', 'cuda' or 'cuda:N'"):
        default_meter("tpu")


def test_window_reports_joules_per_inference_over_its_blocks():
    """The profiler opens the window once per timed round: energy and seconds add up over them."""
    window = EnergyWindow(CountingMeter(step_j=2.0))
    for _ in range(3):
        with window:
            pass
    reading = window.result(n_inferences=20)
    assert isinstance(reading, EnergyReading)
    assert reading.energy_j == pytest.approx(6.0)  # one read before, one after, per block
    assert reading.n_inferences == 20
    assert reading.j_per_inference == pytest.approx(0.3)
    assert reading.to_dict()["measured"] is True
    assert reading.to_dict()["j_per_inference"] == pytest.approx(0.3)


def test_window_with_unavailable_meter_gives_no_number(tmp_path: Path):
    window = EnergyWindow(RaplMeter(tmp_path / "absent"))
    with window:
        pass
    result = window.result(n_inferences=3)
    assert isinstance(result, EnergyUnavailable)
    assert result.to_dict() == {"measured": False, "meter": "rapl", "reason": result.reason}
    assert "does not exist" in result.reason


def test_window_that_never_ran_is_an_error():
    with pytest.raises(ValueError, match="has not run"):
        EnergyWindow(CountingMeter()).result(n_inferences=1)


def test_window_with_stalled_counter_is_unavailable_not_zero():
    with EnergyWindow(CountingMeter(step_j=0.0)) as window:
        pass
    result = window.result(n_inferences=10)
    assert isinstance(result, EnergyUnavailable)
    assert "did not advance" in result.reason


def test_window_over_rapl_tree(powercap: Path):
    meter = RaplMeter(powercap)
    with EnergyWindow(meter) as window:
        set_energy(powercap / "intel-rapl:0", 600_000)  # +0.5 J during the window
    reading = window.result(n_inferences=100)
    assert isinstance(reading, EnergyReading)
    assert reading.energy_j == pytest.approx(0.5)
    assert reading.j_per_inference == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"energy_j": -1.0, "seconds": 1.0, "n_inferences": 1}, "energy_j must be >= 0"),
        ({"energy_j": 1.0, "seconds": 0.0, "n_inferences": 1}, "seconds must be > 0"),
        ({"energy_j": 1.0, "seconds": 1.0, "n_inferences": 0}, "n_inferences must be >= 1"),
    ],
)
def test_energy_reading_rejects_impossible_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnergyReading(meter="fake", **kwargs)


def test_cuda_visible_devices_maps_cuda_numbering_to_nvml(monkeypatch: pytest.MonkeyPatch):
    from compress.measure.energy import nvml_device_for_cuda

    assert nvml_device_for_cuda(1, None) == 1
    assert nvml_device_for_cuda(1, "3,5") == 5
    assert nvml_device_for_cuda(0, "GPU-8f2e") == "GPU-8f2e"
    with pytest.raises(ValueError, match="CUDA device 2 does not exist: CUDA_VISIBLE_DEVICES='0,1'"):
        nvml_device_for_cuda(2, "0,1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert default_meter("cuda:1").device_index == 3
    missing = default_meter("cuda:2")
    assert not missing.available() and "CUDA device 2 does not exist" in missing.reason
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f2e")
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    meter = default_meter("cuda")
    assert meter.available(), meter.reason
    assert meter._handle == "gpu-GPU-8f2e"


def test_a_targets_device_id_chooses_the_metered_gpu():
    from compress.measure.energy import meter_device
    from compress.recipe import TargetConfig

    gpu1 = TargetConfig(name="g", runtime="torch", device="cuda", options={"device_id": 1})
    assert meter_device(gpu1) == "cuda:1"
    assert meter_device(TargetConfig(name="g", runtime="tensorrt", device="cuda")) == "cuda:0"
    assert meter_device(TargetConfig(name="c", runtime="onnxruntime", device="cpu")) == "cpu"
