"""The machine's part of a measurement: torch's threads, glibc's allocator, the load average and
the GPU's clock and throttling. NVML is faked: no GPU is needed, and none is changed."""

import os
import sys

import pytest
import torch

from bench import environment
from bench.environment import THROTTLE_REASONS, GpuMonitor


class NVMLError(Exception):
    pass


class FakeNVML:
    """The few pynvml calls the monitor makes, over two GPUs; `reasons` is what the second GPU
    reports as its clock event reasons, `clock` its SM clock."""

    NVMLError = NVMLError
    NVML_CLOCK_SM = 1

    def __init__(self, reasons=0, clock=1980, new_api=True, init_fails=False):
        self.reasons, self.clock, self.init_fails = reasons, clock, init_fails
        self.inits = self.shutdowns = 0
        self.failing = False
        if new_api:
            self.nvmlDeviceGetCurrentClocksEventReasons = self._reasons
        else:
            self.nvmlDeviceGetCurrentClocksThrottleReasons = self._reasons

    def nvmlInit(self):
        if self.init_fails:
            raise NVMLError("driver not loaded")
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"handle{i}"

    def nvmlDeviceGetUUID(self, handle):
        return {"handle0": b"GPU-aaaa", "handle1": "GPU-BBBB"}[handle]

    def nvmlDeviceGetClockInfo(self, handle, kind):
        assert handle == "handle1" and kind == self.NVML_CLOCK_SM
        if self.failing:
            raise NVMLError("GPU is lost")
        return self.clock

    def _reasons(self, handle):
        assert handle == "handle1"
        return self.reasons


def test_the_monitor_finds_the_measured_gpu_by_uuid_and_reads_its_clock():
    nvml = FakeNVML(clock=1755)
    monitor = GpuMonitor.for_uuid(nvml, "bbbb")
    assert monitor is not None and monitor.handle == "handle1"
    assert monitor.read() == (1755, False)
    monitor.close()
    assert nvml.inits == nvml.shutdowns == 1


@pytest.mark.parametrize("reason", sorted(THROTTLE_REASONS))
def test_heat_and_power_throttling_flag_a_round(reason):
    monitor = GpuMonitor.for_uuid(FakeNVML(reasons=THROTTLE_REASONS[reason] | 0x1), "bbbb")
    assert monitor.read() == (1980, True)


@pytest.mark.parametrize(
    ("reasons", "meaning"),
    [(0x0, "none"), (0x1, "gpu idle"), (0x2, "application clocks"), (0x10, "sync boost")],
)
def test_other_clock_reasons_do_not_flag_a_round(reasons, meaning):
    assert GpuMonitor.for_uuid(FakeNVML(reasons=reasons), "bbbb").read() == (1980, False)


def test_the_older_nvml_name_of_the_reasons_is_used_where_the_new_one_is_missing():
    monitor = GpuMonitor.for_uuid(FakeNVML(reasons=0x4, new_api=False), "bbbb")
    assert monitor.read() == (1980, True)


def test_no_monitor_without_nvml_or_the_gpu_and_a_lost_reading_is_no_flag():
    assert GpuMonitor.for_uuid(FakeNVML(init_fails=True), "bbbb") is None
    nvml = FakeNVML()
    assert GpuMonitor.for_uuid(nvml, "cccc") is None and nvml.shutdowns == 1
    assert GpuMonitor.open("cpu", nvml=FakeNVML()) is None
    monitor = GpuMonitor.for_uuid(nvml, "bbbb")
    nvml.failing = True
    assert monitor.read() == (None, False)


def test_busy_means_tasks_waiting_for_a_cpu_where_linux_says_so(monkeypatch):
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    assert environment.busy((9.0, 9.0), 0.01) is False  # the load alone does not decide
    assert environment.busy((0.1, 0.1), 0.2) is True
    assert environment.busy((None, None), 0.0) is False


def test_elsewhere_busy_means_a_load_above_the_machines_cpus(monkeypatch):
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    assert environment.busy((1.9, 2.0), None) is False
    assert environment.busy((0.3, 2.2), None) is True
    assert environment.busy((2.01, None), None) is True
    assert environment.busy((None, None), None) is None


def test_cpu_pressure_is_read_from_its_some_total(monkeypatch, tmp_path):
    pressure = tmp_path / "cpu"
    pressure.write_text(
        "some avg10=17.83 avg60=30.35 avg300=24.20 total=326947053\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    monkeypatch.setattr(environment, "PRESSURE_CPU", str(pressure))
    assert environment.cpu_stall_total() == pytest.approx(326.947053)
    monkeypatch.setattr(environment, "PRESSURE_CPU", str(tmp_path / "absent"))
    assert environment.cpu_stall_total() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the load average is Linux's")
def test_the_load_average_is_read_on_linux():
    load = environment.load_average()
    assert load is not None and load >= 0


def test_the_load_average_is_not_read_elsewhere(monkeypatch):
    monkeypatch.setattr(environment.sys, "platform", "darwin")
    assert environment.load_average() is None


def test_threads_are_fixed_and_recorded():
    before = torch.get_num_threads()
    try:
        assert environment.set_threads(1) == 1 and torch.get_num_threads() == 1
        assert environment.collect("cpu")["torch_threads"] == 1
        assert environment.set_threads(None) == environment.default_threads()
    finally:
        torch.set_num_threads(before)
    assert 1 <= environment.default_threads() <= (os.cpu_count() or 1)


def test_the_allocator_setting_is_made_once_and_recorded(monkeypatch):
    monkeypatch.setattr(environment, "_allocator", None)
    for name in (*environment.MALLOC_ENVIRONMENT, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    setting = environment.steady_allocator()
    assert environment.steady_allocator() is setting
    assert environment.collect("cpu")["malloc"] == setting
    if sys.platform.startswith("linux") and environment.platform.libc_ver()[0] == "glibc":
        assert setting["M_MMAP_THRESHOLD"] in (2**30, 32 * 2**20)
        assert setting["M_TRIM_THRESHOLD"] == 2**31 - 1
    else:
        assert setting.startswith("unchanged")


def test_the_allocator_is_left_alone_off_glibc(monkeypatch):
    monkeypatch.setattr(environment.sys, "platform", "darwin")
    assert environment._set_malloc_thresholds() == "unchanged: not Linux with glibc"


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or environment.platform.libc_ver()[0] != "glibc",
    reason="glibc's thresholds",
)
def test_thresholds_set_in_the_environment_are_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "33554432")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=9:glibc.malloc.arena_max=2")
    assert environment._set_malloc_thresholds() == (
        "unchanged: set in the environment, MALLOC_MMAP_THRESHOLD_=33554432 "
        "glibc.malloc.trim_threshold=9"
    )
