"""What the live dashboard costs: time against --quiet, bytes to the frontend, refresh time.

One real kernel runs, interleaved, the same seeded 1,000-trial trivial study with the
dashboard and with --quiet (random sampler, so the sampler does not hide our cost), then one
10,000-trial study with the dashboard. Bytes are the comm messages' JSON plus binary buffers,
as the kernel sent them. Prints a markdown table.

    python benchmarks/ui.py [--repeats 7] [--trials 1000] [--large 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from kernel import Kernel  # noqa: E402  (the tests' jupyter_client driver)

CELL = """%%tune -n {n} --sampler random --seed {seed} --storage memory --name {name} {quiet}
x = tune.float(-5, 5)
y = tune.int(0, 10)
c = tune.choice(["a", "b", "c"])
(x - 1) ** 2 + y + (c == "b")
"""


def comm_bytes(kernel: Kernel) -> int:
    total = 0
    for msg in kernel.arrived:
        if msg["msg_type"] in ("comm_open", "comm_msg"):
            total += len(json.dumps(msg["content"], default=str)) + sum(len(b) for b in msg.get("buffers", []))
    return total


def run_one(kernel: Kernel, n: int, seed: int, name: str, quiet: bool) -> tuple[float, int, tuple, int]:
    """(ms/trial, bytes sent, (slowest refresh: wall ms, CPU ms), refreshes) for one study."""
    kernel._drain(None, 0.3)
    kernel.arrived.clear()
    reply = kernel.run(CELL.format(n=n, seed=seed, name=name, quiet="--quiet" if quiet else ""))
    assert reply.error is None, reply.error_text
    kernel.run(f"%tune wait {name}\nimport time; time.sleep(1)", 900)  # let the last refresh go out
    kernel._drain(None, 0.5)
    sent = comm_bytes(kernel)
    elapsed = kernel.value(f"tune.runs[{name!r}].elapsed")
    wall, cpu, refreshes, by_page = 0.0, 0.0, 0, {}
    if not quiet:
        wall, cpu, refreshes, by_page = kernel.value(
            f"(lambda b: (b.refresh_seconds_max, b.refresh_cpu_seconds_max, b.refreshes, b.refresh_cpu_by_page))"
            f"(get_ipython().magics_manager.registry['TuneMagics'].dashboards[{name!r}])")
    return elapsed / n * 1000, sent, (wall * 1000, cpu * 1000, by_page), refreshes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    args = parser.parse_args()
    kernel = Kernel(tempfile.mkdtemp())
    try:
        assert kernel.run("%load_ext hpt_jupyter\nfrom hpt_jupyter import tune").error is None
        run_one(kernel, 50, 0, "warm-up", quiet=False)  # imports ipywidgets and bqplot once
        quiet, board, sent, slowest = [], [], [], []
        for r in range(args.repeats):
            for variant in (("quiet", "board") if r % 2 == 0 else ("board", "quiet")):
                ms, nbytes, worst, _ = run_one(kernel, args.trials, r, f"{variant}-{r}", variant == "quiet")
                (quiet if variant == "quiet" else board).append(ms)
                if variant == "board":
                    sent.append(nbytes)
                    slowest.append(worst)
        large_ms, large_bytes, large_worst, large_refreshes = run_one(kernel, args.large, 99, "large", False)
    finally:
        kernel.shutdown()
    q, b = statistics.median(quiet), statistics.median(board)
    print(f"\nRandom sampler, trivial objective, one kernel; {args.trials} trials: median of {args.repeats} "
          "interleaved repeats.\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| --quiet ms/trial ({args.trials} trials) | {q:.3f} |")
    print(f"| dashboard ms/trial ({args.trials} trials) | {b:.3f} |")
    print(f"| ratio dashboard / --quiet | {b / q:.3f} |")
    print(f"| bytes to the frontend per 1,000 trials ({args.trials}-trial study) | "
          f"{statistics.median(sent) / args.trials * 1000 / 1e6:.2f} MB |")
    print(f"| slowest refresh pass, its own CPU time ({args.trials}-trial study) | {max(s[1] for s in slowest):.2f} ms |")
    print(f"| slowest refresh pass, wall time ({args.trials}-trial study) | {max(s[0] for s in slowest):.2f} ms |")
    print(f"| bytes to the frontend, whole {args.large}-trial study | {large_bytes / 1e6:.2f} MB |")
    print(f"| refreshes in the {args.large}-trial study | {large_refreshes} |")
    print(f"| slowest refresh pass, its own CPU time ({args.large}-trial study) | {large_worst[1]:.2f} ms |")
    print(f"| slowest refresh pass, wall time ({args.large}-trial study) | {large_worst[0]:.2f} ms |")
    print(f"| dashboard ms/trial ({args.large} trials) | {large_ms:.3f} |")
    pages = {}
    for worst in [*slowest, large_worst]:
        for page, seconds in worst[2].items():
            pages[page] = max(pages.get(page, 0.0), seconds * 1000)
    print("\nSlowest refresh pass of each page, its own CPU time, over every study above: "
          + ", ".join(f"{page} {ms:.2f} ms" for page, ms in pages.items()))


if __name__ == "__main__":
    main()
