"""GpuSlots with fake device names on CPU: several processes at once, their lease intervals recorded and checked."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from kb_assets.cluster.gpu_slots import GpuSlots, NoFreeDevice

DEVICES = ["cuda:0", "cuda:1"]
HOLD_S = 0.25
WORKERS = 6

# fork: the children need nothing but this module's functions, and start in milliseconds.
fork = multiprocessing.get_context("fork")


def _hold(lock_dir: str, devices: list[str], hold_s: float, results) -> None:
    with GpuSlots(devices, lock_dir, poll_s=0.01) as device:
        started = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
        time.sleep(hold_s)
        results.put((device, started, time.monotonic(), os.getpid()))


def _hold_forever(lock_dir: str, devices: list[str], leased) -> None:
    with GpuSlots(devices, lock_dir) as device:
        leased.put(device)
        time.sleep(3600)


def _overlaps(intervals: list[tuple[float, float]]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    ordered = sorted(intervals)
    return [(a, b) for a, b in zip(ordered, ordered[1:]) if b[0] < a[1]]


def test_no_two_holders_of_one_device_at_any_instant(tmp_path: Path):
    results = fork.Queue()
    workers = [fork.Process(target=_hold, args=(str(tmp_path), DEVICES, HOLD_S, results)) for _ in range(WORKERS)]
    for w in workers:
        w.start()
    leases = [results.get(timeout=30) for _ in workers]
    for w in workers:
        w.join(timeout=10)
        assert w.exitcode == 0

    by_device = {d: [(start, end) for device, start, end, _ in leases if device == d] for d in DEVICES}
    for device, intervals in by_device.items():
        assert not _overlaps(intervals), f"two holders of {device} at once: {_overlaps(intervals)}"
    # Both devices were used, and at some instant both were held: the slots ran side by side, not one at a time.
    assert all(by_device.values()), by_device
    assert sum(len(v) for v in by_device.values()) == WORKERS
    starts_and_ends = sorted([(s, 1) for _, s, _, _ in leases] + [(e, -1) for _, _, e, _ in leases],
                             key=lambda t: (t[0], t[1]))
    held, most = 0, 0
    for _, change in starts_and_ends:
        held += change
        most = max(most, held)
    assert most == len(DEVICES)


def test_a_killed_holder_frees_its_device(tmp_path: Path):
    leased = fork.Queue()
    holder = fork.Process(target=_hold_forever, args=(str(tmp_path), ["cuda:0"], leased))
    holder.start()
    try:
        assert leased.get(timeout=30) == "cuda:0"
        with pytest.raises(NoFreeDevice, match="cuda:0"):
            with GpuSlots(["cuda:0"], tmp_path, wait_s=0.3, poll_s=0.05):
                pass
        os.kill(holder.pid, signal.SIGKILL)  # no __exit__, no cleanup: only the kernel can free the lock
        holder.join(timeout=10)
        assert holder.exitcode == -signal.SIGKILL
        with GpuSlots(["cuda:0"], tmp_path, wait_s=5, poll_s=0.05) as device:
            assert device == "cuda:0"
    finally:
        if holder.is_alive():
            holder.kill()
            holder.join()


def test_leases_in_one_process_are_distinct_and_released_on_exit(tmp_path: Path):
    waits = []
    with GpuSlots(DEVICES, tmp_path) as first, GpuSlots(DEVICES, tmp_path) as second:
        assert {first, second} == set(DEVICES)
        with pytest.raises(NoFreeDevice):
            with GpuSlots(DEVICES, tmp_path, wait_s=0.2, poll_s=0.05, on_wait=waits.append):
                pass
    assert waits and "waiting" in waits[0]
    # Released: the first device is free again, and an exception inside the block releases too.
    with pytest.raises(RuntimeError, match="boom"):
        with GpuSlots(DEVICES, tmp_path) as device:
            assert device == "cuda:0"
            raise RuntimeError("boom")
    with GpuSlots(DEVICES, tmp_path, wait_s=0) as device:
        assert device == "cuda:0"


@pytest.mark.parametrize("devices", [[], ["cuda:0", "cuda:0"], ["a/b"]])
def test_bad_device_lists_are_refused(devices, tmp_path: Path):
    with pytest.raises(ValueError):
        GpuSlots(devices, tmp_path)
