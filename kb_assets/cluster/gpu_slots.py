"""One node, N GPUs: a process leases one device of a list for the length of a `with` block.

The lease is an OS file lock (flock, through `filelock`) on `<lock_dir>/<device>.lock`. The kernel drops it when the
holder's descriptor closes, which includes the holder dying by any signal: a crashed run never keeps a GPU, and no
lease table has to be repaired. Dagster's pool `gpu` (N slots) bounds how many runs embed at once; the lease decides
which device each one gets, and stays correct even if the pool ever admits more runs than there are devices (the
extra run waits for a free device instead of sharing one).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from filelock import FileLock, Timeout


def default_lock_dir() -> Path:
    """Node-local by construction: the devices are this node's, and flock is only reliable on a local file system."""
    return Path(tempfile.gettempdir()) / "kb_assets-gpu-slots"


class NoFreeDevice(TimeoutError):
    """Every device stayed leased for the whole wait."""


class GpuSlots:
    """Lease one free device of `devices` (e.g. ``["cuda:0", "cuda:1"]``) for a `with` block; the block gets the
    device name. Leases are exclusive across every process of the node that uses the same `lock_dir`.

    `wait_s=None` waits until a device frees up, checking every `poll_s` seconds and calling `on_wait` (e.g. a
    Dagster log) once per `report_every_s` while it waits; a number raises `NoFreeDevice` after that long.
    """

    def __init__(self, devices: Sequence[str], lock_dir: str | Path | None = None, *, wait_s: float | None = None,
                 poll_s: float = 0.5, report_every_s: float = 60.0, on_wait: Callable[[str], None] | None = None):
        devices = list(devices)
        if not devices:
            raise ValueError("GpuSlots needs at least one device")
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices listed twice: {devices}")
        if any(not d or "/" in d for d in devices):
            raise ValueError(f"device names must be non-empty and without '/': {devices}")
        self.devices = devices
        self.lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.report_every_s = report_every_s
        self.on_wait = on_wait
        self._held: FileLock | None = None
        self.device: str | None = None

    def _lock(self, device: str) -> FileLock:
        # preserve_lock_file: never unlink on release (no inode races between waiters);
        # fallback_to_soft=False: a soft marker file would outlive a killed holder, the one thing a lease must not do.
        return FileLock(self.lock_dir / f"{device.replace(':', '_')}.lock", timeout=0, thread_local=False,
                        preserve_lock_file=True, fallback_to_soft=False)

    def _try_each(self) -> bool:
        for device in self.devices:
            lock = self._lock(device)
            try:
                lock.acquire()
            except Timeout:
                continue
            self._held, self.device = lock, device
            return True
        return False

    def __enter__(self) -> str:
        if self._held is not None:
            raise RuntimeError(f"this GpuSlots already holds {self.device}; use one instance per lease")
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        last_report = None
        while not self._try_each():
            now = time.monotonic()
            if self.wait_s is not None and now - started >= self.wait_s:
                raise NoFreeDevice(f"no free device among {', '.join(self.devices)} after {self.wait_s:g} s "
                                   f"(leases in {self.lock_dir})")
            if self.on_wait is not None and (last_report is None or now - last_report >= self.report_every_s):
                self.on_wait(f"all {len(self.devices)} devices ({', '.join(self.devices)}) are leased; waiting")
                last_report = now
            time.sleep(self.poll_s)
        return self.device

    def __exit__(self, *exc) -> None:
        held, self._held, self.device = self._held, None, None
        if held is not None:
            held.release()
