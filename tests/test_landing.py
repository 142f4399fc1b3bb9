"""Landing from a local folder, the GCS emulator (real gcsfs) and the Drive v3 fake; ledger, duplicates, crash, speed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from lakehouse.config import Settings
from lakehouse.landing import _LineCap, lake_fs, land, read_ledger
from tests.fake_drive import FakeDrive
from tests.gcs_emulator import emulator_fs

LINE = b'{"at":"2017-11-16 02:10:20","n":1}\n'


def put(root: Path, path: str, data: bytes) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def landed(settings: Settings) -> dict[str, bytes]:
    """Every landed file of the lake: lake-relative path -> bytes."""
    fs, root = lake_fs(settings)
    fs.invalidate_cache()
    base = f"{root.rstrip('/')}/landing"
    return {p[len(root.rstrip("/")) + 1 :]: fs.cat_file(p) for p in fs.find(base)} if fs.exists(base) else {}


def statuses(settings: Settings) -> list[tuple[int, str, str]]:
    return [(m["batch_id"], e["path"], e["status"]) for m in read_ledger(settings) for e in m["files"]]


def test_lands_once_keeps_folders_and_ledgers_by_content(settings):
    src = Path(settings.source_url)
    put(src, "events/2017-11-16/a/part-0.json", LINE)
    put(src, "transactional/2017-11-16T06:00:00/students.json", b"[]")
    put(src, "transactional/2017-11-16T06:00:00/courses.json", b"[]")  # same bytes, other entity: not a duplicate
    report = land(settings)
    assert (report.details["batch_id"], report.files, report.details["files_duplicate"]) == (1, 3, 0)
    sha = hashlib.sha256(LINE).hexdigest()
    empty = hashlib.sha256(b"[]").hexdigest()[:16]
    assert landed(settings) == {
        f"landing/events/2017-11-16/{sha[:16]}/part-0.json": LINE,
        f"landing/transactional/2017-11-16T06_00_00/{empty}/students.json": b"[]",
        f"landing/transactional/2017-11-16T06_00_00/{empty}/courses.json": b"[]",
    }
    entry = read_ledger(settings)[0]["files"][0]
    assert {k: entry[k] for k in ("path", "kind", "delivery", "sha256", "status", "bytes")} == {
        "path": "events/2017-11-16/a/part-0.json",
        "kind": "events",
        "delivery": "2017-11-16",
        "sha256": sha,
        "status": "new",
        "bytes": len(LINE),
    }

    again = land(settings)
    assert (again.details["batch_id"], again.files, again.details["files_seen"], again.details["files_known"]) == (
        None,
        0,
        3,
        3,
    )
    assert len(read_ledger(settings)) == 1  # nothing new: no manifest

    put(src, "events/2017-11-17/copy.json", LINE)  # same bytes under another name
    put(src, "events/2017-11-16/a/part-0.json", LINE + LINE)  # new bytes under a known name
    os.utime(src / "transactional/2017-11-16T06:00:00/students.json", ns=(1, 10**18))  # touched, same bytes
    report = land(settings)
    assert (report.details["batch_id"], report.files, report.details["files_duplicate"]) == (2, 1, 2)
    assert statuses(settings)[3:] == [
        (2, "events/2017-11-16/a/part-0.json", "new"),
        (2, "transactional/2017-11-16T06:00:00/students.json", "duplicate"),
        (2, "events/2017-11-17/copy.json", "duplicate"),
    ]
    assert len(landed(settings)) == 4
    assert (land(settings).details["files_known"], land(settings).details["batch_id"]) == (
        4,
        None,
    )  # nothing downloaded again


def test_full_exports_repeat_only_when_they_add_nothing(settings):
    src = Path(settings.source_url)
    a, b = b'[{"Id":1}]', b'[{"Id":2}]'
    put(src, "transactional/2017-11-16/courses.json", a)
    put(src, "transactional/2017-11-17/courses.json", a)  # same state again: a duplicate
    put(src, "transactional/2017-11-18/courses.json", b)
    put(src, "transactional/2017-11-19/courses.json", a)  # back to A after B: new information
    land(settings)
    assert [s for _, _, s in statuses(settings)] == ["new", "duplicate", "new", "new"]


def test_killed_mid_landing_rerun_gives_the_clean_ledger(settings, tmp_path):
    from lakehouse.tools.generate import generate

    generate(Path(settings.source_url), seed=2, students=20, events=200, deliveries=2)
    env = {**os.environ, "LAKEHOUSE_FAULT": "mid_landing"}
    code = "from lakehouse.config import get_settings; from lakehouse.landing import land; land(get_settings())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[1], timeout=120)
    assert proc.returncode == -9
    assert read_ledger(settings) == [] and len(landed(settings)) == 1
    land(settings)

    clean = Settings(_env_file=None, source=settings.source, lake=str(tmp_path / "clean"), data_dir=settings.data_dir)
    land(clean)
    keys = ("path", "sha256", "status", "landed_path", "batch_id")
    assert [{k: e[k] for k in keys} for e in read_ledger(settings)[0]["files"]] == [
        {k: e[k] for k in keys} for e in read_ledger(clean)[0]["files"]
    ]
    assert landed(settings) == landed(clean)


def test_rerun_on_a_landed_source_is_fast(settings):
    from lakehouse.tools.generate import generate

    generate(Path(settings.source_url), seed=1, students=200, events=20_000, deliveries=5)
    first = land(settings)
    started = time.monotonic()
    again = land(settings)
    elapsed = time.monotonic() - started
    print(
        f"\nlanded {first.files} files ({first.details['bytes_landed']} bytes) in {first.seconds} s; "
        f"re-run: {again.files} new of {again.details['files_seen']} in {elapsed:.3f} s"
    )
    assert again.files == 0 and again.details["files_seen"] == first.details["files_seen"]
    assert elapsed < 20


@hsettings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    ends_with_newline=st.booleans(),
    cap=st.integers(1, 16),
    cuts=st.lists(st.integers(1, 16), min_size=1),
)
def test_long_lines_are_set_aside_whole_whatever_the_chunks(lines, ends_with_newline, cap, cuts):
    """However the file arrives in chunks (never longer than the cap), the copy keeps every line in its place, an
    empty line for each one over the cap, and each of those whole in a file of its own."""
    data = b"\n".join(lines) + (b"\n" if ends_with_newline and lines else b"")
    fs = fsspec.filesystem("memory")
    side = f"/caps/{uuid.uuid4().hex}"
    copy = _Copy()
    caps = _LineCap(copy, fs, side, cap)
    at, i = 0, 0
    while at < len(data):
        step = min(cuts[i % len(cuts)], cap)
        caps.feed(data[at : at + step])
        at, i = at + step, i + 1
    caps.close()

    real = data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n") if data else []
    long = {n: line for n, line in enumerate(real, 1) if len(line) > cap}
    want = b"\n".join(b"" if n in long else line for n, line in enumerate(real, 1))
    if real and (data.endswith(b"\n") or len(real) in long):
        want += b"\n"
    assert bytes(copy.data) == want
    assert [(x["line_number"], x["bytes"]) for x in caps.found] == [(n, len(line)) for n, line in long.items()]
    assert {n: fs.cat_file(f"{side}-{n}") for n in long} == long
    assert all(x["head"] == long[x["line_number"]][:256].decode("utf-8", "replace") for x in caps.found)


class _Copy:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> None:
        self.data += b


def test_source_problems_are_reported_not_fatal(settings, tmp_path):
    src = Path(settings.source_url)
    put(src, "events/2017-11-16/part-0.json", LINE)
    put(src, "events/today/part-0.json", LINE)
    put(src, "Events/2017-11-16/part-0.json", LINE)
    outside = tmp_path / "outside.json"
    outside.write_bytes(b'{"secret": 1}\n')
    (src / "events" / "2017-11-16" / "link.json").symlink_to(outside)

    report = land(settings)
    assert report.files == 1 and report.details["not_landed"] == 3
    assert report.details["not_landed_files"] == [
        {"path": "Events", "why": "not a folder of the source layout (transactional or events)"},
        {"path": "events/2017-11-16/link.json", "why": "symbolic link to outside the source folder: refused"},
        {"path": "events/today", "why": "delivery folder name is not an ISO date or timestamp"},
    ]
    assert all(b"secret" not in data for data in landed(settings).values())

    from lakehouse.sources import LocalSource

    class Swapped(LocalSource):  # the file becomes a link out of the folder between the listing and the copy
        def open(self, f):
            target = self.root / f.path
            target.unlink()
            target.symlink_to(outside)
            return super().open(f)

    put(src, "events/2017-11-17/part-0.json", LINE + LINE)
    report = land(settings, Swapped(str(src), src))
    assert report.files == 0 and report.details["not_landed_files"][-1] == {
        "path": "events/2017-11-17/part-0.json",
        "why": "cannot be read: events/2017-11-17/part-0.json resolves outside the source folder: refused",
    }


# --- remote sources and a remote lake ------------------------------------------------------------------------


@pytest.fixture
def gcs(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:  # noqa: F811
    """A gcsfs client on the emulator, with `LAKEHOUSE_GCS_ENDPOINT` set and a fresh bucket."""
    monkeypatch.setenv("LAKEHOUSE_GCS_ENDPOINT", gcs_emulator)
    fs = emulator_fs(gcs_emulator)
    bucket = f"landing-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    fs.bucket = bucket
    yield fs


def test_gcs_source_into_a_gcs_lake(gcs, settings):
    source = f"{gcs.bucket}/raw"
    gcs.pipe(f"{source}/events/2017-11-16/part-0.json", LINE)
    gcs.pipe(f"{source}/events/2017-11-16/part-1.json", LINE)  # same bytes
    gcs.pipe(f"{source}/transactional/2017-11-16/courses.json", b'[{"Id":1}]')
    remote = Settings(_env_file=None, source=f"gs://{source}", lake=f"gs://{gcs.bucket}/lake", gcs_token="anon")
    report = land(remote)
    assert (report.files, report.details["files_duplicate"]) == (2, 1)
    assert sorted(landed(remote).values()) == [b'[{"Id":1}]', LINE]
    assert land(remote).details["files_known"] == 3 and len(read_ledger(remote)) == 1

    gcs.pipe(f"{source}/events/2017-11-16/part-0.json", LINE + LINE)  # new generation, new bytes
    assert land(remote).files == 1

    long = b'{"at":"2017-11-16 02:10:20","pad":"' + b"p" * 100 + b'"}'
    gcs.pipe(f"{source}/events/2017-11-17/part-0.json", LINE + long + b"\n" + LINE)  # a line over the cap
    assert land(remote.model_copy(update={"max_line_bytes": 64})).details["lines_too_long"] == 1
    entry = read_ledger(remote)[-1]["files"][0]
    assert landed(remote)[entry["landed_path"]] == LINE + b"\n" + LINE
    assert [x["line_number"] for x in entry["long_lines"]] == [2]
    assert landed(remote)[entry["long_lines"][0]["kept_at"]] == long


def test_drive_source(fake_drive: FakeDrive, settings):  # noqa: F811
    folder = fake_drive.new_root()
    fake_drive.put(folder, "events/2017-11-16/part-0.json", LINE)
    fake_drive.put(folder, "events/2017-11-17/copy.json", LINE)
    fake_drive.put(folder, "transactional/2017-11-16/students.json", b'[{"Id":"1"}]')
    drive = Settings(
        _env_file=None,
        source=f"gdrive://{folder}",
        lake=settings.lake,
        gdrive_api_url=fake_drive.url,
        gdrive_credentials=json.dumps(fake_drive.service_account_info()),
    )
    report = land(drive)
    assert (report.files, report.details["files_duplicate"]) == (2, 1)
    assert sorted(landed(drive).values()) == sorted([LINE, b'[{"Id":"1"}]'])
    downloads = fake_drive.count("GET", "/drive/v3/files/")
    assert land(drive).files == 0
    assert fake_drive.count("GET", "/drive/v3/files/") - downloads <= 1  # the root check only, no download
