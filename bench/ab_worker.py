"""The worker of `python -m bench ab`: one process per side, timing that side's own code.

It is run as a script, `python bench/ab_worker.py TREE`, from the harness that runs `ab` (the
candidate's), in any revision's checkout TREE, however old: it uses only the public API every
revision has (bench.problem.Problem and its `inputs`, bench.methods.get_method, Method.available,
prepare, run and fit) and nothing else of the harness. Before anything else it puts TREE first on
sys.path and takes its own folder off it, so `bench` and `kernels` come from TREE whatever
PYTHONPATH, PYTHONSAFEPATH or an editable install (whose finder comes after sys.path) say; it
then reports the files it imported and the commit of their checkout, and the parent refuses a side
that imported another tree.

Protocol: one JSON object a line, requests on stdin, answers on stdout (the real stdout, kept for
the protocol alone: anything else printed goes to stderr, the worker's log).

- at start: {"event": "hello", "bench": FILE, "kernels": FILE or null, "foreign": [MODULE FILE],
  "commit": SHA or null, "dirty": BOOL, "python": VERSION, "torch": VERSION, "threads": N,
  "malloc": {glibc's MALLOC_*_ variables} or a string}, or
  {"event": "error", "message": ...} where TREE's `bench` cannot be imported;
- {"cmd": "prepare", "case": ID, "method": NAME, "problem": {Problem fields}, "device": DEVICE}:
  untimed preparation (compile, autotune), the fit checked against the closed form, one probe fit;
  answer {"event": "prepared", "case": ID, "status": "ok" | "skipped" | "failed", "reason",
  "setup_s", "probe_s", "oracle_max_abs_err", "oracle_tolerance", "oracle_ok", "foreign"};
- {"cmd": "sample", "case": ID, "n": N}: N fits timed as bench.timing times one (a fresh copy of
  x0 made outside the timed region, the host waiting for the device); answer {"event": "samples",
  "case": ID, "host_s": [...], "device_s": [...] or null}, or {"event": "failed", ...};
- {"cmd": "exit"}, or the end of stdin: the worker exits.

Standard library only at module level: nothing of `bench` may be imported before sys.path is set.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from typing import Any

PACKAGES = ("bench", "kernels")


def put_tree_first(tree: str) -> None:
    """TREE first on sys.path, and this script's own folder (the running harness's `bench/`,
    which Python puts first unless -P or PYTHONSAFEPATH) off it."""
    here = os.path.dirname(os.path.realpath(__file__))
    rest = [p for p in sys.path if os.path.realpath(p or os.curdir) != here]
    sys.path[:] = [tree, *rest]


def module_file(name: str) -> str | None:
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if path else None


def foreign_modules(tree: str) -> list[str]:
    """'MODULE FILE' for each loaded module of `bench` or `kernels` whose file is not in TREE."""
    root = os.path.realpath(tree) + os.sep
    found = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in PACKAGES:
            continue
        path = getattr(module, "__file__", None)
        if path and not os.path.realpath(path).startswith(root):
            found.append(f"{name} {os.path.realpath(path)}")
    return sorted(found)


def checkout_commit(folder: str) -> tuple[str | None, bool]:
    """(HEAD's commit, whether tracked files differ from it) of the git checkout holding
    `folder`; (None, False) where it is in none."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", folder, *args], capture_output=True, text=True, timeout=60
            )
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return commit, bool(status)


def oracle_check(method: Any, problem: Any, x0: Any, t: Any) -> tuple[float, float]:
    """(max |x_K - closed form|, its tolerance) for one fit: the rule of bench.timing.oracle_check
    (a copy: this script may not import the side's harness beyond the public API; a test checks
    that the two agree)."""
    import torch

    lr, steps = problem.lr, problem.steps
    # The closed form: x_K - t = (1 - 2 lr / D)^K (x0 - t), in float64.
    expected = t.double() + (1.0 - 2.0 * lr / x0.shape[-1]) ** steps * (x0.double() - t.double())
    fit = method.fit(x0, t, lr, steps)
    err = (fit.x.double() - expected).abs().max().item()
    scale = max(x0.abs().max().item(), t.abs().max().item(), 1.0)
    tolerance = 4 * (steps + 1) * torch.finfo(x0.dtype).eps * scale
    if x0.dtype in (torch.float16, torch.bfloat16):
        x = x0.clone()
        for _ in range(steps):
            x = x - lr * 2 * (x - t) / x.shape[1]
        plain_err = (x.double() - expected).abs().max().item()
        tolerance = max(tolerance, 2 * plain_err + torch.finfo(x0.dtype).eps * scale)
    return err, tolerance


class Worker:
    def __init__(self, tree: str, out: Any) -> None:
        self.tree = tree
        self.out = out
        self.cases: dict[int, tuple[Any, Any, Any, Any, Any]] = {}

    def send(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def hello(self) -> bool:
        if not os.path.isfile(os.path.join(self.tree, "bench", "__init__.py")):
            # Python would go on to the next `bench` on sys.path: the parent refuses that too,
            # but this says why.
            message = f"{self.tree} has no bench package: not a vecreg-bench revision"
            self.send({"event": "error", "message": message})
            return False
        try:
            names = ["bench", "bench.problem", "bench.methods"]
            if os.path.isfile(os.path.join(self.tree, "kernels", "__init__.py")):
                names.append("kernels")  # imported lazily by the methods: checked now
            for name in names:
                importlib.import_module(name)
        except BaseException as exc:  # said to the parent, which says it in one line
            traceback.print_exc()
            self.send({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
            return False
        import torch

        bench_file = module_file("bench")
        commit, dirty = checkout_commit(os.path.dirname(os.path.dirname(bench_file or self.tree)))
        self.send(
            {
                "event": "hello",
                "bench": bench_file,
                "kernels": module_file("kernels"),
                "foreign": foreign_modules(self.tree),
                "commit": commit,
                "dirty": dirty,
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "malloc": {
                    name: os.environ[name]
                    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
                    if name in os.environ
                }
                or "unchanged: the C library's defaults",
            }
        )
        return True

    def prepare(self, request: dict[str, Any]) -> None:
        import torch

        from bench.methods import get_method
        from bench.problem import Problem

        case = request["case"]
        answer: dict[str, Any] = {"event": "prepared", "case": case}
        try:
            method = get_method(request["method"])
        except (KeyError, ValueError):
            answer.update(status="skipped", reason="no such method in this revision")
            self.send({**answer, "foreign": foreign_modules(self.tree)})
            return
        try:
            fields = dict(request["problem"])
            if fields.get("target") is not None:
                fields["target"] = tuple(fields["target"])
            problem = Problem(**fields)
            device = torch.device(request["device"])
            can_time = getattr(method, "can_time", None)
            reason = can_time(problem, device) if can_time else method.available(device)
            if reason is not None:
                answer.update(status="skipped", reason=str(reason))
            else:
                answer.update(self._prepare(case, method, problem, device))
        except Exception as exc:  # a broken method fails its case, not the run
            traceback.print_exc()
            answer.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        self.send({**answer, "foreign": foreign_modules(self.tree)})

    def _prepare(self, case: int, method: Any, problem: Any, device: Any) -> dict[str, Any]:
        lr, steps = problem.lr, problem.steps
        x0, t = problem.inputs(device)
        t = t.contiguous()
        synchronize(device)
        begin = time.perf_counter()
        method.prepare(x0, t, lr, steps)
        synchronize(device)
        setup_s = time.perf_counter() - begin
        err, tolerance = oracle_check(method, problem, x0, t)
        self.cases[case] = (method, problem, device, x0, t)
        probe_s = min(self._time_fits(case, 2)[0])  # warm-up; the faster one sizes the rounds
        return {
            "status": "ok",
            "setup_s": setup_s,
            "probe_s": probe_s,
            "oracle_max_abs_err": err,
            "oracle_tolerance": tolerance,
            "oracle_ok": bool(err <= tolerance),  # False for NaN
        }

    def sample(self, request: dict[str, Any]) -> None:
        case = request["case"]
        try:
            host_s, device_s = self._time_fits(case, int(request["n"]))
        except Exception as exc:
            traceback.print_exc()
            self.send({"event": "failed", "case": case, "reason": f"{type(exc).__name__}: {exc}"})
            return
        self.send({"event": "samples", "case": case, "host_s": host_s, "device_s": device_s})

    def _time_fits(self, case: int, n: int) -> tuple[list[float], list[float] | None]:
        """N fits, each timed as bench.timing times one: a fresh copy of x0 outside the timed
        region; the timed region is the method's run and the wait for the device (CUDA events
        time the device's span too)."""
        import torch

        method, problem, device, x0, t = self.cases[case]
        lr, steps = problem.lr, problem.steps
        run = getattr(method, "run", None)
        cuda = device.type == "cuda"
        host_s: list[float] = []
        device_s: list[float] = []
        for _ in range(n):
            x = x0.clone(memory_format=torch.contiguous_format)
            synchronize(device)
            if cuda:
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
            begin = time.perf_counter()
            if cuda:
                start.record()
            if run is not None:
                run(x, t, lr, steps)
            else:  # a revision older than the run/fit split: fit copies x0 inside the timing
                method.fit(x, t, lr, steps)
            if cuda:
                end.record()
            synchronize(device)
            host_s.append(time.perf_counter() - begin)
            if cuda:
                device_s.append(start.elapsed_time(end) / 1e3)
        return host_s, (device_s if cuda else None)


def synchronize(device: Any) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python ab_worker.py TREE", file=sys.stderr)
        return 2
    tree = os.path.realpath(argv[0])
    put_tree_first(tree)
    # The protocol keeps the real stdout; whatever a library prints goes to stderr, the log.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    worker = Worker(tree, out)
    if not worker.hello():
        return 1
    handlers = {"prepare": worker.prepare, "sample": worker.sample}
    for line in iter(sys.stdin.readline, ""):
        request = json.loads(line)
        if request["cmd"] == "exit":
            break
        handlers[request["cmd"]](request)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
