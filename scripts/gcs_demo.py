"""`make gcs-demo`: the cloud path on one machine. A local GCS emulator, the demo's sample uploaded to a bucket, the
whole pipeline with source and lake on gs://, then `lakehouse summary`; the emulator stops at the end.

Usage: python scripts/gcs_demo.py SAMPLE_DIR DATA_DIR   (DATA_DIR is the demo's own data folder, emptied first)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUCKET = "lakehouse-demo"


def main() -> int:
    from lakehouse.config import PROJECT_ROOT, Settings
    from lakehouse.storage import gcs_filesystem
    from lakehouse.tools.emulator import run_emulator

    sample, data = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    lakehouse = str(Path(sys.executable).with_name("lakehouse"))
    started = time.monotonic()
    if data.exists():
        subprocess.run(
            [lakehouse, "pg", "stop"], env={**os.environ, "LAKEHOUSE_DATA_DIR": str(data)}, capture_output=True
        )
        shutil.rmtree(data)
    data.mkdir(parents=True)
    with run_emulator() as endpoint:
        print(f"GCS emulator (fake-gcs-server) on {endpoint}", flush=True)
        fs = gcs_filesystem(Settings(_env_file=None, gcs_token="anon", gcs_endpoint=endpoint))
        fs.mkdir(BUCKET)
        for kind in ("transactional", "events"):
            fs.put(str(sample / kind), f"{BUCKET}/source/{kind}", recursive=True)
        print(f"uploaded {sample} to gs://{BUCKET}/source ({len(fs.find(f'{BUCKET}/source'))} files)", flush=True)
        env = {
            **os.environ,
            "LAKEHOUSE_SOURCE": f"gs://{BUCKET}/source",
            "LAKEHOUSE_LAKE": f"gs://{BUCKET}/lake",
            "LAKEHOUSE_GCS_ENDPOINT": endpoint,
            "LAKEHOUSE_GCS_TOKEN": "anon",
            "LAKEHOUSE_DATA_DIR": str(data),
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
        try:
            run = subprocess.run([lakehouse, "run"], env=env, cwd=PROJECT_ROOT)
            if run.returncode == 0:
                subprocess.run([lakehouse, "summary"], env=env, cwd=PROJECT_ROOT, check=True)
        finally:
            subprocess.run([lakehouse, "pg", "stop"], env=env, cwd=PROJECT_ROOT, capture_output=True)
    print(
        f"gcs-demo: {'done' if run.returncode == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s; "
        "the emulator is stopped and its bucket gone",
        flush=True,
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
