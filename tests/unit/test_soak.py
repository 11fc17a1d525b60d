"""The soak's drift and the isolation run's pooling and repeats (no server, no timing)."""

from __future__ import annotations

import math

from loadtests.isolation import Window, least_disturbed, pooled
from loadtests.soak import Checkpoint, Machine, drift
from loadtests.stats import LoadResult


def checkpoint(phase: str, cycles: int, rss: float) -> Checkpoint:
    return Checkpoint(phase, cycles, rss, rss / 2, 1.0, 0.0, 0.0, 1.0, 1.0)


def test_drift_is_taken_from_the_first_checkpoint_of_the_phase() -> None:
    rows = [
        checkpoint("start", 0, 500),
        checkpoint("mlp", 20, 600),  # the first cycles import and cache: not drift
        checkpoint("mlp", 40, 606),
        checkpoint("big", 5, 660),
    ]
    after_first, total = drift(rows, "mlp")
    assert math.isclose(after_first, 0.01) and math.isclose(total, 0.212)
    after_first, total = drift(rows, "big")
    assert math.isnan(after_first) and math.isclose(total, 0.32)  # one reading: no drift


def test_other_processes_are_what_the_machine_did_beyond_us() -> None:
    before, after = Machine(total=1000, busy=300, ours=100), Machine(2000, 900, 500)
    assert after.others_since(before) == 0.2  # 600 busy, 400 of them ours, of 1000
    assert math.isnan(after.others_since(None))


def window(phase: str, latencies: tuple[float, ...], others: float = 0.0) -> Window:
    tiny = LoadResult("python", len(latencies), 0, 1.0, 1, latencies, steal=0.0)
    return Window(phase, 1, tiny, 1.0, 1.0, 0, math.nan, 500.0, others)


def test_latencies_are_pooled_over_the_windows_of_a_phase() -> None:
    windows = [
        window("steady", tuple(float(i) for i in range(1, 101))),
        window("loading", (5.0,) * 99 + (50.0,)),
        window("steady", (0.5,) * 100),
    ]
    assert pooled(windows, "steady") == (98.0, 100.0)  # rank 198 of 200
    assert pooled(windows, "loading") == (5.0, 50.0)


def test_a_disturbed_window_is_measured_again_and_the_least_disturbed_kept() -> None:
    attempts = iter([window("steady", (9.0,), 0.5), window("steady", (2.0,), 0.3)])
    kept = least_disturbed(lambda: next(attempts), limit=0.15, retries=1, what="steady 1")
    assert kept.others == 0.3
    calm = iter([window("steady", (1.0,), 0.05)])
    assert least_disturbed(lambda: next(calm), limit=0.15, retries=2, what="x").others == 0.05
