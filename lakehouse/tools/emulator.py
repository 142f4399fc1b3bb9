"""A local GCS emulator for the tests and `make gcs-demo`: fake-gcs-server, built once by `scripts/gcs-emulator.sh`.

It serves the JSON API (gcsfs, Spark's GCS connector, batch requests included), the XML API DuckDB reads through, and
honours generation preconditions, on which Delta's GCS log store builds its put-if-absent commits.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lakehouse.config import PROJECT_ROOT
from lakehouse.security import free_port

BINARY = PROJECT_ROOT / ".tools" / "bin" / "fake-gcs-server"
BUILD = PROJECT_ROOT / "scripts" / "gcs-emulator.sh"


def binary() -> Path:
    """The emulator's executable, built on first use."""
    subprocess.run(["bash", str(BUILD)], check=True)  # returns at once when the pinned build is there
    return BINARY


@contextmanager
def run_emulator(timeout: float = 30.0) -> Iterator[str]:
    """Start an in-memory emulator on a free loopback port; yields its URL (`http://127.0.0.1:<port>`)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(binary()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        # the XML API (DuckDB) answers on this host; resumable uploads continue at this URL
        "-public-host",
        f"127.0.0.1:{port}",
        "-external-url",
        url,
        "-log-level",
        "warn",
    ]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"fake-gcs-server exited {proc.returncode}: {log.read().decode()[-2000:]}")
                try:
                    urllib.request.urlopen(f"{url}/_internal/healthcheck", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"fake-gcs-server did not answer on {url} within {timeout:.0f} s") from None
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
