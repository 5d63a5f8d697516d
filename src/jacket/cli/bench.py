"""``jacket bench``: run the benchmarks (quick sizes by default) and write their results.

Each benchmark (``jacket_bench.grad``, ``associativity``, ``orders``, ``planning``, ``scaling``, ``curvature``,
``memory``) prints its table and writes ``<out>/<device>/<name>.json`` and ``.png``; ``memory``
compiles without timing and sets ``Plan.memory`` (bytes) beside XLA's memory analysis. The timing method is described in
benchmarks/README.md and :mod:`jacket_bench.timing`.
"""
from __future__ import annotations

import os
import sys
import time

HELP = "time jacket against JAX (gradient, Jacobian orders, curvature, planning) and write JSON + PNG results"


def add_arguments(parser):
    from jacket_bench import BENCHMARKS
    parser.add_argument("--full", action="store_true",
                        help="full sweeps (default: a quick run, about 2 minutes on CPU)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None,
                        help="JAX platform to run on (default: JAX's default device)")
    parser.add_argument("--only", default=None, metavar="NAMES",
                        help=f"comma-separated subset of: {','.join(BENCHMARKS)}")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="results folder; files go to DIR/<device>/ (default: benchmarks/results)")


def selected(only: str | None) -> list[str]:
    """The benchmark names ``--only`` asks for, in the standard order; a clear error for unknown ones."""
    from jacket_bench import BENCHMARKS
    if not only:
        return list(BENCHMARKS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"--only: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {','.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]


class _Progress:
    """A tqdm bar when tqdm is installed, plain lines otherwise. ``tick(label)`` marks the start of
    a step (finishing the previous one); prints go above the bar."""

    def __init__(self, total: int):
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        self.total, self.done, self.pending = total, 0, False
        live = tqdm is not None and sys.stderr.isatty()  # a bar in a log file is noise
        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stderr) if live else None
        self._tqdm, self._out = tqdm, sys.stdout

    def tick(self, label: str):
        self._finish_step()
        self.pending = True
        if self.bar is not None:
            self.bar.set_description(label)
        else:
            print(f"[{self.done + 1}/{self.total}] {label}", file=sys.stderr, flush=True)

    def _finish_step(self):
        if self.pending:
            self.done += 1
            if self.bar is not None:
                self.bar.update(1)
        self.pending = False

    def write(self, text: str):
        """File-like (used while a bar is shown), so ``print`` output lands above the bar."""
        if text.strip():
            self._tqdm.write(text.rstrip("\n"), file=self._out)

    def flush(self):
        self._out.flush()

    def close(self):
        self._finish_step()
        if self.bar is not None:
            self.bar.close()


def run(args) -> int:
    import contextlib

    from jacket_bench import load, select_device
    from jacket_bench.timing import roofline
    try:
        names = selected(args.only)
        device = select_device(args.device)
    except (ValueError, RuntimeError) as err:
        print(f"jacket bench: {err}", file=sys.stderr)
        return 2
    if args.out is not None:
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as err:
            print(f"jacket bench: cannot write results to --out {args.out!r}: {err}", file=sys.stderr)
            return 2
    modules = {name: load(name) for name in names}
    configs = {name: module.config(full=args.full) for name, module in modules.items()}
    print(f"jacket bench ({'full' if args.full else 'quick'}) on {device}: {', '.join(names)}")
    progress = _Progress(1 + sum(m.n_steps(configs[n]) for n, m in modules.items()))
    start, summary = time.perf_counter(), []
    try:
        with contextlib.redirect_stdout(progress) if progress.bar is not None else contextlib.nullcontext():
            progress.tick("roofline")
            peak = roofline()
            print(f"roofline: matmul {peak['matmul_gflops']:.1f} GFLOP/s, matrix-vector {peak['matvec_gbs']:.1f} GB/s, "
                  f"copy {peak['copy_gbs']:.1f} GB/s")
            for name, module in modules.items():
                print()
                record = module.run(configs[name], out=args.out, tick=progress.tick)
                summary.append((name, record))
    finally:
        progress.close()
    print(f"\ndone in {time.perf_counter() - start:.0f} s")
    for name, record in summary:
        for text, met in record.get("targets", {}).items():
            print(f"  {name:14s} {'met   ' if met else 'MISSED'} {text}")
        print(f"  {name:14s} -> {record['files']['json']}")
    return 0
