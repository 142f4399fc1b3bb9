"""Raw-delivery sources: one small interface over a local folder, `gs://` and `gdrive://`."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from lakehouse.config import get_settings
from lakehouse.security import open_beneath
from lakehouse.storage import gcs_filesystem

if TYPE_CHECKING:
    from lakehouse.config import Settings

log = logging.getLogger(__name__)

KINDS = ("transactional", "events")
EXTENSIONS = (".json", ".jsonl")
DRIVE_SCOPE = "https://www.googleapis.com/auth/drive.readonly"
DRIVE_FOLDER = "application/vnd.google-apps.folder"
DRIVE_LIST_FIELDS = "nextPageToken, files(id,name,mimeType,size,md5Checksum,modifiedTime)"
DRIVE_CHUNK_SIZE = 8 * 1024 * 1024
CREDENTIALS_VAR = "LAKEHOUSE_GDRIVE_CREDENTIALS"


class SourceError(ValueError):
    """A source URL or its configuration cannot be used."""


@dataclass(frozen=True)
class SourceFile:
    """One raw file of a source, as seen by a listing."""

    path: str  # '/'-separated, relative to the source root
    kind: str  # 'transactional' | 'events'
    entity: str | None  # transactional: file stem; events: None
    delivery: str  # delivery folder name, or the ISO as-of of a file directly under its kind folder
    as_of: datetime  # tz-aware UTC
    size: int
    fingerprint: str  # change marker from the listing alone (see each backend)
    ref: str = field(default="", repr=False, compare=False)  # Drive file id / GCS object; '' = resolve by path


@runtime_checkable
class Source(Protocol):
    url: str

    @property
    def skipped(self) -> list[dict[str, str]]:
        """What the last listing left out, each {"path": ..., "why": ...}: folders and files outside the layout,
        links."""

    def list_files(self) -> Iterator[SourceFile]: ...

    def open(self, f: SourceFile) -> BinaryIO: ...


def parse_delivery(name: str) -> datetime | None:
    """As-of time (UTC) of a delivery folder named by an ISO date or timestamp; None when it is not one."""
    if not name[:1].isdigit():
        return None
    try:
        return _utc(datetime.fromisoformat(name))
    except (ValueError, OverflowError):  # OverflowError: a zone pushing year 1 or 9999 out of range
        return None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_rfc3339(value: str) -> datetime:
    return _utc(datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")))


def _from_ns(ns: int) -> datetime:
    seconds, rest = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest // 1000)


class _Layout:
    """The layout rules for one listing: which folders count, what a file means, and what it leaves out."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.skipped: dict[str, str] = {}

    def skip(self, path: str, why: str) -> None:
        """Report a folder or file the listing leaves out (once per path)."""
        if path not in self.skipped:
            self.skipped[path] = why
            log.warning("source %s: skipping %r: %s", self.url, path, why)

    def report(self) -> list[dict[str, str]]:
        return [{"path": p, "why": w} for p, w in sorted(self.skipped.items())]

    def enter(self, parts: tuple[str, ...]) -> bool:
        """Whether the walk descends into the folder at `parts` (relative to the root)."""
        name = parts[-1]
        if name.startswith("."):
            return False
        if len(parts) == 1:
            if name not in KINDS:
                self.skip(name, f"not a folder of the source layout ({' or '.join(KINDS)})")
            return name in KINDS
        if len(parts) == 2:
            if parse_delivery(name) is None:
                self.skip("/".join(parts), "delivery folder name is not an ISO date or timestamp")
                return False
            return True
        if parts[0] == "transactional":
            self.skip("/".join(parts), "transactional files sit directly in their delivery folder")
            return False
        return True

    def file(
        self, parts: tuple[str, ...], size: int, modified: datetime, fingerprint: str, ref: str = ""
    ) -> SourceFile | None:
        """The SourceFile for a file at `parts`, or None when the layout does not count it."""
        if any(p.startswith(".") or not p for p in parts):
            return None
        name = parts[-1]
        if len(parts) < 2 or parts[0] not in KINDS:
            self.skip("/".join(parts), f"not in a folder of the source layout ({' or '.join(KINDS)})")
            return None
        for depth in range(2, len(parts)):  # flat listings (GCS) see every folder only through its files
            if not self.enter(parts[:depth]):
                return None
        if not name.lower().endswith(EXTENSIONS):
            if not name.startswith("_"):  # `_SUCCESS` and other markers of the tools that write deliveries
                self.skip("/".join(parts), f"not a {' or '.join(EXTENSIONS)} file")
            return None
        kind = parts[0]
        if len(parts) == 2:
            as_of = _utc(modified)
            delivery = as_of.isoformat()
        else:
            as_of = parse_delivery(parts[1])  # type: ignore[assignment]
            delivery = parts[1]
        entity = name.rsplit(".", 1)[0] if kind == "transactional" else None
        return SourceFile("/".join(parts), kind, entity, delivery, as_of, size, fingerprint, ref)


def _sorted(files: Iterable[SourceFile]) -> Iterator[SourceFile]:
    return iter(sorted(files, key=lambda f: (f.as_of, f.path, f.fingerprint)))


def _checked_parts(path: str) -> list[str]:
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise SourceError(f"not a source-relative path: {path!r}")
    return parts


class LocalSource:
    """A folder on the local filesystem; fingerprint `f"{size}:{mtime_ns}"`. Symbolic links are followed when they
    resolve inside the folder; one resolving outside it is refused (listed as skipped, never opened)."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root
        self.skipped: list[dict[str, str]] = []

    def __repr__(self) -> str:
        return f"LocalSource({self.url!r})"

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == str(self.root) or real.startswith(str(self.root).rstrip(os.sep) + os.sep)

    def list_files(self) -> Iterator[SourceFile]:
        layout = _Layout(self.url)
        found: list[SourceFile] = []

        def walk(folder: str, parts: tuple[str, ...], above: frozenset[str]) -> None:
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                return
            for entry in entries:
                here = (*parts, entry.name)
                try:
                    if entry.is_symlink() and not entry.name.startswith(".") and not self._inside(entry.path):
                        layout.skip("/".join(here), "symbolic link to outside the source folder: refused")
                    elif entry.is_dir():
                        real = os.path.realpath(entry.path)
                        if real not in above and layout.enter(here):  # a link to a folder above would loop
                            walk(entry.path, here, above | {real})
                    elif entry.is_file():
                        st = entry.stat()
                        f = layout.file(here, st.st_size, _from_ns(st.st_mtime_ns), f"{st.st_size}:{st.st_mtime_ns}")
                        if f is not None:
                            found.append(f)
                except FileNotFoundError:  # removed while we walked
                    continue

        walk(str(self.root), (), frozenset({str(self.root)}))
        self.skipped = layout.report()
        return _sorted(found)

    def open(self, f: SourceFile) -> BinaryIO:
        path = self.root.joinpath(*_checked_parts(f.path))
        real = os.path.realpath(path)
        if not self._inside(real):  # changed into a link out of the folder since the listing
            raise SourceError(f"{f.path} resolves outside the source folder: refused")
        # the path checked, opened with no link followed: one swapped in since the check fails instead of leading out
        try:
            return os.fdopen(open_beneath(self.root, os.path.relpath(real, self.root)), "rb")
        except OSError as exc:
            raise SourceError(f"{f.path} changed into a link while it was opened: refused ({exc.strerror})") from None


class GCSSource:
    """`gs://bucket/prefix` through gcsfs; fingerprint = `md5Hash` (base64), or `gen:<generation>` when absent."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        rest = url.split("://", 1)[1].strip("/")
        bucket = rest.split("/", 1)[0]
        if not bucket:
            raise SourceError(f"no bucket in {url!r}; expected gs://bucket/prefix")
        self.root = rest
        self.fs = gcs_filesystem(settings)
        self.skipped: list[dict[str, str]] = []

    def __repr__(self) -> str:
        return f"GCSSource({self.url!r})"

    def list_files(self) -> Iterator[SourceFile]:
        layout = _Layout(self.url)
        found: list[SourceFile] = []
        for kind in KINDS:  # one recursive listing per kind folder, not one per delivery
            top = f"{self.root}/{kind}"
            self.fs.invalidate_cache(top)
            try:
                listing = self.fs.find(top, detail=True)
            except FileNotFoundError:  # a missing prefix lists empty; only a missing bucket raises
                raise SourceError(f"{self.url}: bucket does not exist") from None
            for name, info in listing.items():
                if info.get("type") != "file" or name.endswith("/"):
                    continue
                parts = tuple(name[len(self.root) + 1 :].split("/"))
                updated = info.get("updated")
                modified = _parse_rfc3339(updated) if isinstance(updated, str) else info.get("mtime")
                fingerprint = info.get("md5Hash") or f"gen:{info.get('generation')}"
                f = layout.file(parts, int(info.get("size") or 0), modified, fingerprint, ref=name)
                if f is not None:
                    found.append(f)
        self.skipped = layout.report()
        return _sorted(found)

    def open(self, f: SourceFile) -> BinaryIO:
        return self.fs.open(f"{self.root}/{'/'.join(_checked_parts(f.path))}", "rb")


def _drive_credentials(settings: Settings) -> Any:
    secret = settings.gdrive_credentials
    raw = secret.get_secret_value().strip() if secret is not None else ""
    if not raw:
        raise SourceError(
            f"gdrive:// sources need credentials: set {CREDENTIALS_VAR} to a service-account key "
            "or an OAuth authorized-user token (JSON content or a path to a JSON file)"
        )
    if not raw.startswith("{"):
        path = Path(raw).expanduser()
        if not path.is_file():
            raise SourceError(f"{CREDENTIALS_VAR} is neither JSON nor the path of an existing file")
        raw = path.read_text(encoding="utf-8")
    try:
        info = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SourceError(f"{CREDENTIALS_VAR} does not hold valid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(info, dict):
        raise SourceError(f"{CREDENTIALS_VAR} must hold a JSON object")
    try:
        if info.get("type") == "service_account":
            from google.oauth2 import service_account

            return service_account.Credentials.from_service_account_info(info, scopes=[DRIVE_SCOPE])
        if info.get("type", "authorized_user") == "authorized_user":
            from google.oauth2.credentials import Credentials

            return Credentials.from_authorized_user_info(info)
    except (ValueError, KeyError) as e:
        raise SourceError(f"{CREDENTIALS_VAR}: unusable credentials: {e}") from None
    raise SourceError(f"{CREDENTIALS_VAR}: unsupported credentials type {info.get('type')!r}")


def _drive_endpoint(api_url: str) -> str:
    """Drive's base URL from an API root override (`http://host:port/`); a URL ending in `drive/v3/` is kept."""
    base = api_url.rstrip("/") + "/"
    return base if base.endswith("/drive/v3/") else base + "drive/v3/"


class _DriveReader(io.RawIOBase):
    """Pulls a Drive file in ranged chunks (MediaIoBaseDownload) as the reader asks for bytes."""

    def __init__(self, request: Any, chunksize: int) -> None:
        from googleapiclient.http import MediaIoBaseDownload

        self._chunks: list[bytes] = []
        self._buf = memoryview(b"")
        self._done = False
        self._download = MediaIoBaseDownload(_Sink(self._chunks), request, chunksize=chunksize)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            if self._chunks:
                self._buf = memoryview(self._chunks.pop(0))
            elif self._done:
                return 0
            else:
                _, self._done = self._download.next_chunk(num_retries=3)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _Sink:
    def __init__(self, chunks: list[bytes]) -> None:
        self.write = chunks.append


class DriveSource:
    """`gdrive://<folder-id>` through Drive v3; fingerprint `md5Checksum`, else `f"{modifiedTime}:{size}"`."""

    def __init__(self, url: str, settings: Settings, chunksize: int = DRIVE_CHUNK_SIZE) -> None:
        self.url = url
        self.folder_id = url.split("://", 1)[1].strip("/")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.folder_id):
            raise SourceError(f"not a Drive folder id in {url!r}; expected gdrive://<folder-id>")
        self.chunksize = chunksize
        self._credentials = _drive_credentials(settings)
        from googleapiclient.discovery import build

        options = {"api_endpoint": _drive_endpoint(settings.gdrive_api_url)} if settings.gdrive_api_url else None
        self.service = build(
            "drive",
            "v3",
            credentials=self._credentials,
            static_discovery=True,
            cache_discovery=False,
            client_options=options,
        )
        self._ids: dict[str, str] = {}
        self.skipped: list[dict[str, str]] = []

    def __repr__(self) -> str:
        return f"DriveSource({self.url!r})"

    def _children(self, folder_id: str) -> Iterator[dict[str, Any]]:
        token = None
        while True:
            page = (
                self.service.files()
                .list(
                    q=f"'{folder_id}' in parents and trashed=false",
                    fields=DRIVE_LIST_FIELDS,
                    pageSize=1000,
                    pageToken=token,
                    supportsAllDrives=True,
                    includeItemsFromAllDrives=True,
                )
                .execute(num_retries=3)
            )
            yield from page.get("files", [])
            token = page.get("nextPageToken")
            if not token:
                return

    def _check_root(self) -> None:
        from googleapiclient.errors import HttpError

        try:
            root = (
                self.service.files()
                .get(fileId=self.folder_id, fields="id,mimeType", supportsAllDrives=True)
                .execute(num_retries=3)
            )
        except HttpError as e:
            if e.resp.status == 404:
                raise SourceError(f"{self.url}: no such Drive folder, or not shared with these credentials") from None
            raise
        if root.get("mimeType") != DRIVE_FOLDER:
            raise SourceError(f"{self.url}: not a Drive folder ({root.get('mimeType')})")

    def list_files(self) -> Iterator[SourceFile]:
        self._check_root()
        layout = _Layout(self.url)
        found: list[SourceFile] = []
        seen = {self.folder_id}
        pending: list[tuple[str, tuple[str, ...]]] = [(self.folder_id, ())]
        while pending:
            folder_id, parts = pending.pop()
            for item in self._children(folder_id):
                name = item.get("name", "")
                if "/" in name:
                    layout.skip("/".join((*parts, name)), "'/' in a Drive name")
                    continue
                here = (*parts, name)
                if item.get("mimeType") == DRIVE_FOLDER:
                    if item["id"] not in seen and layout.enter(here):
                        seen.add(item["id"])
                        pending.append((item["id"], here))
                    continue
                if "size" not in item or "modifiedTime" not in item:  # Google Docs, shortcuts: nothing to download
                    continue
                size = int(item["size"])
                fingerprint = item.get("md5Checksum") or f"{item['modifiedTime']}:{size}"
                f = layout.file(here, size, _parse_rfc3339(item["modifiedTime"]), fingerprint, ref=item["id"])
                if f is not None:
                    found.append(f)
        self._ids = {f.path: f.ref for f in found}
        self.skipped = layout.report()
        return _sorted(found)

    def open(self, f: SourceFile) -> BinaryIO:
        from google_auth_httplib2 import AuthorizedHttp
        from googleapiclient.http import build_http

        _checked_parts(f.path)
        file_id = f.ref or self._ids.get(f.path)
        if not file_id:
            self._ids = {g.path: g.ref for g in self.list_files()}
            file_id = self._ids.get(f.path)
        if not file_id:
            raise FileNotFoundError(f"{self.url}: no file {f.path!r}")
        request = self.service.files().get_media(fileId=file_id, supportsAllDrives=True)
        request.http = AuthorizedHttp(self._credentials, http=build_http())  # own connection: safe across threads
        reader = io.BufferedReader(_DriveReader(request, self.chunksize), buffer_size=1024 * 1024)
        return reader


class OneDelivery:
    """A source narrowed to one delivery folder."""

    def __init__(self, source: Source, delivery: str) -> None:
        self.source, self.delivery, self.url = source, delivery, source.url

    def list_files(self) -> Iterator[SourceFile]:
        """The files of the delivery; none is an error, in one line."""
        found = [f for f in self.source.list_files() if f.delivery == self.delivery]
        if not found:
            raise ValueError(f"no file of delivery {self.delivery!r} in {self.url}")
        return iter(found)

    def open(self, f: SourceFile) -> BinaryIO:
        """Open one file of the delivery."""
        return self.source.open(f)

    @property
    def skipped(self) -> list[dict[str, str]]:
        """What the underlying source's listing left out."""
        return self.source.skipped


def open_source(url: str, settings: Settings | None = None) -> Source:
    """The Source for a local path, `file://`, `gs://bucket/prefix` or `gdrive://<folder-id>`."""
    if settings is None:
        settings = get_settings()
    if url.startswith("file://") or "://" not in url:
        path = url[len("file://") :] if url.startswith("file://") else url
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise SourceError(f"source folder does not exist: {root}")
        return LocalSource(url, root)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("gs", "gcs"):
        return GCSSource(url, settings)
    if scheme == "gdrive":
        return DriveSource(url, settings)
    raise SourceError(
        f"unsupported source {url!r}: expected a local path, file://, gs://bucket/prefix or gdrive://<folder-id>"
    )
