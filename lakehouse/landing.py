"""Landing: copy new source files into `<lake>/landing`, recording every file in a content-hash ledger of batches."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from lakehouse import faults, storage
from lakehouse.config import Settings, join
from lakehouse.sources import Source, SourceFile, open_source

LEDGER = "_system/ledger"
INCOMING = "_system/incoming"
CHUNK = 8 * 1024 * 1024
_MANIFEST = re.compile(r"batch-(\d{6,})\.json$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def lake_fs(settings: Settings) -> tuple[Any, str]:
    """The fsspec filesystem of the lake and the lake root in that filesystem's terms."""
    return storage.filesystem(settings.lake_url, settings)


def _safe(name: str) -> str:
    """A path segment Hadoop and Spark read as is: no ':' or glob characters, not hidden (`_`, `.`)."""
    name = _UNSAFE.sub("_", name)
    return "x" + name if name[:1] in ("_", ".", "") else name


def landed_path(f: SourceFile, sha256: str) -> str:
    """Lake-relative, content-addressed location of a landed file."""
    return f"landing/{f.kind}/{_safe(f.delivery)}/{sha256[:16]}/{_safe(f.path.rsplit('/', 1)[-1])}"


def read_ledger(settings: Settings) -> list[dict[str, Any]]:
    """Every committed batch manifest, in batch order."""
    fs, root = lake_fs(settings)
    folder = join(root, LEDGER)
    fs.invalidate_cache(folder)
    try:
        names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
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


def _copy_hashing(source: Source, f: SourceFile, fs: Any, tmp: str) -> tuple[str, int]:
    """Stream a source file to `tmp` in the lake; its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    with source.open(f) as src, fs.open(tmp, "wb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


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


def land(settings: Settings, source: Source | None = None) -> dict[str, Any]:
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
        sha256, size = _copy_hashing(source, f, fs, tmp)
        target = landed_path(f, sha256)
        entry = {
            "path": f.path, "kind": f.kind, "entity": f.entity, "delivery": f.delivery,
            "as_of": f.as_of.isoformat(), "size": f.size, "fingerprint": f.fingerprint,
            "bytes": size, "sha256": sha256, "landed_path": target,
            "landed_at": datetime.now(timezone.utc).isoformat(), "batch_id": batch_id,
        }
        original = index.duplicate_of(f, sha256, target)
        if original is not None:
            fs.rm(tmp)
            entry.update(status="duplicate", landed_path=original["landed_path"], duplicate_of=original["path"])
        else:
            final = join(root, target)
            if fs.exists(final):  # landed by a run killed before its manifest
                fs.rm(tmp)
            else:
                if settings.lake_is_local:
                    fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                    fs.mv(tmp, final)
                else:  # object stores have no rename: a server-side copy, then the temporary object goes
                    fs.copy(tmp, final)
                    fs.rm(tmp)
            entry["status"] = "new"
            bytes_landed += size
        index.add(entry)
        entries.append(entry)
        faults.point("mid_landing")
    new = sum(e["status"] == "new" for e in entries)
    if entries:
        _write_manifest(fs, root, settings, {
            "batch_id": batch_id, "created_at": datetime.now(timezone.utc).isoformat(),
            "source": source.url, "files": entries,
        })
        faults.point("after_landing")
    return {
        "batch_id": batch_id if entries else None,
        "files_seen": seen, "files_known": known, "files_new": new, "files_duplicate": len(entries) - new,
        "deliveries": sorted({e["delivery"] for e in entries if e["status"] == "new"}),
        "bytes_landed": bytes_landed, "seconds": round(time.monotonic() - started, 3),
    }
