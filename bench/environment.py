"""The environment a run measured: device, versions, CPU, and GPU clocks where NVML is present.

Stored in `machine_info["vecreg"]` of every results file. Everything GPU here only reads: the
harness never changes clocks, power limits or any other GPU setting. On the host it sets two
things for a benchmark session, and records both: torch's thread count (`set_threads`) and glibc's
allocator thresholds (`steady_allocator`), so that run to run the same code meets the same machine.

Per case, bench.timing reads the 1-minute load average before and after the timed rounds and,
on Linux, the CPU pressure during them (`load_average`, `cpu_stall_total`, `busy`), and, on CUDA
with nvidia-ml-py, the SM clock and throttle reasons once per round (`GpuMonitor`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import sys
from typing import Any

import torch


@functools.cache
def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device | str) -> str:
    """The GPU model on CUDA, the CPU model on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return getattr(triton, "__version__", None)


# --- the host: threads, allocator, load ----------------------------------------------------------


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | None = None) -> int:
    """Fix torch's intra-op thread count for the run (default: `default_threads()`); returns it.
    On a 2-core machine where other work held a core, `sgd` at 64 x 256 took 611 to 686 ms per fit
    with two threads and 8.6 ms with one (each parallel region waits for the thread that is not
    scheduled): the count is part of the measurement, so it is chosen and recorded."""
    threads = threads or default_threads()
    torch.set_num_threads(threads)
    return threads


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Allocations up to 1 GiB come from the heap and are not returned to the system when freed (up to
# INT_MAX bytes, mallopt takes an int; glibc's own rule keeps trim at twice the mmap threshold).
STEADY_MMAP_THRESHOLD = 2**30
STEADY_TRIM_THRESHOLD = 2**31 - 1
# Older glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2: 32 MiB on 64-bit (2.36: 1 GiB).
FALLBACK_MMAP_THRESHOLD = 32 * 2**20

_allocator: dict[str, int] | str | None = None  # what steady_allocator() did, once per process


def steady_allocator() -> dict[str, int] | str:
    """Make glibc's allocator serve each step's temporaries the same way in every run; returns
    the setting, recorded as machine_info["vecreg"]["malloc"].

    By default glibc's mmap threshold is dynamic: a block above it (128 KiB at first) is mmapped
    and its pages faulted in on first touch, and freeing one raises the threshold to its size; so
    whether a step's [B, D] temporaries cost page faults depends on what the process freed before.
    Fixed thresholds (mallopt) turn the dynamic rule off: blocks up to 1 GiB come from the heap and
    stay there once freed. The arena count (M_ARENA_MAX) is left alone: the large temporaries are
    allocated by the Python thread, in the main arena. Linux with glibc only, and only where the
    environment sets no threshold (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES):
    otherwise nothing is changed and the reason is recorded. The setting lasts for the process: it
    is made once.

    Measured at B=4096, D=512, K=100 on a 2-core CPU (glibc 2.36), three fresh processes each
    way, per-fit medians of 21 fits. Two torch threads, load 0.5 to 1.2: a `compiled` that made a
    new x every step took 174, 187 and 163 ms per fit (178,000 to 203,000 minor page faults per
    fit) with glibc's defaults and 38, 39 and 38 ms (no faults) with these thresholds; `analytic`
    with per-step temporaries 73, 79 and 103 ms (0 to 4,064 faults) against 115, 57 and 54 ms.
    With their buffers now reused, neither makes a fault either way: `analytic` 36, 38 and 38 ms
    against 38, 35 and 38 ms; `compiled` 39, 37 and 35 ms against 34, 34 and 36 ms. `autograd`
    and `sgd`, whose per-step temporaries are autograd's, still make up to 20,451 and 18,401
    faults per fit with the defaults and none with these thresholds (one thread, load 3.5 to 4.7:
    3% and 7% less CPU time per fit).
    """
    global _allocator
    if _allocator is None:
        _allocator = _set_malloc_thresholds()
    return _allocator


# Where a user (or `bench ab`, for its workers) set the thresholds in the environment, those stay.
MALLOC_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold")


def _set_malloc_thresholds() -> dict[str, int] | str:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "unchanged: not Linux with glibc"
    given = [f"{name}={os.environ[name]}" for name in MALLOC_ENVIRONMENT if name in os.environ]
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    given += [t for t in tunables.split(":") if t.split("=", 1)[0] in MALLOC_TUNABLES]
    if given:
        return f"unchanged: set in the environment, {' '.join(given)}"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "unchanged: mallopt not found"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    tried = (STEADY_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD)
    mmap = next((value for value in tried if mallopt(M_MMAP_THRESHOLD, value)), None)
    if mmap is None or not mallopt(M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD):
        return "unchanged: mallopt refused the thresholds"
    return {"M_MMAP_THRESHOLD": mmap, "M_TRIM_THRESHOLD": STEADY_TRIM_THRESHOLD}


def load_average() -> float | None:
    """The 1-minute load average on Linux (runnable and uninterruptible tasks, this run's own
    included), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


PRESSURE_CPU = "/proc/pressure/cpu"


def cpu_stall_total() -> float | None:
    """Seconds since boot during which some runnable task waited for a CPU: the "some" total of
    Linux's pressure stall information (PSI, Linux 4.20 and later), or None where there is none."""
    try:
        with open(PRESSURE_CPU, encoding="ascii") as fh:
            for line in fh:
                if line.startswith("some "):
                    fields = dict(field.split("=", 1) for field in line.split()[1:])
                    return int(fields["total"]) / 1e6  # microseconds
    except (OSError, ValueError, KeyError):
        pass
    return None


# A case is busy when some task waited for a CPU during more than this share of its rounds.
BUSY_STALL = 0.05


def busy(loads: tuple[float | None, ...], stall: float | None) -> bool | None:
    """Whether the machine was not quiet around a case's rounds; None where nothing is known.

    Where Linux reports CPU pressure, `stall` (the share of the rounds' wall time during which
    some runnable task waited for a CPU) decides: above BUSY_STALL, tasks (this run's threads or
    another's) were queueing for the CPUs, and a fit's time includes waits for a CPU. That is
    measured over the rounds themselves and does not count this run's own threads as a burden
    unless they outnumber the free CPUs.

    Elsewhere the 1-minute load average decides: above the machine's logical CPUs. It counts this
    run's own threads too: T of ours and O of other work give T + O, and ours compete for a CPU
    once T + O exceeds the C CPUs, whatever T is, so the rule is load > C. It is weaker: an
    average over the last minute, not the rounds, it lags (a run's own first minute and its
    compilations' tail show in it) and it is machine-wide (a container limited to fewer CPUs
    than the host's cannot see its limit)."""
    if stall is not None:
        return stall > BUSY_STALL
    known = [load for load in loads if load is not None]
    if not known:
        return None
    return max(known) > (os.cpu_count() or 1)


# --- the GPU, through NVML ------------------------------------------------------------------------


def nvml_info(index: int) -> dict[str, Any]:
    """Driver and clocks (MHz) of GPU `index` through NVML, or {} where pynvml is not importable.

    NVML's index order can differ from CUDA's when CUDA_VISIBLE_DEVICES is set; the GPU is looked
    up by its UUID to be sure it is the one measured.
    """
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return {}
    try:
        handle = _handle(pynvml, cuda_uuid(index))
        info: dict[str, Any] = {"driver": _text(pynvml.nvmlSystemGetDriverVersion())}
        if handle is None:
            return info
        for key, query in (
            ("sm_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            ("mem_clock_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
            (
                "max_sm_clock_mhz",
                lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
            ),
            (
                "max_mem_clock_mhz",
                lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            ),
            (
                "app_sm_clock_mhz",
                lambda: pynvml.nvmlDeviceGetApplicationsClock(handle, pynvml.NVML_CLOCK_SM),
            ),
            ("power_limit_w", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000),
            (
                "temperature_c",
                lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
            ),
        ):
            try:
                info[key] = query()
            except pynvml.NVMLError:  # not supported on this GPU or driver
                info[key] = None
        return info
    except (pynvml.NVMLError, RuntimeError, AttributeError):
        return {}
    finally:
        pynvml.nvmlShutdown()


def cuda_uuid(index: int) -> str:
    """The UUID torch gives CUDA device `index` ("" where it has none)."""
    return _uuid(str(getattr(torch.cuda.get_device_properties(index), "uuid", "")))


def _handle(nvml: Any, uuid: str) -> Any:
    """NVML's handle of the GPU with this UUID, or None."""
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        if uuid and _uuid(_text(nvml.nvmlDeviceGetUUID(handle))) == uuid:
            return handle
    return None


# NVML's clock event ("throttle") reasons that mean heat or power held the SM clock down (nvml.h,
# nvmlClocksEventReason*): the software power cap, hardware slowdown (thermal or power brake),
# software and hardware thermal slowdown, and the power brake. Not counted: GPU idle, application
# clocks, sync boost and display clock settings, which say nothing about heat or power.
THROTTLE_REASONS: dict[str, int] = {
    "sw_power_cap": 0x04,
    "hw_slowdown": 0x08,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
}
THROTTLE_MASK = sum(THROTTLE_REASONS.values())


class GpuMonitor:
    """Reads one GPU's SM clock and throttle reasons through NVML, once per timed round (outside
    the timed region). Only reads; `open` gives None where NVML or the GPU cannot be had."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml = nvml
        self.handle = handle
        # The name changed in nvidia-ml-py 12 ("clocks event reasons"); the old one remains in
        # older releases.
        self._reasons = (
            getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        )

    @classmethod
    def open(cls, device: torch.device | str, nvml: Any = None) -> GpuMonitor | None:
        """A monitor of CUDA `device` (found by UUID), or None: not CUDA, no pynvml, no NVML."""
        device = torch.device(device)
        if device.type != "cuda":
            return None
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                return None
        index = device.index if device.index is not None else torch.cuda.current_device()
        return cls.for_uuid(nvml, cuda_uuid(index))

    @classmethod
    def for_uuid(cls, nvml: Any, uuid: str) -> GpuMonitor | None:
        try:
            nvml.nvmlInit()
        except nvml.NVMLError:
            return None
        try:
            handle = _handle(nvml, uuid)
            if handle is not None:
                monitor = cls(nvml, handle)
                # A GPU or driver that cannot answer gives no monitor at all.
                nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)
                monitor._reasons(handle)
                return monitor
        except (nvml.NVMLError, AttributeError):
            pass
        nvml.nvmlShutdown()
        return None

    def read(self) -> tuple[int | None, bool]:
        """(SM clock in MHz, whether heat or power throttles it now); (None, False) where NVML
        does not answer this time."""
        try:
            clock = self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)
            reasons = self._reasons(self.handle)
        except self.nvml.NVMLError:
            return None, False
        return int(clock), bool(int(reasons) & THROTTLE_MASK)

    def close(self) -> None:
        with contextlib.suppress(self.nvml.NVMLError):
            self.nvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _uuid(uuid: str) -> str:
    """NVML writes GPU-8c1e...; torch writes the bare UUID."""
    uuid = uuid.lower()
    return uuid.removeprefix("gpu-")


def collect(device: torch.device | str) -> dict[str, Any]:
    """What `machine_info["vecreg"]` holds for a run on `device`."""
    device = torch.device(device)
    info: dict[str, Any] = {
        "device": device.type,
        "device_name": device_name(device),
        "sm_count": None,
        "memory_bytes": None,
        "l2_cache_bytes": None,
        "compute_capability": None,
        "driver": None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton_version(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "malloc": _allocator if _allocator is not None else "unchanged: the C library's defaults",
        "platform": platform.platform(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "executable": sys.executable,
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(
            sm_count=props.multi_processor_count,
            memory_bytes=props.total_memory,
            l2_cache_bytes=getattr(props, "L2_cache_size", None),
            compute_capability=f"{props.major}.{props.minor}",
        )
        info.update(nvml_info(index))
    return info
