"""Energy meters that read hardware counters, and windows that turn two readings into joules.

A meter that cannot read a real counter says so (``available()`` is False, ``reason`` says why);
nothing here ever estimates energy from TDP or utilisation.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from compress.errors import install_hint

NVML_INSTALL_HINT = install_hint("nvml")

# Top-level RAPL zones only: "intel-rapl:0", not the sub-domain "intel-rapl:0:0" (core, uncore, dram),
# whose energy is already inside its package, nor "intel-rapl-mmio:0", a second view of package 0.
_RAPL_ZONE = re.compile(r"^intel-rapl:(\d+)$")


@runtime_checkable
class EnergyMeter(Protocol):
    """A cumulative energy counter: ``read_j`` only ever grows while ``available()`` is True."""

    name: str

    @property
    def reason(self) -> str:
        """Why the meter is unavailable; empty when it is available."""
        ...

    def available(self) -> bool: ...

    def read_j(self) -> float: ...


class MeterUnavailableError(RuntimeError):
    """``read_j`` was called on a meter that has no counter to read."""


@dataclass
class _RaplZone:
    name: str
    energy_path: Path
    max_range_uj: int
    last_uj: int | None = None
    total_uj: int = 0


class RaplMeter:
    """CPU package energy from Linux powercap (Intel RAPL; AMD too on Linux >= 5.8).

    It reads the whole package, so other processes on the same CPU are counted as well.
    """

    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap"):
        self.root = Path(root)
        self._zones: list[_RaplZone] | None = None
        self._reason: str | None = None

    @property
    def reason(self) -> str:
        self._probe()
        return self._reason or ""

    @property
    def zones(self) -> list[str]:
        """Names of the package zones that are summed (e.g. ``["package-0", "package-1"]``)."""
        self._probe()
        return [z.name for z in self._zones or []]

    def available(self) -> bool:
        self._probe()
        return self._zones is not None

    def read_j(self) -> float:
        """Joules used by all packages, unwrapped across counter wraparounds since the first read.

        Call it at least once per wrap period (``max_energy_range_uj`` at full power: tens of
        minutes), or a second wrap between two reads goes unnoticed.
        """
        self._probe()
        if self._zones is None:
            raise MeterUnavailableError(f"RAPL energy meter is unavailable: {self._reason}")
        for zone in self._zones:
            now_uj = _read_int(zone.energy_path)
            if zone.last_uj is None:
                zone.total_uj = now_uj
            else:
                delta_uj = now_uj - zone.last_uj
                if delta_uj < 0:  # the counter passed max_energy_range_uj and restarted at 0
                    delta_uj += zone.max_range_uj
                zone.total_uj += delta_uj
            zone.last_uj = now_uj
        return sum(z.total_uj for z in self._zones) / 1e6

    def _probe(self) -> None:
        if self._zones is not None or self._reason is not None:
            return
        if not self.root.is_dir():
            self._reason = (
                f"{self.root} does not exist: RAPL needs Linux on bare metal or a VM that exposes "
                "powercap; most cloud VMs and containers do not"
            )
            return
        zone_dirs = sorted(
            (p for p in self.root.iterdir() if _RAPL_ZONE.match(p.name)),
            key=lambda p: int(_RAPL_ZONE.match(p.name).group(1)),  # type: ignore[union-attr]
        )
        if not zone_dirs:
            self._reason = (
                f"{self.root} has no intel-rapl:N zones: load the intel_rapl_common module"
            )
            return
        zones = []
        for zone_dir in zone_dirs:
            try:
                name = (
                    _read_text(zone_dir / "name") if (zone_dir / "name").exists() else zone_dir.name
                )
                if name == "psys":  # the platform zone already contains the packages
                    continue
                _read_int(zone_dir / "energy_uj")
                max_range_uj = _read_int(zone_dir / "max_energy_range_uj")
            except PermissionError:
                self._reason = (
                    f"{zone_dir / 'energy_uj'} is readable by root only (Linux >= 5.10): run as root "
                    f"or grant read access, e.g. sudo chmod a+r {self.root}/intel-rapl:*/energy_uj"
                )
                return
            except (OSError, ValueError) as exc:
                self._reason = f"cannot read RAPL zone {zone_dir}: {exc}"
                return
            zones.append(_RaplZone(name, zone_dir / "energy_uj", max_range_uj))
        if not zones:
            self._reason = f"{self.root} has only a platform (psys) zone, no package zones"
            return
        self._zones = zones


class NvmlMeter:
    """Total GPU board energy from NVML (``nvmlDeviceGetTotalEnergyConsumption``, Volta or newer).

    ``device_index`` is NVML's numbering (an int), which ignores ``CUDA_VISIBLE_DEVICES``, or a GPU
    UUID; ``default_meter("cuda:N")`` maps CUDA device N to it (``nvml_device_for_cuda``).
    """

    name = "nvml"

    def __init__(self, device_index: int | str = 0):
        if isinstance(device_index, int) and device_index < 0:
            raise ValueError(
                f"device_index must be >= 0, got {device_index}: use 0 for the first GPU"
            )
        self.device_index = device_index
        self._nvml: Any = None
        self._handle: Any = None
        self._reason: str | None = None

    @property
    def reason(self) -> str:
        self._probe()
        return self._reason or ""

    def available(self) -> bool:
        self._probe()
        return self._handle is not None

    def read_j(self) -> float:
        """Joules the GPU has used since the driver was last loaded."""
        self._probe()
        if self._handle is None:
            raise MeterUnavailableError(f"NVML energy meter is unavailable: {self._reason}")
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) / 1e3  # mJ -> J

    def _probe(self) -> None:
        if self._handle is not None or self._reason is not None:
            return
        try:
            import pynvml
        except ImportError:
            self._reason = f"the pynvml package is not installed: {NVML_INSTALL_HINT}"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self._reason = f"NVML could not start (no NVIDIA driver?): {exc}"
            return
        try:
            if isinstance(self.device_index, str):
                handle = pynvml.nvmlDeviceGetHandleByUUID(self.device_index)
            else:
                count = pynvml.nvmlDeviceGetCount()
                if self.device_index >= count:
                    self._reason = f"no GPU at NVML index {self.device_index}: NVML sees {count} GPU(s)"
                    return
                handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except pynvml.NVMLError as exc:
            self._reason = (
                f"GPU {self.device_index} cannot report total energy ({exc}); "
                "it needs a Volta or newer GPU"
            )
            return
        self._nvml = pynvml
        self._handle = handle


def nvml_device_for_cuda(cuda_index: int, visible: str | None = None) -> int | str:
    """The NVML device (index or UUID) of CUDA device ``cuda_index`` under ``CUDA_VISIBLE_DEVICES``
    (``visible``; unset: every GPU, same numbering). NVML numbers GPUs by PCI bus; CUDA does too for
    GPUs of one model, and always with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``."""
    if visible is None:
        return cuda_index
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if cuda_index >= len(entries):
        raise ValueError(
            f"CUDA device {cuda_index} does not exist: CUDA_VISIBLE_DEVICES={visible!r} makes "
            f"{len(entries)} GPU(s) visible, numbered from 0"
        )
    entry = entries[cuda_index]
    return int(entry) if entry.isdigit() else entry  # "GPU-<uuid>" / "MIG-<uuid>"


def default_meter(device: str) -> EnergyMeter:
    """The meter for a target device: ``"cpu"`` -> RAPL, ``"cuda"`` or ``"cuda:N"`` (CUDA's
    numbering, after ``CUDA_VISIBLE_DEVICES``) -> NVML on that GPU."""
    import os

    if device == "cpu":
        return RaplMeter()
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match:
        try:
            return NvmlMeter(nvml_device_for_cuda(int(match.group(1) or 0), os.environ.get("CUDA_VISIBLE_DEVICES")))
        except ValueError as err:  # no such GPU: no energy number, and the reason says why
            meter = NvmlMeter()
            meter._reason = str(err)
            return meter
    raise ValueError(f"no energy meter for device {device!r}: use 'cpu', 'cuda' or 'cuda:N'")


def meter_device(target) -> str:
    """The device string a target's energy is metered on: ``cuda:<device_id>`` for GPUs."""
    if target.device == "cpu":
        return "cpu"
    return f"{target.device}:{int(getattr(target.options, 'device_id', 0))}"


@dataclass(frozen=True)
class EnergyReading:
    """Energy measured by a meter over a window in which ``n_inferences`` inferences ran."""

    meter: str
    energy_j: float
    seconds: float
    n_inferences: int

    def __post_init__(self) -> None:
        if self.energy_j < 0:
            raise ValueError(f"energy_j must be >= 0, got {self.energy_j}: the counter went back")
        if self.seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}: time a non-empty window")
        if self.n_inferences < 1:
            raise ValueError(
                f"n_inferences must be >= 1, got {self.n_inferences}: run at least one inference"
            )

    @property
    def j_per_inference(self) -> float:
        return self.energy_j / self.n_inferences

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "measured": True,
            **asdict(self),
            "j_per_inference": self.j_per_inference,
            "mean_power_w": self.mean_power_w,
        }


@dataclass(frozen=True)
class EnergyUnavailable:
    """No energy number: the meter could not measure, and ``reason`` says why."""

    meter: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"measured": False, "meter": self.meter, "reason": self.reason}


class EnergyWindow:
    """Reads a meter on entry and exit of each ``with`` block; ``result(n_inferences)`` then gives
    the energy spent inside all of them (the profiler opens one block per timed round, so the
    other variants' rounds in between are not counted).

    Usage: ``w = EnergyWindow(meter)``; ``with w: run_batches()`` (once or more); then
    ``w.result(n_inferences=1000)``.
    """

    def __init__(self, meter: EnergyMeter):
        self.meter = meter
        self._available = meter.available()
        self._start_j: float | None = None
        self._start_s = 0.0
        self.energy_j = 0.0
        self.seconds = 0.0
        self.blocks = 0

    def __enter__(self) -> EnergyWindow:
        self._start_j = self.meter.read_j() if self._available else None
        self._start_s = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds += time.perf_counter() - self._start_s
        if self._start_j is not None:
            self.energy_j += self.meter.read_j() - self._start_j
        self.blocks += 1

    def result(self, n_inferences: int) -> EnergyReading | EnergyUnavailable:
        """The measured reading, or ``EnergyUnavailable`` when there is no honest number."""
        if not self._available:
            return EnergyUnavailable(self.meter.name, self.meter.reason or "no reason given")
        if self.blocks == 0:
            raise ValueError("the window has not run: use it as `with EnergyWindow(meter) as w:`")
        if self.energy_j <= 0:
            # Counters update every ~1 ms (RAPL) to ~100 ms (NVML): zero means "too short", not "free".
            return EnergyUnavailable(
                self.meter.name,
                f"the counter did not advance during the {self.seconds:.3f} s window: "
                "measure a longer run (more repeats, longer rounds)",
            )
        return EnergyReading(self.meter.name, self.energy_j, self.seconds, n_inferences)


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def _read_int(path: Path) -> int:
    return int(_read_text(path))
