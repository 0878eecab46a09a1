"""The analytic loop captured once as a CUDA graph and replayed: K steps, one launch from the host.

One graph is captured per device, dtype, shape and K (the loop is unrolled into it). lr lives in
a device tensor that the graph reads, so a new lr needs no recapture; the inputs are copied into
the graph's static buffers before each replay and x is copied out after it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from bench.methods.base import Method, as_compute, compute_dtype

# Each captured graph holds its static buffers (x, t, and the loop's temporaries in its private
# memory pool: a few times x's size). A sweep visits many shapes: keep only the latest few.
MAX_GRAPHS = 4
WARMUP_STEPS = 3  # run on a side stream before capture, as torch.cuda.graphs advises
# cudaStreamCaptureModeThreadLocal: only this thread is barred from unsafe CUDA calls (a
# cudaMalloc, a synchronize) while it captures. The default, "global", bars every thread of the
# process, so another thread's work (jax's, a data loader's) would fail or break the capture.
CAPTURE_ERROR_MODE = "thread_local"


def analytic_loop(x: torch.Tensor, t: torch.Tensor, lr: torch.Tensor, loss: torch.Tensor) -> None:
    """`analytic`, with lr as a device tensor: len(loss) steps on x in place, loss[k] at x_k.

    Nothing here reads a value back to the host, so the whole loop can be captured.
    """
    acc = compute_dtype(x.dtype)
    t_acc = t.to(acc)
    scale = lr * (2.0 / x.shape[1])
    for k in range(loss.shape[0]):
        x_acc = x if x.dtype == acc else x.to(acc)
        diff = x_acc - t_acc
        loss[k] = diff.square().mean()
        if x_acc is x:
            x.addcmul_(diff, scale, value=-1)
        else:
            x.copy_(x_acc.addcmul_(diff, scale, value=-1))


@dataclass
class Captured:
    """A captured K-step loop and the static tensors it reads and writes."""

    graph: torch.cuda.CUDAGraph
    x: torch.Tensor
    t: torch.Tensor
    lr: torch.Tensor
    loss: torch.Tensor


def capture(x: torch.Tensor, t: torch.Tensor, steps: int) -> Captured:
    """Capture `analytic_loop` for x's shape, dtype and device and `steps` steps."""
    acc = compute_dtype(x.dtype)
    static = Captured(
        graph=torch.cuda.CUDAGraph(),
        x=torch.empty_like(x, memory_format=torch.contiguous_format).copy_(x),
        t=torch.empty_like(t, memory_format=torch.contiguous_format).copy_(t),
        lr=torch.zeros((), dtype=acc, device=x.device),
        loss=torch.empty(steps, dtype=acc, device=x.device),
    )
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        analytic_loop(static.x, static.t, static.lr, static.loss[:WARMUP_STEPS])
    torch.cuda.current_stream(x.device).wait_stream(side)
    with torch.cuda.graph(static.graph, capture_error_mode=CAPTURE_ERROR_MODE):
        analytic_loop(static.x, static.t, static.lr, static.loss)
    return static


class Graphs(Method):
    name = "graphs"
    summary = "the analytic loop captured once as a CUDA graph and replayed (lr a device tensor)"

    def __init__(self) -> None:
        self._graphs: OrderedDict[tuple, Captured] = OrderedDict()

    def available(self, device: str | torch.device) -> str | None:
        if torch.device(device).type != "cuda":
            return "CUDA graphs need a CUDA device"
        return None

    def _captured(self, x: torch.Tensor, t: torch.Tensor, steps: int) -> Captured:
        key = (x.device, x.dtype, tuple(x.shape), steps)
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            while len(self._graphs) >= MAX_GRAPHS:
                self._graphs.popitem(last=False)
            self._graphs[key] = capture(x, t, steps)
        return self._graphs[key]

    def prepare(self, x0: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> None:
        """Capture for this shape, dtype and K (untimed), and replay once."""
        self.fit(x0, t, lr, steps)

    def run(self, x: torch.Tensor, t: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
        static = self._captured(x, t, steps)
        static.x.copy_(x)
        static.t.copy_(t)
        static.lr.fill_(as_compute(lr, x.dtype))
        static.graph.replay()
        x.copy_(static.x)
        # The next replay overwrites static.loss: hand back a copy.
        return static.loss.to(torch.float32, copy=True)
