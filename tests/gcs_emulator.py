"""The GCS emulator (fake-gcs-server) in a subprocess, driven by the real clients."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from lakehouse.tools.emulator import run_emulator

# gcsfs reads this at import: without it every bucket first stalls 60 s on a gRPC lookup the emulator lacks.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def emulator_fs(url: str) -> Any:
    """A gcsfs client bound to the emulator (explicit endpoint, so it never reaches real GCS)."""
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem(token="anon", endpoint_url=url, skip_instance_cache=True)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """URL of one emulator for the whole session; tests pointing code at it set `LAKEHOUSE_GCS_ENDPOINT` to it."""
    with run_emulator() as url:
        yield url
