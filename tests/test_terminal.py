"""Without a widget frontend: terminal IPython runs the same cell and prints text progress."""

from __future__ import annotations

import subprocess
import sys


def test_terminal_ipython_prints_progress_and_the_final_table(tmp_path):
    script = tmp_path / "session.ipy"
    script.write_text(
        "%load_ext hpt_jupyter\n"
        "get_ipython().run_cell('''%%tune -n 12 --seed 0 --direction maximize\n"
        "lr = tune.float(1e-4, 1e-1, log=True)\n"
        "import time; time.sleep(0.01)\n"
        "-abs(lr - 0.01)\n"
        "''')\n"
        "%tune wait\n"
        "print('LR', lr)\n"
    )
    result = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", str(script)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Tuning 'lr-" in out and "running 12 trials in the background" in out
    assert "finished: budget reached (12 trials)" in out and "Top 5 trials:" in out
    assert "Injected lr=" in out
    injected = float(out.split("LR ")[1].split()[0])
    table_best = out.split("Top 5 trials:")[1].splitlines()[2].split()
    assert abs(injected - float(table_best[2])) <= 1e-4 * injected  # the table shows 5 significant digits
