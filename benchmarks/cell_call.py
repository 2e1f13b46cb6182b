"""What one trial's call of the cell costs: the compiled cell against IPython's ``run_cell``.

The same small cell (two knobs, a little arithmetic) is called through the function that
``compile_cell`` makes and through ``InteractiveShell.run_cell`` with the knobs fixed, in
one process, interleaved. Prints a markdown table of microseconds per call.

    python benchmarks/cell_call.py [--calls 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from IPython.core.interactiveshell import InteractiveShell

from hpt_jupyter import compile_cell
from hpt_jupyter.core.space import FixedContext, set_context

BODY = "lr = tune.float(1e-5, 1e-1, log=True)\ndepth = tune.int(1, 8)\nscore = lr * depth + offset\nscore\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shell = InteractiveShell.instance()
    shell.user_ns["offset"] = 1.0
    from hpt_jupyter import tune

    shell.user_ns["tune"] = tune  # run_cell resolves `tune` from the namespace
    cell = compile_cell(BODY, shell.user_ns)
    set_context(FixedContext({"lr": 1e-3, "depth": 4}))  # same knob values both ways
    compiled, run_cell = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.calls):
            cell.objective()
        compiled.append((time.perf_counter() - t0) / args.calls * 1e6)
        t0 = time.perf_counter()
        for _ in range(args.calls):
            shell.run_cell(BODY, store_history=False, silent=True)
        run_cell.append((time.perf_counter() - t0) / args.calls * 1e6)
    set_context(None)
    a, b = statistics.median(compiled), statistics.median(run_cell)
    print(f"\nOne call of a 4-line cell with 2 knobs, median of {args.repeats} x {args.calls} calls.\n")
    print("| how the cell runs | us per call |")
    print("|---|---:|")
    print(f"| compiled once (`compile_cell`), called per trial | {a:.1f} |")
    print(f"| `InteractiveShell.run_cell` per trial | {b:.1f} |")
    print(f"| ratio run_cell / compiled | {b / a:.0f}x |")


if __name__ == "__main__":
    main()
