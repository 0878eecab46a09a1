"""The environment a run measured: device, versions, CPU, and GPU clocks where NVML is present.

Stored in `machine_info["vecreg"]` of every results file. Everything here only reads: the harness
never changes clocks, power limits or any other GPU setting.
"""

from __future__ import annotations

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
        uuid = _uuid(str(getattr(torch.cuda.get_device_properties(index), "uuid", "")))
        handle = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            if uuid and _uuid(_text(pynvml.nvmlDeviceGetUUID(h))) == uuid:
                handle = h
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
        "compute_capability": None,
        "driver": None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "triton": triton_version(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
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
            compute_capability=f"{props.major}.{props.minor}",
        )
        info.update(nvml_info(index))
    return info
