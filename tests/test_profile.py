"""The timing method, on fake sessions and a fake clock, so every expected number is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from compress.errors import InputError
from compress.measure.energy import EnergyUnavailable
from compress.measure.timing import (
    WARMUP_WINDOW,
    interleaved_order,
    round_cv,
    speedup,
    time_sessions,
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeSession:
    """Each ``run`` advances the fake clock by the next latency in ``latencies_ms`` (the last one
    repeats), and records the call in ``log`` so the order of calls can be checked."""

    def __init__(self, name, clock, latencies_ms, log=None):
        self.name, self.clock, self.latencies_ms, self.log = name, clock, list(latencies_ms), log
        self.calls = 0

    def run(self, batch):
        i = min(self.calls, len(self.latencies_ms) - 1)
        self.clock.now += self.latencies_ms[i] * batch.shape[0] / 1e3
        self.calls += 1
        if self.log is not None:
            self.log.append(self.name)
        return np.zeros((batch.shape[0], 10), dtype=np.float32)


class NoMeter:
    name = "fake"
    reason = "no counter in this test"

    def available(self):
        return False


def _batch(bs):
    return np.zeros((bs, 3, 4, 4), dtype=np.float32)


QUICK = dict(warmup=0, warmup_max_s=0.0, max_extra_rounds=0, meter=NoMeter())


def test_interleaved_order_rotates_so_no_variant_is_always_first():
    names = ["a", "b", "c"]
    orders = [interleaved_order(names, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert {o[0] for o in orders} == set(names)
    assert interleaved_order(names, 3) == orders[0]
    assert interleaved_order([], 5) == []


def test_rounds_run_variants_in_the_rotated_order():
    clock, log = FakeClock(), []
    sessions = {n: FakeSession(n, clock, [1.0], log) for n in ("a", "b")}
    # min_round_s below one call: each variant runs exactly 3 calls per round (the minimum)
    time_sessions(sessions, _batch, [1], rounds=3, min_round_s=1e-6, clock=clock, settle_runs=0, **QUICK)
    # no warm-up (warmup 0, warmup_max_s 0): the log holds only the rounds a b | b a | a b
    timed = log
    blocks = [timed[i] for i in range(0, len(timed), 3)]
    assert blocks == ["a", "b", "b", "a", "a", "b"]


class ColdAfterSwitchSession(FakeSession):
    """10 ms on the first call after another session ran (cold caches), 1 ms otherwise."""

    def run(self, batch):
        cold = bool(self.log) and self.log[-1] != self.name
        self.latencies_ms = [10.0 if cold else 1.0]
        self.calls = 0
        return super().run(batch)


@pytest.mark.parametrize("settle_runs, slow_samples", [(1, 0), (0, 3)])
def test_each_block_starts_with_an_untimed_settle_call(settle_runs, slow_samples):
    clock, log = FakeClock(), []
    sessions = {n: ColdAfterSwitchSession(n, clock, [1.0], log) for n in ("a", "b")}
    out = time_sessions(sessions, _batch, [1], rounds=3, min_round_s=1e-6, clock=clock,
                        settle_runs=settle_runs, **QUICK)
    samples = out["a"][1]["samples_ms"] + out["b"][1]["samples_ms"]
    # blocks a b | b a | a b: three follow the other session; without the settle call their first
    # timed call is cold (3 slow samples), with it none is
    assert sum(s > 5 for s in samples) == slow_samples
    assert len(log) == 6 * (3 + settle_runs)


def test_percentiles_and_throughput_of_known_latencies():
    clock = FakeClock()
    # 100 calls cycling 1..10 ms: median 5.5 ms, p90 9.1 ms (numpy's linear interpolation)
    cycle = [float(v) for v in range(1, 11)] * 1000
    sessions = {"a": FakeSession("a", clock, cycle)}
    out = time_sessions(sessions, _batch, [1], rounds=1, min_round_s=0.1095, clock=clock, **QUICK)
    m = out["a"][1]
    assert m["n"] == 20  # 1+2+...+10 = 55 ms per cycle: the 20th call passes 109.5 ms
    assert m["p50_ms"] == pytest.approx(5.5)
    assert m["p90_ms"] == pytest.approx(9.1)
    assert m["min_ms"] == pytest.approx(1.0)
    assert m["p50_low_ms"] <= 5.5 <= m["p50_high_ms"]
    assert m["throughput_per_s"] == pytest.approx(1 / 5.5e-3)
    assert m["throughput_low_per_s"] <= m["throughput_per_s"] <= m["throughput_high_per_s"]


def test_constant_latency_has_a_zero_width_interval_and_is_stable():
    clock = FakeClock()
    sessions = {"a": FakeSession("a", clock, [2.0])}
    out = time_sessions(sessions, _batch, [4], rounds=3, min_round_s=0.05, clock=clock, **QUICK)
    m = out["a"][4]
    # the fake latency is per sample: batch 4 takes 8 ms
    for key in ("p50_ms", "p50_low_ms", "p50_high_ms", "p99_ms"):
        assert m[key] == pytest.approx(8.0)
    assert m["throughput_per_s"] == pytest.approx(500.0)
    assert m["cv"] == pytest.approx(0.0, abs=1e-12)
    assert m["round_cv"] == pytest.approx(0.0, abs=1e-12)
    assert m["stable"] and m["extra_rounds"] == 0


def test_warm_up_stops_at_its_time_limit_and_says_so():
    clock = FakeClock()
    # strictly growing latency: no two windows ever agree within 5%
    growing = [float(1.5**i) for i in range(60)]
    sessions = {"a": FakeSession("a", clock, growing)}
    out = time_sessions(sessions, _batch, [1], warmup=0, warmup_max_s=0.001, rounds=1,
                        min_round_s=1e-6, clock=clock, max_extra_rounds=0, meter=NoMeter())
    assert out["a"][1]["warmup_stable"] is False
    assert out["a"][1]["warmup_runs"] == WARMUP_WINDOW


def test_warm_up_discards_a_slow_start():
    clock = FakeClock()
    # 3 slow calls, then steady: the first window [50,50,50,1,1] and the second [1]*5 disagree,
    # the third agrees with the second; no slow call reaches the timed rounds
    sessions = {"a": FakeSession("a", clock, [50.0] * 3 + [1.0])}
    out = time_sessions(sessions, _batch, [1], warmup=0, warmup_max_s=10.0, rounds=2,
                        min_round_s=0.01, clock=clock, max_extra_rounds=0, meter=NoMeter())
    m = out["a"][1]
    assert m["warmup_runs"] == 3 * WARMUP_WINDOW
    assert max(m["samples_ms"]) == pytest.approx(1.0)


def test_round_cv_of_known_medians():
    assert round_cv([10.0, 10.0, 10.0]) == 0.0
    assert round_cv([9.0, 11.0]) == pytest.approx(np.std([9, 11], ddof=1) / 10)
    assert round_cv([5.0]) == 0.0


class DriftingSession(FakeSession):
    """Latency jumps 3x for calls in [start, stop): a burst of noise in some rounds."""

    def __init__(self, name, clock, start, stop):
        super().__init__(name, clock, [1.0])
        self.start, self.stop = start, stop

    def run(self, batch):
        self.latencies_ms = [3.0] if self.start <= self.calls < self.stop else [1.0]
        return super().run(batch)


def test_unstable_measurement_is_extended_then_flagged():
    clock = FakeClock()
    # no warm-up, 3 calls per round: the 2nd round (calls 3-5) is 3x slow
    sessions = {"a": DriftingSession("a", clock, 3, 6)}
    out = time_sessions(sessions, _batch, [1], warmup=0, warmup_max_s=0.0, rounds=3,
                        min_round_s=1e-6, max_cv=0.1, max_extra_rounds=2, clock=clock, meter=NoMeter(),
                        settle_runs=0)
    m = out["a"][1]
    assert m["extra_rounds"] == 2 and m["rounds"] == 5
    assert m["round_medians_ms"] == [1.0, 3.0, 1.0, 1.0, 1.0]
    assert m["round_cv"] == pytest.approx(np.std([1, 3, 1, 1, 1], ddof=1) / 1.4)
    assert m["stable"] is False


def test_extension_stops_as_soon_as_the_measurement_is_stable():
    clock = FakeClock()
    # the 2nd of 2 rounds is 1.3x slow: round CV 18.5%, within a loose max_cv of 0.2
    class Slow2(FakeSession):
        def run(self, batch):
            self.latencies_ms = [1.3] if 3 <= self.calls < 6 else [1.0]
            return super().run(batch)

    sessions = {"a": Slow2("a", clock, [1.0])}
    out = time_sessions(sessions, _batch, [1], warmup=0, warmup_max_s=0.0, rounds=2,
                        min_round_s=1e-6, max_cv=0.2, max_extra_rounds=5, clock=clock, meter=NoMeter(),
                        settle_runs=0)
    assert out["a"][1]["extra_rounds"] == 0 and out["a"][1]["stable"] is True


def test_extra_rounds_keep_every_variant_interleaved():
    clock = FakeClock()
    sessions = {"noisy": DriftingSession("noisy", clock, 3, 6), "calm": FakeSession("calm", clock, [2.0])}
    out = time_sessions(sessions, _batch, [1], warmup=0, warmup_max_s=0.0, rounds=3,
                        min_round_s=1e-6, max_cv=0.1, max_extra_rounds=2, clock=clock, meter=NoMeter(),
                        settle_runs=0)
    assert out["noisy"][1]["rounds"] == out["calm"][1]["rounds"] == 5
    assert out["calm"][1]["stable"] is True


def test_speedup_is_the_ratio_of_medians_from_the_same_run():
    clock = FakeClock()
    sessions = {"ref": FakeSession("ref", clock, [4.0]), "fast": FakeSession("fast", clock, [1.0])}
    out = time_sessions(sessions, _batch, [1], rounds=2, min_round_s=0.02, clock=clock, **QUICK)
    sp = speedup(out["ref"][1], out["fast"][1])
    assert sp["estimate"] == pytest.approx(4.0)
    assert sp["low"] == pytest.approx(4.0) and sp["high"] == pytest.approx(4.0)


class DeviceTimedSession(FakeSession):
    """Like a CUDA session: it reports its own time (CUDA events); the host clock is ignored."""

    def time_run_ms(self, batch):
        self.run(batch)
        return 0.25


def test_a_session_that_times_itself_on_the_device_is_timed_that_way():
    clock = FakeClock()
    sessions = {"gpu": DeviceTimedSession("gpu", clock, [5.0])}
    out = time_sessions(sessions, _batch, [1], rounds=2, min_round_s=0.02, clock=clock, **QUICK)
    assert out["gpu"][1]["p50_ms"] == pytest.approx(0.25)


def test_energy_is_not_measured_with_the_reason_when_no_counter():
    clock = FakeClock()
    out = time_sessions({"a": FakeSession("a", clock, [1.0])}, _batch, [1], rounds=1,
                        min_round_s=0.01, clock=clock, **QUICK)
    assert out["a"][1]["energy"] == EnergyUnavailable("fake", "no counter in this test").to_dict()


class FakeMeter:
    """A counter that advances 2 J per read while the session runs."""

    name = "fake-rapl"
    reason = ""

    def __init__(self):
        self.j = 0.0

    def available(self):
        return True

    def read_j(self):
        self.j += 1.0
        return self.j


def test_energy_per_inference_from_a_counter():
    clock = FakeClock()
    out = time_sessions({"a": FakeSession("a", clock, [1.0])}, _batch, [2], rounds=2,
                        min_round_s=1e-6, clock=clock, warmup=0, warmup_max_s=0.0,
                        max_extra_rounds=0, meter=FakeMeter())
    m = out["a"][2]
    # 2 rounds x (read, read): 1 J per round; 2 rounds x 3 calls x batch 2 = 12 inferences
    assert m["energy"]["measured"] is True
    assert m["energy"]["j_per_inference"] == pytest.approx(2.0 / 12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_sizes": [0]}, r"batch sizes must be positive integers, got \[0\]"),
        ({"batch_sizes": [1, -4]}, r"batch sizes must be positive integers, got \[-4\]"),
        ({"batch_sizes": []}, "give at least one"),
        ({"rounds": 0}, "rounds must be >= 1"),
        ({"max_cv": 0}, r"max_cv must be > 0 \(e.g. 0.1 for 10%\)"),
        ({"min_round_s": -1}, "min_round_s must be > 0 seconds"),
        ({"settle_runs": -1}, "settle_runs must be >= 0"),
    ],
)
def test_bad_settings_are_rejected_with_the_fix(kwargs, message):
    clock = FakeClock()
    args = {"batch_sizes": [1], **kwargs}
    bs = args.pop("batch_sizes")
    with pytest.raises(InputError, match=message):
        time_sessions({"a": FakeSession("a", clock, [1.0])}, _batch, bs, clock=clock,
                      meter=NoMeter(), **args)
