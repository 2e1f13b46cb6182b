"""The extension's TypeScript unit tests (vitest: message validation and the sidebar model),
run from here so that the one test command runs them too."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_the_extensions_unit_tests_pass():
    jlpm = shutil.which("jlpm", path=str(Path(sys.executable).parent)) or shutil.which("jlpm")
    assert jlpm, "jlpm is missing: install the test extra (pip install -e '.[test]' brings jupyter-builder)"
    assert (ROOT / "node_modules").is_dir(), "node_modules is missing: pip install -e . builds the extension"
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="0")  # CI=true turns vitest's colours on
    result = subprocess.run([jlpm, "test"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    assert result.returncode == 0, output + result.stderr
    assert re.search(r"Tests\s+\d+ passed", output) and "failed" not in output, output


def test_jupyterlab_lists_the_extension_enabled_and_ok():
    result = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True,
                            text=True, timeout=120)
    line = next((l for l in (result.stdout + result.stderr).splitlines() if "hpt-jupyter" in l), "")
    assert "enabled" in line and "OK" in line, result.stdout + result.stderr
