"""lakehouse.sources over a local folder, the GCS emulator (real gcsfs) and a Drive v3 fake (real Google client)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lakehouse.config import Settings
from lakehouse.sources import (
    DriveSource,
    GCSSource,
    LocalSource,
    Source,
    SourceError,
    SourceFile,
    open_source,
    parse_delivery,
)
from tests.fake_drive import FakeDrive
from tests.gcs_emulator import emulator_fs

UTC = UTC
D16 = datetime(2017, 11, 16, tzinfo=UTC)
T17 = datetime(2017, 11, 17, 6, tzinfo=UTC)
LINE_16 = b'{"at": "2017-11-16 02:10:20"}\n'


def make_settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)


# --- one helper per backend: a fresh, empty source root per test ---------------------------------------------


class LocalRoot:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.url = str(base)
        self.settings = make_settings()

    def put(self, path: str, data: bytes) -> None:
        target = self.base / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def modified(self, path: str) -> datetime:
        ns = (self.base / path).stat().st_mtime_ns
        return datetime.fromtimestamp(ns // 10**9, UTC).replace(microsecond=ns % 10**9 // 1000)


class GcsRoot:
    def __init__(self, emulator: str) -> None:
        self.fs = emulator_fs(emulator)
        self.root = f"sources-test/{uuid.uuid4().hex}"
        self.url = f"gs://{self.root}"
        self.settings = make_settings(gcs_token="anon")

    def put(self, path: str, data: bytes) -> None:
        self.fs.pipe(f"{self.root}/{path}", data)

    def modified(self, path: str) -> datetime:
        self.fs.invalidate_cache()
        updated = self.fs.info(f"{self.root}/{path}")["updated"]
        return datetime.fromisoformat(updated.replace("Z", "+00:00"))


class DriveRoot:
    def __init__(self, drive: FakeDrive, credentials: dict[str, Any]) -> None:
        self.drive = drive
        self.folder = drive.new_root()
        self.url = f"gdrive://{self.folder}"
        self.settings = make_settings(gdrive_credentials=json.dumps(credentials), gdrive_api_url=drive.url)

    def put(self, path: str, data: bytes) -> None:
        self.drive.put(self.folder, path, data)

    def modified(self, path: str) -> datetime:
        modified = self.drive.resolve(self.folder, path).modified  # Drive reports milliseconds
        return modified.replace(microsecond=modified.microsecond // 1000 * 1000)


@pytest.fixture(scope="module")
def gcs_bucket(gcs_emulator: str) -> Iterator[str]:
    """The emulator with `LAKEHOUSE_GCS_ENDPOINT` pointing at it and the test bucket created, for this module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LAKEHOUSE_GCS_ENDPOINT", gcs_emulator)
    fs = emulator_fs(gcs_emulator)
    if not fs.exists("sources-test"):
        fs.mkdir("sources-test")
    yield gcs_emulator
    mp.undo()


@pytest.fixture(scope="module")
def drive_key(fake_drive: FakeDrive) -> dict[str, Any]:
    """A service-account key generated for this module, trusted by the fake's token endpoint."""
    return fake_drive.service_account_info()


@pytest.fixture(params=["local", "gcs", "gdrive"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> LocalRoot | GcsRoot | DriveRoot:
    """An empty source root on each backend."""
    if request.param == "local":
        return LocalRoot(tmp_path / "source")
    if request.param == "gcs":
        return GcsRoot(request.getfixturevalue("gcs_bucket"))
    return DriveRoot(request.getfixturevalue("fake_drive"), request.getfixturevalue("drive_key"))


def drive_settings(drive: FakeDrive, key: dict[str, Any]) -> Settings:
    return make_settings(gdrive_credentials=json.dumps(key), gdrive_api_url=drive.url)


def source_of(root: LocalRoot | GcsRoot | DriveRoot) -> Source:
    if isinstance(root, LocalRoot):
        root.base.mkdir(parents=True, exist_ok=True)
    return open_source(root.url, root.settings)


def read_all(src: Source, f: SourceFile) -> bytes:
    with src.open(f) as fh:
        return fh.read()


# --- behaviours, on every backend ----------------------------------------------------------------------------


def test_open_source_dispatches_by_scheme(root: Any) -> None:
    src = source_of(root)
    assert isinstance(src, Source)
    assert isinstance(src, {LocalRoot: LocalSource, GcsRoot: GCSSource, DriveRoot: DriveSource}[type(root)])
    assert src.url == root.url
    assert list(src.list_files()) == []


def test_walks_the_layout(root: Any) -> None:
    files = {
        "transactional/2017-11-16/students.json": b'[{"id": 1}]',
        "transactional/2017-11-16/courses.json": b"[]",
        "transactional/2017-11-17T06:00:00/students.json": b'[{"id": 2}]',
        "events/2017-11-16/part-00000.json": b'{"at": "2017-11-16 02:10:20"}\n',
        "events/2017-11-16/a/b/deep.jsonl": b'{"at": "2017-11-16 03:00:00"}\n',
        "events/2017-11-16/empty.json": b"",
        "events/2017-11-17T06:00:00/x.json": b"{}\n",
    }
    ignored = {
        "transactional/2017-11-16/.students.json.tmp": b"[]",
        "transactional/2017-11-16/.hidden.json": b"[]",
        "transactional/2017-11-16/README.md": b"# notes",
        "events/2017-11-16/.staging/part-1.json": b"{}\n",
        "events/2017-11-16/_SUCCESS": b"",
        "other/2017-11-16/students.json": b"[]",
        "students.json": b"[]",
    }
    for path, data in {**files, **ignored}.items():
        root.put(path, data)

    got = list(source_of(root).list_files())

    assert [(f.path, f.kind, f.entity, f.delivery, f.as_of) for f in got] == [
        ("events/2017-11-16/a/b/deep.jsonl", "events", None, "2017-11-16", D16),
        ("events/2017-11-16/empty.json", "events", None, "2017-11-16", D16),
        ("events/2017-11-16/part-00000.json", "events", None, "2017-11-16", D16),
        ("transactional/2017-11-16/courses.json", "transactional", "courses", "2017-11-16", D16),
        ("transactional/2017-11-16/students.json", "transactional", "students", "2017-11-16", D16),
        ("events/2017-11-17T06:00:00/x.json", "events", None, "2017-11-17T06:00:00", T17),
        ("transactional/2017-11-17T06:00:00/students.json", "transactional", "students", "2017-11-17T06:00:00", T17),
    ]
    assert {f.path: f.size for f in got} == {path: len(data) for path, data in files.items()}
    assert all(f.as_of.utcoffset() == timedelta(0) for f in got)
    assert all(f.fingerprint for f in got)


def test_file_directly_under_kind_folder_takes_its_modification_time(root: Any) -> None:
    before = datetime.now(UTC)
    root.put("transactional/students.json", b"[]")
    root.put("events/loose.json", b"{}\n")
    after = datetime.now(UTC)

    got = {f.path: f for f in source_of(root).list_files()}

    assert set(got) == {"transactional/students.json", "events/loose.json"}
    for path, f in got.items():
        assert f.as_of == root.modified(path)
        assert f.as_of.tzinfo is not None and f.as_of.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=2) <= f.as_of <= after + timedelta(seconds=2)
        assert f.delivery == f.as_of.isoformat()
    assert got["transactional/students.json"].entity == "students"
    assert got["events/loose.json"].entity is None


def test_delivery_folder_names_with_offsets_are_utc(root: Any) -> None:
    root.put("transactional/2017-11-16T06:00:00Z/students.json", b"[]")
    root.put("transactional/2017-11-16T09:30:00+03:00/courses.json", b"[]")

    got = list(source_of(root).list_files())

    assert [(f.entity, f.delivery, f.as_of) for f in got] == [
        ("students", "2017-11-16T06:00:00Z", datetime(2017, 11, 16, 6, tzinfo=UTC)),
        ("courses", "2017-11-16T09:30:00+03:00", datetime(2017, 11, 16, 6, 30, tzinfo=UTC)),
    ]


def test_invalid_delivery_folder_is_warned_once_and_skipped(root: Any, caplog: pytest.LogCaptureFixture) -> None:
    misplaced = (
        "transactional/latest/students.json",
        "transactional/latest/courses.json",
        "events/2017-13-45/a.json",
        "events/2017-13-45/b/c.json",
        "transactional/2017-11-16/nested/students.json",
    )
    for path in (*misplaced, "transactional/2017-11-16/students.json"):
        root.put(path, b"{}\n" if path.startswith("events/") else b"[]")

    with caplog.at_level(logging.WARNING, logger="lakehouse.sources"):
        got = list(source_of(root).list_files())

    assert [f.path for f in got] == ["transactional/2017-11-16/students.json"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "lakehouse.sources"]
    assert len(warnings) == 3
    assert sum("'transactional/latest'" in w for w in warnings) == 1
    assert sum("'events/2017-13-45'" in w for w in warnings) == 1
    assert sum("'transactional/2017-11-16/nested'" in w for w in warnings) == 1


def test_what_the_layout_leaves_out_is_reported(root: Any) -> None:
    root.put("transactional/latest/students.json", b"[]")
    root.put("transactional/2017-11-16/nested/students.json", b"[]")
    root.put("transactional/2017-11-16/students.csv", b"Id\n1\n")
    root.put("transactional/2017-11-16/students.json", b"[]")
    root.put("events/2017-11-16/_SUCCESS", b"")
    root.put("events/2017-11-16/.part-0.json.crc", b"")

    src = source_of(root)
    assert [f.path for f in src.list_files()] == ["transactional/2017-11-16/students.json"]
    assert src.skipped == [
        {"path": "transactional/2017-11-16/nested", "why": "transactional files sit directly in their delivery folder"},
        {"path": "transactional/2017-11-16/students.csv", "why": "not a .json or .jsonl file"},
        {"path": "transactional/latest", "why": "delivery folder name is not an ISO date or timestamp"},
    ]


def test_local_links_inside_are_followed_and_links_outside_are_refused(tmp_path: Path) -> None:
    base, outside = tmp_path / "source", tmp_path / "elsewhere"
    root = LocalRoot(base)
    root.put("events/2017-11-16/part-0.json", LINE_16)
    (outside / "2017-11-18").mkdir(parents=True)
    (outside / "secret.json").write_bytes(b'{"at": "2017-11-16 02:10:20", "secret": 1}\n')
    (outside / "2017-11-18" / "part.json").write_bytes(b"{}\n")
    (base / "events" / "2017-11-16" / "leak.json").symlink_to(outside / "secret.json")
    (base / "events" / "2017-11-18").symlink_to(outside / "2017-11-18")  # a delivery folder out of the source
    (base / "events" / "2017-11-17").symlink_to(base / "events" / "2017-11-16")  # inside: followed
    (base / "events" / "2017-11-16" / "again.json").symlink_to("part-0.json")
    (base / "events" / "2017-11-16" / "loop").symlink_to("..")  # a link to a folder above: walked once

    src = LocalSource(str(base), base)
    assert [f.path for f in src.list_files()] == [
        "events/2017-11-16/again.json",
        "events/2017-11-16/part-0.json",
        "events/2017-11-17/again.json",
        "events/2017-11-17/part-0.json",
    ]
    assert src.skipped == [
        {"path": f"events/{where}", "why": "symbolic link to outside the source folder: refused"}
        for where in ("2017-11-16/leak.json", "2017-11-17/leak.json", "2017-11-18")
    ]
    assert src.open(next(iter(src.list_files()))).read() == LINE_16

    # a file that turns into a link out of the folder after the listing is refused when opened
    listed = [f for f in src.list_files() if f.path == "events/2017-11-16/part-0.json"][0]
    (base / "events" / "2017-11-16" / "part-0.json").unlink()
    (base / "events" / "2017-11-16" / "part-0.json").symlink_to(outside / "secret.json")
    with pytest.raises(SourceError, match="outside the source folder"):
        src.open(listed)


def test_reads_bytes_back(root: Any) -> None:
    payloads = {
        "transactional/2017-11-16/students.json": json.dumps([{"id": i, "name": f"ß{i}"} for i in range(50)]).encode(),
        "events/2017-11-16/x/part-1.json": b'{"a": 1}\r\n\r\n{"a": 2}\n',
        "events/2017-11-16/empty.json": b"",
    }
    for path, data in payloads.items():
        root.put(path, data)
    src = source_of(root)

    got = {f.path: read_all(src, f) for f in src.list_files()}

    assert got == payloads


def test_open_by_path_alone(root: Any) -> None:
    root.put("transactional/2017-11-16/students.json", b"[1, 2]")
    src = source_of(root)
    listed = next(src.list_files())
    bare = dataclasses.replace(listed, ref="")

    assert read_all(open_source(root.url, root.settings), bare) == b"[1, 2]"


def test_fingerprint_is_stable_and_changes_with_content(root: Any) -> None:
    path = "transactional/2017-11-16/students.json"
    root.put(path, b'[{"id": 1}]')
    src = source_of(root)
    first = next(src.list_files()).fingerprint

    assert next(src.list_files()).fingerprint == first

    time.sleep(0.05)
    root.put(path, b'[{"id": 2}]')  # same size, other bytes
    second = next(src.list_files()).fingerprint
    time.sleep(0.05)
    root.put(path, b'[{"id": 2}, {"id": 3}]')
    third = next(src.list_files())

    assert len({first, second, third.fingerprint}) == 3
    assert third.size == 22
    assert read_all(src, third) == b'[{"id": 2}, {"id": 3}]'


def test_ten_megabyte_file_streams(root: Any) -> None:
    line = b'{"at": "2017-11-16 02:10:20", "page": "%07d"}\n'
    data = b"".join(line % i for i in range(10 * 1024 * 1024 // len(line) + 1))
    assert len(data) >= 10 * 1024 * 1024
    root.put("events/2017-11-16/big.json", data)
    src = source_of(root)
    (f,) = src.list_files()
    assert f.size == len(data)

    digest, chunks, biggest = hashlib.sha256(), 0, 0
    with src.open(f) as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
            chunks += 1
            biggest = max(biggest, len(block))

    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert chunks >= 10 and biggest <= 1024 * 1024


# --- delivery names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2017-11-16", D16),
        ("2017-11-16T06:00:00", datetime(2017, 11, 16, 6, tzinfo=UTC)),
        ("2017-11-16T06:00", datetime(2017, 11, 16, 6, tzinfo=UTC)),
        ("2017-11-16T06:00:00.250", datetime(2017, 11, 16, 6, 0, 0, 250000, tzinfo=UTC)),
        ("2017-11-16T06:00:00Z", datetime(2017, 11, 16, 6, tzinfo=UTC)),
        ("2017-11-16T04:00:00-02:00", datetime(2017, 11, 16, 6, tzinfo=UTC)),
        ("latest", None),
        ("2017-13-45", None),
        ("2017-11-16_backup", None),
        ("", None),
        ("-2017-11-16", None),
        ("0001-01-01T00:00:00+01:00", None),  # before year 1 in UTC: not a date Python can hold
        ("9999-12-31T23:00:00-05:00", None),
    ],
)
def test_parse_delivery(name: str, expected: datetime | None) -> None:
    assert parse_delivery(name) == expected


# --- open_source errors and URL forms --------------------------------------------------------------------------


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported source 's3://bucket/x'"):
        open_source("s3://bucket/x", make_settings())


def test_missing_local_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        open_source(str(tmp_path / "nope"), make_settings())
    with pytest.raises(SourceError):
        open_source(f"file://{tmp_path}/nope", make_settings())


def test_file_url(tmp_path: Path) -> None:
    (tmp_path / "transactional" / "2017-11-16").mkdir(parents=True)
    (tmp_path / "transactional" / "2017-11-16" / "students.json").write_bytes(b"[]")
    os.utime(tmp_path / "transactional" / "2017-11-16" / "students.json", ns=(0, 1_500_000_000_123_456_789))

    (f,) = open_source(f"file://{tmp_path}", make_settings()).list_files()

    assert f.fingerprint == "2:1500000000123456789"


def test_missing_bucket_is_a_clear_error(gcs_bucket: str) -> None:
    src = open_source("gs://no-such-bucket/deliveries", make_settings(gcs_token="anon"))
    with pytest.raises(ValueError, match="bucket does not exist"):
        list(src.list_files())


# --- Drive specifics ---------------------------------------------------------------------------------------------


def test_drive_without_credentials_names_the_variable(fake_drive: FakeDrive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAKEHOUSE_GDRIVE_CREDENTIALS", raising=False)
    with pytest.raises(ValueError, match="LAKEHOUSE_GDRIVE_CREDENTIALS"):
        open_source("gdrive://abc123", make_settings(gdrive_api_url=fake_drive.url))


@pytest.mark.parametrize(
    "bad", ["{not json", "/no/such/key.json", '{"type": "external_account"}', '{"type": "authorized_user"}']
)
def test_drive_with_unusable_credentials_names_the_variable(bad: str) -> None:
    with pytest.raises(ValueError, match="LAKEHOUSE_GDRIVE_CREDENTIALS"):
        open_source("gdrive://abc123", make_settings(gdrive_credentials=bad))


def test_drive_unknown_folder_or_file_is_a_clear_error(fake_drive: FakeDrive, drive_key: dict[str, Any]) -> None:
    folder = fake_drive.new_root()
    file_id = fake_drive.put(folder, "transactional/students.json", b"[]")
    conf = drive_settings(fake_drive, drive_key)
    with pytest.raises(ValueError, match="no such Drive folder"):
        list(open_source("gdrive://missing0123", conf).list_files())
    with pytest.raises(ValueError, match="not a Drive folder"):
        list(open_source(f"gdrive://{file_id}", conf).list_files())


def test_drive_rejects_a_bad_folder_id(drive_key: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="Drive folder id"):
        open_source("gdrive://abc' or 'x", make_settings(gdrive_credentials=json.dumps(drive_key)))


@pytest.mark.parametrize("form", ["service-account file", "authorized user"])
def test_drive_credential_forms(form: str, fake_drive: FakeDrive, drive_key: dict[str, Any], tmp_path: Path) -> None:
    if form == "service-account file":
        key_file = tmp_path / "key.json"
        key_file.write_text(json.dumps(drive_key))
        credentials = str(key_file)
    else:
        credentials = json.dumps(fake_drive.authorized_user_info())
    folder = fake_drive.new_root()
    fake_drive.put(folder, "transactional/2017-11-16/students.json", b"[7]")
    tokens_before = fake_drive.count("POST", "/token")

    conf = make_settings(gdrive_credentials=credentials, gdrive_api_url=fake_drive.url)
    src = open_source(f"gdrive://{folder}", conf)
    (f,) = src.list_files()

    assert read_all(src, f) == b"[7]"
    assert fake_drive.count("POST", "/token") - tokens_before == (0 if form == "authorized user" else 1)


def test_drive_pages_skips_trash_and_non_downloadables(fake_drive: FakeDrive, drive_key: dict[str, Any]) -> None:
    folder = fake_drive.new_root()
    for i in range(8):
        fake_drive.put(folder, f"events/2017-11-16/part-{i:05d}.json", b"{}\n")
    trashed = fake_drive.put(folder, "events/2017-11-16/trashed.json", b"{}\n")
    fake_drive.items[trashed].trashed = True
    fake_drive.put(folder, "events/2017-11-16/doc.json", b"", mime_type="application/vnd.google-apps.document")
    fake_drive.items[fake_drive.resolve(folder, "events/2017-11-16/doc.json").id].data = None
    before = fake_drive.count("GET", "/drive/v3/files?")

    src = open_source(f"gdrive://{folder}", drive_settings(fake_drive, drive_key))
    got = [f.path for f in src.list_files()]

    assert got == [f"events/2017-11-16/part-{i:05d}.json" for i in range(8)]
    assert fake_drive.count("GET", "/drive/v3/files?") - before >= 4  # page size capped at 3 by the fake
    assert fake_drive.page_size_cap == 3


def test_drive_streams_in_ranged_chunks(fake_drive: FakeDrive, drive_key: dict[str, Any]) -> None:
    folder = fake_drive.new_root()
    data = bytes(range(256)) * 4096  # 1 MiB
    fake_drive.put(folder, "events/2017-11-16/big.json", data)
    src = open_source(f"gdrive://{folder}", drive_settings(fake_drive, drive_key))
    assert isinstance(src, DriveSource)
    src.chunksize = 256 * 1024
    (f,) = src.list_files()
    media = f"/drive/v3/files/{f.ref}?"

    before = fake_drive.count("GET", media)
    with src.open(f) as fh:
        head = fh.read(1000)
        assert fake_drive.count("GET", media) - before == 1  # nothing fetched beyond the first chunk yet
        rest = fh.read()

    assert head + rest == data
    assert fake_drive.count("GET", media) - before == 4
    assert f.fingerprint == hashlib.md5(data).hexdigest()
