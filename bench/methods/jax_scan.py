"""The peer from another framework: jax.jit of a lax.scan over the same step (optional extra).

XLA runs the scan on its own CUDA stream, with its own allocator: CUDA events on torch's stream
would not bracket its work and torch's memory statistics do not count it, so on CUDA jax is timed
by the host clock only (the fit ends with block_until_ready), and the results say so
(`no_event_span_reason`); the profiler, which records every kernel of the process, still sees it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections import OrderedDict
from typing import Any

import torch

from bench.methods.base import Method, as_compute

INSTALL_HINT = 'install the optional peers: pip install -e ".[peers]"'
# Step scales kept on the device, one per device, dtype, D and lr; a sweep visits a few dozen.
MAX_SCALES = 64


@functools.cache
def jax_module() -> Any:
    # By default JAX takes 75% of the GPU's memory at its first use, which would starve torch in
    # the same process; allocate on demand instead (read when JAX starts its GPU backend).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    return jax


@functools.cache
def jax_device(device: torch.device) -> Any:
    """JAX's device for a torch device; RuntimeError when JAX has no such backend."""
    jax = jax_module()
    if device.type == "cpu":
        return jax.devices("cpu")[0]
    return jax.devices("gpu")[device.index or 0]


def x64(enabled: bool) -> contextlib.AbstractContextManager:
    """float64 needs JAX's 64-bit mode, which is off by default (float64 would become float32)."""
    if not enabled:
        return contextlib.nullcontext()
    jax = jax_module()
    if hasattr(jax, "enable_x64"):  # jax >= 0.8: a config state usable as a context manager
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


@functools.cache
def jitted_fit() -> Any:
    """fit(x, t, scale, steps) -> (x_K, loss[K]); compiled once per shape, dtype and K."""
    jax = jax_module()
    jnp = jax.numpy

    def fit(x, t, scale, steps):
        acc = scale.dtype  # float32, or float64 for float64 inputs
        t_acc = t.astype(acc)

        def step(x, _):
            x_acc = x.astype(acc)
            diff = x_acc - t_acc
            return (x_acc - scale * diff).astype(x.dtype), jnp.mean(diff * diff)

        return jax.lax.scan(step, x, None, length=steps)

    return jax.jit(fit, static_argnums=3)


class Jax(Method):
    name = "jax"
    summary = "jax.jit of a lax.scan over the same step (float32 arithmetic, x in its dtype)"
    outside_torch = (
        "jax runs on XLA's own CUDA stream and allocator, which torch's events and memory "
        "statistics do not see: timed by the host clock only"
    )

    def __init__(self) -> None:
        self._scales: OrderedDict[tuple, Any] = OrderedDict()

    def scale(self, x: torch.Tensor, lr: float) -> Any:
        """2 lr / D in the compute dtype, as a JAX array on x's device: made (a host-to-device
        copy) once per device, dtype, D and lr, in the untimed `prepare`, not in every fit. lr
        enters the scan as an array, not a constant: a new lr does not recompile. Call it where
        x64 mode is as the fit needs it."""
        key = (x.device, x.dtype, x.shape[1], lr)
        if key in self._scales:
            self._scales.move_to_end(key)
            return self._scales[key]
        jax = jax_module()
        acc = jax.numpy.float64 if x.dtype == torch.float64 else jax.numpy.float32
        value = jax.device_put(
            jax.numpy.asarray(as_compute(2.0 * lr / x.shape[1], x.dtype), acc),
            jax_device(x.device),
        )
        while len(self._scales) >= MAX_SCALES:
            self._scales.popitem(last=False)
        self._scales[key] = value
        return value

    def available(self, device: str | torch.device) -> str | None:
        if importlib.util.find_spec("jax") is None:
            return f"jax is not installed; {INSTALL_HINT}"
        dev = torch.device(device)
        try:
            jax_device(dev)
        except (RuntimeError, IndexError) as exc:
            return (
                f"jax has no {dev.type} device here ({exc}); "
                "for CUDA, install a CUDA build of JAX (e.g. jax[cuda13])"
            )
        return None

    def prepare(self, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> None:
        """The scan's length is static: compile for exactly this K (one whole fit, untimed)."""
        self.fit(x0, t, lr, steps)

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        jax = jax_module()
        wide = x.dtype == torch.float64
        with x64(wide):
            scale = self.scale(x, lr)
            x_k, loss = jitted_fit()(
                jax.dlpack.from_dlpack(x), jax.dlpack.from_dlpack(t), scale, steps
            )
            x_k.block_until_ready()
            loss.block_until_ready()
            x.copy_(torch.from_dlpack(x_k))
            return torch.from_dlpack(loss).float()
