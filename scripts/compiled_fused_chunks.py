"""The chunk-size study behind `compiled_fused`'s default C: compile time and fit time against C.

    python scripts/compiled_fused_chunks.py                     # C = 1 2 5 10 20 25 50 100
    python scripts/compiled_fused_chunks.py --chunks 5 10 20 --compare compiled analytic
    python scripts/compiled_fused_chunks.py --device cuda --steps 1000 --batch 16384 --dim 1024

Two phases, each C in processes of its own with an empty inductor cache (no graph cached by an
earlier run can hide a compile):

1. Compile, one process per C, killed past --timeout; C stops growing once a compile takes
   longer than --max-compile. `first s`: a throwaway compile of another graph (a C=1 chunk at
   2 x 3), inductor's one-time start in a process (imports, the C++ toolchain's first run), which
   the first compiled method of a run pays whatever its C; `compile s`: then `prepare` at the
   problem's shape, the compile that C itself costs (what the harness records as setup after it).
2. Fits, every C that compiled (and each --compare method, e.g. compiled, analytic) prepared in
   one process and timed in turns: a round is one fit of each, in an order that rotates, so that a
   slower or busier minute of the machine falls on all of them alike. A fit is timed as the
   benchmark suite times one (a fresh copy of x0 outside the timed region, the host waiting for
   the device). Rounds go on until every median's 95% interval (bench.stats) is within +-2% or
   --budget seconds are spent, at least --min-fits. A fit during which some task waited for a CPU
   more than 5% of the time (Linux's CPU pressure, bench.environment.BUSY_STALL) is left out
   while enough quiet ones remain; the table says how many fits were kept of how many.

The default C it recommends: among the C whose compile stays within --compile-budget seconds,
the fastest fit; of those whose interval overlaps the fastest's, the smallest C (fewer steps to
compile, less work thrown away in a remainder chunk); and its speedup over each --compare
method, the ratio of median fit times with its 95% interval (bench.stats.ratio_interval).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_CHUNKS = (1, 2, 5, 10, 20, 25, 50, 100)
PRECISION = 0.02  # the relative half-width of the median's interval at which fits stop


def setup(args: argparse.Namespace):
    """The harness's quiet-measurement settings, the device and the problem's inputs."""
    import torch

    from bench import environment
    from bench.problem import Problem

    environment.steady_allocator()
    threads = environment.set_threads(args.threads)
    device = torch.device(args.device)
    problem = Problem(
        batch=args.batch, dim=args.dim, steps=args.steps, lr=args.lr_fraction * args.dim
    )
    return threads, device, problem, problem.inputs(device)


def make_method(case: str):
    """'compiled_fused:C' or a registered method's name."""
    from bench.methods import get_method
    from bench.methods.compiled_fused import CompiledFused

    name, _, chunk = case.partition(":")
    return CompiledFused(chunk=int(chunk)) if name == "compiled_fused" else get_method(name)


def compile_worker(args: argparse.Namespace) -> dict:
    from bench.methods.compiled_fused import CompiledFused
    from bench.problem import Problem
    from bench.timing import synchronize

    _, device, problem, (x0, t) = setup(args)
    begin = time.perf_counter()
    wx, wt = Problem(batch=2, dim=3, steps=1).inputs(device)
    CompiledFused(chunk=1).prepare(wx, wt, 0.1, 1)
    synchronize(device)
    first_s = time.perf_counter() - begin
    begin = time.perf_counter()
    make_method(args.cases[0]).prepare(x0, t, problem.lr, problem.steps)
    synchronize(device)
    return {"first_s": first_s, "compile_s": time.perf_counter() - begin}


def fits_worker(args: argparse.Namespace) -> dict:
    import torch

    from bench import environment, oracle
    from bench.stats import median_interval
    from bench.timing import synchronize

    threads, device, problem, (x0, t) = setup(args)
    methods = {case: make_method(case) for case in args.cases}
    errors = {}
    for case, method in methods.items():
        method.prepare(x0, t, problem.lr, problem.steps)
        fit = method.fit(x0, t, problem.lr, problem.steps)
        expected = oracle.x_at(x0, t, problem.lr, problem.steps)
        errors[case] = (fit.x.double() - expected).abs().max().item()

    def one_fit(method) -> tuple[float, float | None]:
        """Host seconds of one fit, and the share of them some task waited for a CPU."""
        x = x0.clone()
        synchronize(device)
        stall = environment.cpu_stall_total()
        start = time.perf_counter()
        method.run(x, t, problem.lr, problem.steps)
        synchronize(device)
        host = time.perf_counter() - start
        after = environment.cpu_stall_total()
        return host, None if stall is None or after is None else (after - stall) / host

    for method in methods.values():  # two warm-up fits each
        one_fit(method)
        one_fit(method)
    samples: dict[str, list[tuple[float, float | None]]] = {case: [] for case in methods}
    loads = [os.getloadavg()[0]]
    start, rounds = time.perf_counter(), 0

    def quiet(case: str) -> list[float]:
        kept = [h for h, s in samples[case] if s is None or s <= environment.BUSY_STALL]
        return kept if len(kept) >= args.min_fits else [h for h, _ in samples[case]]

    while True:
        order = list(methods)[rounds % len(methods) :] + list(methods)[: rounds % len(methods)]
        for case in order:
            samples[case].append(one_fit(methods[case]))
        rounds += 1
        if rounds < args.min_fits:
            continue
        precise = all(median_interval(quiet(c)).relative_halfwidth() <= PRECISION for c in methods)
        if precise or time.perf_counter() - start >= args.budget:
            break
    loads.append(os.getloadavg()[0])
    rows = {}
    for case in methods:
        kept = quiet(case)
        interval = median_interval(kept)
        rows[case] = {
            "fit_ms": interval.estimate * 1e3,
            "fit_low_ms": interval.low * 1e3,
            "fit_high_ms": interval.high * 1e3,
            "fits": len(kept),
            "rounds": rounds,
            "oracle_max_abs_err": errors[case],
            "host_s": kept,
        }
    return {
        "rows": rows,
        "load": loads,
        "seconds": time.perf_counter() - start,
        "threads": threads,
        "problem": problem.name,
        "device": environment.device_name(device),
        "torch": torch.__version__,
    }


def spawn(args: argparse.Namespace, phase: str, cases: list[str], timeout: float) -> dict:
    """Run a worker in a fresh process and inductor cache: its answer, or {'error': why}."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        phase,
        "--cases",
        *cases,
        *("--device", args.device, "--batch", str(args.batch), "--dim", str(args.dim)),
        *("--steps", str(args.steps), "--lr-fraction", str(args.lr_fraction)),
        *("--budget", str(args.budget), "--min-fits", str(args.min_fits)),
        *("--threads", str(args.threads)),
    ]
    with tempfile.TemporaryDirectory(prefix="compiled_fused_study_") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        # A session of its own: on a timeout the worker and its compile processes end together.
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"over {timeout:g} s"}
    if proc.returncode != 0:
        return {"error": (err.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}
    return json.loads(out.strip().splitlines()[-1])


def label(case: str) -> str:
    name, _, chunk = case.partition(":")
    return f"C={chunk}" if name == "compiled_fused" else name


def table(compiles: dict[str, dict], fits: dict[str, dict]) -> str:
    lines = [
        "| method | first s | compile s | fit ms median [95% interval] | fits kept / rounds "
        "| max abs err |",
        "| --- | ---: | ---: | --- | --- | ---: |",
    ]
    for case, comp in compiles.items():
        if "error" in comp:
            lines.append(f"| {label(case)} | | {comp['error']} | | | |")
            continue
        first = "" if comp.get("first_s") is None else f"{comp['first_s']:.1f}"
        compile_s = "" if comp.get("compile_s") is None else f"{comp['compile_s']:.1f}"
        row = fits.get(case)
        if row is None:
            lines.append(f"| {label(case)} | {first} | {compile_s} | not timed | | |")
            continue
        lines.append(
            f"| {label(case)} | {first} | {compile_s} "
            f"| {row['fit_ms']:.2f} [{row['fit_low_ms']:.2f}, {row['fit_high_ms']:.2f}] "
            f"| {row['fits']} / {row['rounds']} | {row['oracle_max_abs_err']:.2g} |"
        )
    return "\n".join(lines)


def recommend(compiles: dict[str, dict], fits: dict[str, dict], budget: float) -> int | None:
    """The fastest C compiled within budget; the smallest C whose interval overlaps it."""
    ok = {
        int(case.partition(":")[2]): fits[case]
        for case, comp in compiles.items()
        if case.startswith("compiled_fused:") and case in fits and comp["compile_s"] <= budget
    }
    if not ok:
        return None
    best = min(ok.values(), key=lambda r: r["fit_ms"])
    return min(c for c, r in ok.items() if r["fit_low_ms"] <= best["fit_high_ms"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=list(DEFAULT_CHUNKS))
    parser.add_argument("--compare", nargs="*", default=[], help="other methods timed alike")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr-fraction", type=float, default=0.05, help="lr / D, as the sweeps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the cores)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed rounds")
    parser.add_argument("--min-fits", type=int, default=30, help="rounds at least")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per compile")
    parser.add_argument("--max-compile", type=float, default=60.0, help="stop growing C past it")
    parser.add_argument("--compile-budget", type=float, default=20.0, help="for the default C")
    parser.add_argument("--json", help="write the results to this file too")
    parser.add_argument("--worker", choices=["compile", "fits"], help=argparse.SUPPRESS)
    parser.add_argument("--cases", nargs="+", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker = compile_worker if args.worker == "compile" else fits_worker
        print(json.dumps(worker(args)))
        return 0

    compiles: dict[str, dict] = {}
    for chunk in sorted(args.chunks):
        case = f"compiled_fused:{chunk}"
        compiles[case] = spawn(args, "compile", [case], args.timeout)
        print(table({case: compiles[case]}, {}).splitlines()[-1], file=sys.stderr, flush=True)
        if "error" in compiles[case] or compiles[case]["compile_s"] > args.max_compile:
            print(f"C={chunk}: compile over {args.max_compile:g} s; C stops here", file=sys.stderr)
            break
    compiled = [case for case, comp in compiles.items() if "error" not in comp]
    cases = compiled + list(args.compare)
    compile_time = sum(compiles[c]["compile_s"] + compiles[c]["first_s"] for c in compiled)
    timed = spawn(args, "fits", cases, 3 * compile_time + args.budget + 2 * args.timeout)
    if "error" in timed:
        print(f"the timed fits failed: {timed['error']}", file=sys.stderr)
        return 1
    for method in args.compare:
        compiles[method] = {"first_s": None, "compile_s": None}
    fits = timed["rows"]
    print(
        f"{timed['problem']} on {timed['device']}, {timed['threads']} torch threads, "
        f"torch {timed['torch']}, {os.cpu_count()} CPUs; timed rounds {timed['seconds']:.0f} s, "
        f"1-minute load {timed['load'][0]:.2f} before and {timed['load'][1]:.2f} after"
    )
    print(table(compiles, fits))
    choice = recommend(compiles, fits, args.compile_budget)
    if choice is None:
        print(f"no C compiled within {args.compile_budget:g} s")
    else:
        print(
            f"default C = {choice}: the fastest fit, or tied with it, among the C compiled "
            f"within {args.compile_budget:g} s"
        )
    from bench.stats import ratio_interval

    for method in args.compare if choice is not None else ():
        speedup = ratio_interval(fits[method]["host_s"], fits[f"compiled_fused:{choice}"]["host_s"])
        print(
            f"C={choice} against {method}: {speedup.estimate:.2f}x faster "
            f"[{speedup.low:.2f}, {speedup.high:.2f}] (ratio of median fit times, 95% interval)"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"compiles": compiles, **timed}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
