"""Landing: copy new source files into `<lake>/landing`, recording every file in a content-hash ledger of batches."""

from __future__ import annotations

import errno
import hashlib
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from lakehouse import faults, storage
from lakehouse.config import Settings, join
from lakehouse.reports import StageReport
from lakehouse.sources import Source, SourceError, SourceFile, open_source

LEDGER = "_system/ledger"
INCOMING = "_system/incoming"
CHUNK = 8 * 1024 * 1024
HEAD = 256  # bytes of an oversized line or export kept as its quarantine row's `raw`
REPORTED = 200  # skipped source entries listed in a landing report (all are counted)
_MANIFEST = re.compile(r"batch-(\d{6,})\.json$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def lake_fs(settings: Settings) -> tuple[Any, str]:
    """The fsspec filesystem of the lake and the lake root in that filesystem's terms."""
    return storage.filesystem(settings.lake_url, settings)


def lake_listing(settings: Settings, folder: str) -> tuple[Any, list[str]]:
    """The lake's filesystem and what one of its folders holds now (no cached listing); nothing if it is absent."""
    fs, root = lake_fs(settings)
    path = join(root, folder)
    fs.invalidate_cache(path)
    try:
        return fs, fs.ls(path, detail=False)
    except FileNotFoundError:
        return fs, []


def _safe(name: str) -> str:
    """A path segment Hadoop and Spark read as is: no ':' or glob characters, not hidden (`_`, `.`)."""
    name = _UNSAFE.sub("_", name)
    return "x" + name if name[:1] in ("_", ".", "") else name


def landed_path(f: SourceFile, sha256: str) -> str:
    """Lake-relative, content-addressed location of a landed file."""
    return f"landing/{f.kind}/{_safe(f.delivery)}/{sha256[:16]}/{_safe(f.path.rsplit('/', 1)[-1])}"


def read_ledger(settings: Settings) -> list[dict[str, Any]]:
    """Every committed batch manifest, in batch order."""
    fs, names = lake_listing(settings, LEDGER)
    paths = sorted(n for n in names if _MANIFEST.search(n.rsplit("/", 1)[-1]))
    if not paths:
        return []
    blobs = fs.cat(paths)
    return sorted((json.loads(blobs[p]) for p in paths), key=lambda m: m["batch_id"])


def _write_manifest(fs: Any, root: str, settings: Settings, manifest: dict[str, Any]) -> None:
    """Commit a batch: one atomic object put (GCS) or temp file + rename (local)."""
    target = join(root, LEDGER, f"batch-{manifest['batch_id']:06d}.json")
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    if settings.lake_is_local:
        fs.makedirs(join(root, LEDGER), exist_ok=True)
        tmp = join(root, LEDGER, f".tmp-{uuid.uuid4().hex}")
        fs.pipe_file(tmp, data)
        fs.mv(tmp, target)
    else:
        fs.pipe_file(target, data)


class _Unreadable(Exception):
    """The source refuses a file (permissions, gone since the listing, a link out of the source folder)."""


class _LineCap:
    """Copies an event file, setting aside each line longer than `cap` bytes: the copy keeps an empty line in its
    place (line numbers stay exact) and the whole line streams to a file of its own. Holds at most `cap` bytes."""

    def __init__(self, dst: Any, fs: Any, side: str, cap: int) -> None:
        self.dst, self.fs, self.side, self.cap = dst, fs, side, cap
        self.pending = bytearray()
        self.long: Any = None
        self.long_bytes = 0
        self.head = b""
        self.line = 1
        self.found: list[dict[str, Any]] = []

    def feed(self, chunk: bytes) -> None:
        """Copy the next chunk (never longer than `cap`: a line inside it cannot be too long)."""
        first = chunk.find(b"\n")
        if first < 0:
            self._extend(chunk)
            return
        self._extend(chunk[:first])
        self._end()
        last = chunk.rfind(b"\n")
        if last > first:
            self.dst.write(chunk[first + 1 : last + 1])
            self.line += chunk.count(b"\n", first + 1, last + 1)
        self._extend(chunk[last + 1 :])

    def _extend(self, data: bytes) -> None:
        if self.long is not None:
            self.long.write(data)
            self.long_bytes += len(data)
            if len(self.head) < HEAD:
                self.head += data[: HEAD - len(self.head)]
            return
        self.pending += data
        if len(self.pending) > self.cap:
            self.long = self.fs.open(f"{self.side}-{self.line}", "wb")
            self.long.write(self.pending)
            self.long_bytes, self.head = len(self.pending), bytes(self.pending[:HEAD])
            self.pending = bytearray()

    def _end(self) -> None:
        if self.long is not None:
            self.long.close()
            self.long = None
            self.found.append(
                {"line_number": self.line, "bytes": self.long_bytes, "head": self.head.decode("utf-8", "replace")}
            )
            self.dst.write(b"\n")
        else:
            self.pending += b"\n"
            self.dst.write(self.pending)
            self.pending = bytearray()
        self.line += 1

    def close(self) -> None:
        """At the end of the file: its last line (no terminator)."""
        if self.long is not None:
            self._end()
        elif self.pending:
            self.dst.write(self.pending)


def _copy_hashing(
    source: Source, f: SourceFile, fs: Any, tmp: str, max_line: int, max_bytes: int | None = None
) -> tuple[str, int, bytes, list[dict[str, Any]], int]:
    """Stream a source file to `tmp` in the lake; its sha256, size, first bytes, (events) the lines longer than
    `max_line`, each kept whole in `<tmp>.line-<n>`, and its number of lines. Past `max_bytes` nothing more is written
    (the rest is still read for the hash): a file too large to land costs no disk."""
    digest, size, head = hashlib.sha256(), 0, b""
    newlines, last = 0, b""
    try:
        src = source.open(f)
    except (PermissionError, FileNotFoundError, IsADirectoryError, SourceError) as e:
        raise _Unreadable(str(e) or type(e).__name__) from None
    with src, fs.open(tmp, "wb") as dst:
        lines = _LineCap(dst, fs, f"{tmp}.line", max_line) if f.kind == "events" else None
        while True:
            try:
                chunk = src.read(CHUNK if lines is None else min(CHUNK, max_line))
            except (PermissionError, FileNotFoundError, IsADirectoryError) as e:
                raise _Unreadable(str(e) or type(e).__name__) from None
            if not chunk:
                break
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
            if size < HEAD:
                head += chunk[: HEAD - size]
            size += len(chunk)
            if lines is None:
                if max_bytes is None or size - len(chunk) <= max_bytes:
                    dst.write(chunk)
            else:
                lines.feed(chunk)
        if lines is not None:
            lines.close()
    found = lines.found if lines is not None else []
    return digest.hexdigest(), size, head, found, newlines + (1 if last not in (b"", b"\n") else 0)


class _Index:
    """What the ledger knows: listings seen, landed content per (kind, entity), latest export per entity."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.listings: set[tuple[str, int, str]] = set()
        self.by_content: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.exports: dict[str, list[dict[str, Any]]] = {}
        self.landed_paths: set[str] = set()
        for e in entries:
            self.add(e)

    def add(self, e: dict[str, Any]) -> None:
        self.listings.add((e["path"], e["size"], e["fingerprint"]))
        if e["status"] != "new":
            return
        self.by_content.setdefault((e["kind"], e["entity"], e["sha256"]), e)
        self.landed_paths.add(e["landed_path"])
        if e["kind"] == "transactional":
            self.exports.setdefault(e["entity"], []).append(e)

    def duplicate_of(self, f: SourceFile, sha256: str, path: str) -> dict[str, Any] | None:
        """The landed entry these bytes repeat, or None when they are new information."""
        first = self.by_content.get((f.kind, f.entity, sha256))
        if first is None:
            return None
        if f.kind == "events" or path in self.landed_paths:
            return first
        # A full export equal to the entity's latest earlier export adds nothing; equal to an older one (A, B, A) it does.
        earlier = [e for e in self.exports.get(f.entity or "", []) if datetime.fromisoformat(e["as_of"]) <= f.as_of]
        latest = max(reversed(earlier), key=lambda e: datetime.fromisoformat(e["as_of"]), default=None)
        return latest if latest is not None and latest["sha256"] == sha256 else None


def unseen(settings: Settings, source: Source | None = None) -> bool:
    """Whether the source lists a file the ledger has not seen (by path, size and change marker)."""
    source = source or open_source(settings.source_url, settings)
    seen = {(e["path"], e["size"], e["fingerprint"]) for m in read_ledger(settings) for e in m["files"]}
    return any((f.path, f.size, f.fingerprint) not in seen for f in source.list_files())


def land(settings: Settings, source: Source | None = None) -> StageReport:
    """Copy every new source file into the landing zone and commit them as one ledger batch; returns a report."""
    started = time.monotonic()
    source = source or open_source(settings.source_url, settings)
    fs, root = lake_fs(settings)
    manifests = read_ledger(settings)
    index = _Index([e for m in manifests for e in m["files"]])
    batch_id = (manifests[-1]["batch_id"] if manifests else 0) + 1
    incoming = join(root, INCOMING)
    if fs.exists(incoming):
        fs.rm(incoming, recursive=True)  # leftovers of a killed run
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    seen = known = 0
    bytes_landed = 0
    for f in source.list_files():
        seen += 1
        if (f.path, f.size, f.fingerprint) in index.listings:
            known += 1
            continue
        if settings.lake_is_local:
            fs.makedirs(incoming, exist_ok=True)
        tmp = join(incoming, uuid.uuid4().hex)
        limit = settings.max_file_bytes if f.kind == "transactional" else None
        try:
            sha256, size, head, long_lines, line_count = _copy_hashing(
                source, f, fs, tmp, settings.max_line_bytes, limit
            )
        except _Unreadable as e:
            _remove(fs, [tmp])
            skipped.append({"path": f.path, "why": f"cannot be read: {e}"})
            continue
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            _remove(fs, [tmp, *(p for p in fs.glob(f"{tmp}.line-*"))])
            skipped.append(
                {"path": f.path, "why": "not landed: no space left on the lake's disk (landed once there is)"}
            )
            continue
        target = landed_path(f, sha256)
        entry = {
            "path": f.path,
            "kind": f.kind,
            "entity": f.entity,
            "delivery": f.delivery,
            "as_of": f.as_of.isoformat(),
            "size": f.size,
            "fingerprint": f.fingerprint,
            "bytes": size,
            "lines": line_count,
            "sha256": sha256,
            "landed_path": target,
            "landed_at": datetime.now(UTC).isoformat(),
            "batch_id": batch_id,
        }
        too_large = limit is not None and size > limit
        if too_large:  # set aside whole: its hash and head are kept, its content is not
            entry.update(file_reason="file_too_large", head=head.decode("utf-8", "replace"))
        sides = [(f"{tmp}.line-{x['line_number']}", f"{target}.line-{x['line_number']}") for x in long_lines]
        if long_lines:
            entry["long_lines"] = [dict(x, kept_at=kept) for x, (_, kept) in zip(long_lines, sides)]
        original = index.duplicate_of(f, sha256, target)
        if original is not None:
            _remove(fs, [tmp, *(t for t, _ in sides)])
            entry.update(status="duplicate", landed_path=original["landed_path"], duplicate_of=original["path"])
            entry.pop("long_lines", None)
        elif too_large:
            _remove(fs, [tmp])
            entry["status"] = "new"
        else:
            for temporary, final in [*sides, (tmp, target)]:  # the landed file last: it marks the others done
                _move(fs, settings, temporary, join(root, final))
            entry["status"] = "new"
            bytes_landed += size
        index.add(entry)
        entries.append(entry)
        faults.point("mid_landing")
    new = sum(e["status"] == "new" for e in entries)
    if entries:
        _write_manifest(
            fs,
            root,
            settings,
            {
                "batch_id": batch_id,
                "created_at": datetime.now(UTC).isoformat(),
                "source": source.url,
                "files": entries,
            },
        )
        faults.point("after_landing")
    skipped = [*getattr(source, "skipped", []), *skipped]
    landed = [e for e in entries if e["status"] == "new"]
    return StageReport(
        "land",
        files=new,
        deliveries=sorted({e["delivery"] for e in landed}),
        skipped=not new,
        seconds=round(time.monotonic() - started, 3),
        details={
            "batch_id": batch_id if entries else None,
            "files_seen": seen,
            "files_known": known,
            "files_duplicate": len(entries) - new,
            "bytes_landed": bytes_landed,
            "files_too_large": sum(e.get("file_reason") == "file_too_large" for e in landed),
            "lines_too_long": sum(len(e.get("long_lines", [])) for e in landed),
            "not_landed": len(skipped),
            "not_landed_files": skipped[:REPORTED],
        },
    )


def _remove(fs: Any, paths: list[str]) -> None:
    for path in paths:
        if fs.exists(path):
            fs.rm(path)


def _move(fs: Any, settings: Settings, tmp: str, final: str) -> None:
    """Put a file landed under `tmp` at `final`, unless a run killed before its manifest already did."""
    if fs.exists(final):
        fs.rm(tmp)
    elif settings.lake_is_local:
        fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(tmp, final)
    else:  # object stores have no rename: a server-side copy, then the temporary object goes
        fs.copy(tmp, final)
        fs.rm(tmp)
