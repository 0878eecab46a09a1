"""The peer from another framework: jax.jit of a lax.scan over the same step (optional extra)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from typing import Any

import torch

from bench.methods.base import Method, as_compute

INSTALL_HINT = 'install the optional peers: pip install -e ".[peers]"'


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
            acc = jax.numpy.float64 if wide else jax.numpy.float32
            # lr enters as an array, not a constant: a new lr does not recompile.
            scale = jax.device_put(
                jax.numpy.asarray(as_compute(2.0 * lr / x.shape[1], x.dtype), acc),
                jax_device(x.device),
            )
            x_k, loss = jitted_fit()(
                jax.dlpack.from_dlpack(x), jax.dlpack.from_dlpack(t), scale, steps
            )
            x_k.block_until_ready()
            loss.block_until_ready()
            x.copy_(torch.from_dlpack(x_k))
            return torch.from_dlpack(loss).float()
