"""A real MLflow tracking server for the tests: ``python -m mlflow server`` of this interpreter,
with a SQLite backend store and served artifacts in a temp folder, listening on 127.0.0.1 at a
free port. A test may kill it (as a crash would) and start it again on the same port and store.

It takes 10-25 s to start here, so the fixture only launches it: ``uri`` waits until it answers,
and a test can start a kernel (or run what needs no server) meanwhile.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass

import pytest
from postgres import _free_port


@dataclass
class MLflowServer:
    """``uri`` is ``http://127.0.0.1:PORT``; ``kill()`` and ``start()`` keep port and store."""

    folder: str
    port: int
    process: subprocess.Popen | None = None
    answering: bool = False

    @property
    def uri(self) -> str:
        """``http://127.0.0.1:PORT``, once the server answers there."""
        if not self.answering:
            self.wait_until_answering()
        return self.address

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return os.path.join(self.folder, "server.log")

    def start(self) -> None:
        self.launch()
        self.wait_until_answering()

    def launch(self) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                   "--workers", "1", "--backend-store-uri", f"sqlite:///{os.path.join(self.folder, 'mlflow.db')}",
                   "--artifacts-destination", os.path.join(self.folder, "artifacts")]
        # The server's job runner (a dozen huey consumers) is for GenAI jobs: it doubles start-up.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log, "a") as log:
            # its own session: kill() ends the server and the uvicorn worker it starts together
            self.process = subprocess.Popen(command, cwd=self.folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_until_answering(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited ({self.process.returncode}):\n{self._tail()}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{self.address}/health", timeout=2) as answer:
                    if answer.status == 200:
                        self.answering = True
                        return
            except OSError:
                time.sleep(0.2)
        self.kill()
        pytest.fail(f"mlflow server did not answer within {timeout:g}s:\n{self._tail()}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL the server and its worker, as a crash or a pulled plug would."""
        self.answering = False
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        self.kill()

    def _tail(self) -> str:
        with open(self.log) as log:
            return log.read()[-3000:]


@pytest.fixture(scope="session")
def mlflow_server():
    """An MLflow tracking server on 127.0.0.1 for the whole session (launched: ``uri`` waits for
    it); never skipped."""
    server = MLflowServer(tempfile.mkdtemp(prefix="hpt-mlflow-server-"), _free_port())
    server.launch()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)
