"""The `gcp-storage-emulator` in a subprocess, driven by the real gcsfs client."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

# gcsfs reads this at import: without it every bucket first stalls 60 s on a gRPC lookup the emulator lacks.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _executable() -> str:
    beside = Path(sys.executable).parent / "gcp-storage-emulator"
    found = str(beside) if beside.exists() else shutil.which("gcp-storage-emulator")
    if not found:
        raise RuntimeError("gcp-storage-emulator is not installed (dev dependency group)")
    return found


@contextmanager
def run_emulator(timeout: float = 30.0) -> Iterator[str]:
    """Start an in-memory emulator on a free port; yields its URL (`http://127.0.0.1:<port>`)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [_executable(), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"gcp-storage-emulator exited {proc.returncode}: {log.read().decode()[-2000:]}")
                try:
                    urllib.request.urlopen(f"{url}/storage/v1/b?project=test", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gcp-storage-emulator did not answer on {url} within {timeout:.0f} s")
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def emulator_fs(url: str) -> Any:
    """A gcsfs client bound to the emulator (explicit endpoint, so it never reaches real GCS)."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(token="anon", endpoint_url=url, skip_instance_cache=True)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """URL of one emulator for the whole session; tests pointing code at it set `STORAGE_EMULATOR_HOST` to it."""
    with run_emulator() as url:
        yield url
