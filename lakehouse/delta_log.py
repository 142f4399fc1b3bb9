"""Reading a Delta table's transaction log without Spark: commits, app watermarks (txn), operation metrics, the data
files a version reads, which versions can still be read, and the rows changed between two versions (the change data
feed). Local paths and gs:// alike."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.config import Settings
from lakehouse.storage import filesystem

_COMMIT = re.compile(r"/(\d{20})\.json$")
_CHECKPOINT = re.compile(r"/(\d{20})\.checkpoint(?:\.\d+\.\d+)?\.parquet$")


@dataclass(frozen=True)
class Commit:
    """What one commit of a table says about itself: its version, an app's txn version, metrics, user metadata, and
    whether it added or removed data files (an empty commit only records progress)."""

    version: int
    txn: int
    metrics: dict[str, str]
    user_metadata: str | None
    touches_data: bool = True


class ChangesGone(Exception):
    """The rows changed between two versions of a table can no longer be read; the message says why, in one line."""


CHANGE_TYPE = "_change_type"  # the column of a change row saying what it is: insert, delete, update_pre/postimage


@dataclass(frozen=True)
class ChangeFile:
    """A file holding rows a commit changed: a change-data file (`cdc` action: each row's `_change_type` says what it
    is), or, in a commit that wrote none, a data file it added (its rows inserted) or removed (deleted)."""

    path: str  # relative to the table root
    partition: dict[str, str | None]  # the partition values of its rows (not in the file)
    change_type: str | None  # insert or delete for a data file; None for a change-data file


class DeltaLog:
    """The `_delta_log` of the table at `path`, listed once (never from a cached listing)."""

    def __init__(self, path: str, settings: Settings | None = None):
        self.fs, root = filesystem(path, settings)
        self.root = root.rstrip("/")
        self.dir = self.root + "/_delta_log"

    @cached_property
    def names(self) -> list[str]:
        """The log's file names (empty when there is no table)."""
        try:
            return self.fs.ls(self.dir, detail=False, refresh=True)
        except FileNotFoundError:
            return []

    @cached_property
    def commits(self) -> list[tuple[int, str]]:
        """(version, file) of every commit file still in the log, oldest first."""
        return sorted((int(m.group(1)), n) for n in self.names if (m := _COMMIT.search(n)))

    @property
    def exists(self) -> bool:
        return bool(self.commits)

    @property
    def latest(self) -> int | None:
        """The table's current version (None: no table)."""
        return self.commits[-1][0] if self.commits else None

    def actions(self, name: str) -> Iterator[dict[str, Any]]:
        """The actions of one commit file."""
        for line in self.fs.cat_file(name).splitlines():
            if line.strip():
                yield json.loads(line)

    def _checkpoint_parts(self, version: int) -> list[str]:
        return sorted(n for n in self.names if (m := _CHECKPOINT.search(n)) and int(m.group(1)) == version)

    @property
    def checkpoints(self) -> list[int]:
        """The versions a checkpoint file exists for, oldest first."""
        return sorted({int(m.group(1)) for n in self.names if (m := _CHECKPOINT.search(n))})

    def _checkpoint_column(self, version: int, column: str) -> Iterator[dict[str, Any]]:
        for part in self._checkpoint_parts(version):
            with self.fs.open(part, "rb") as f:
                yield from (a for a in pq.read_table(f, columns=[column]).column(column).to_pylist() if a)

    def txn_versions(self) -> dict[str, int]:
        """Every app's latest committed txnVersion."""
        versions: dict[str, int] = {}
        checkpoint = -1
        if any(n.endswith("/_last_checkpoint") for n in self.names):
            checkpoint = json.loads(self.fs.cat_file(self.dir + "/_last_checkpoint"))["version"]
            for txn in self._checkpoint_column(checkpoint, "txn"):
                versions[txn["appId"]] = int(txn["version"])
        for version, name in self.commits:
            if version <= checkpoint:
                continue
            for line in self.fs.cat_file(name).splitlines():
                if b'"txn"' in line and (txn := json.loads(line).get("txn")):
                    versions[txn["appId"]] = int(txn["version"])
        return versions

    def _commit(self, version: int, name: str, app_id: str) -> Commit | None:
        info: dict = {}
        txn = None
        touches_data = False
        for line in self.fs.cat_file(name).splitlines():
            if line.startswith((b'{"add"', b'{"remove"')):
                touches_data = True
            elif b'"commitInfo"' in line:
                info = json.loads(line).get("commitInfo") or {}
            elif b'"txn"' in line and (action := json.loads(line).get("txn")) and action["appId"] == app_id:
                txn = int(action["version"])
        if txn is None:
            return None
        return Commit(version, txn, dict(info.get("operationMetrics") or {}), info.get("userMetadata"), touches_data)

    def app_commits(self, app_id: str, floor: int | None = None) -> Iterator[Commit]:
        """The commits carrying an `app_id` txn, newest first; stops after the first at or below txn `floor`."""
        for version, name in reversed(self.commits):
            commit = self._commit(version, name, app_id)
            if commit is not None:
                yield commit
                if floor is not None and commit.txn <= floor:
                    return

    def commit_info(self, version: int | None = None) -> dict[str, Any]:
        """The `commitInfo` of a commit (default: the latest); empty when there is none."""
        files = dict(self.commits)
        name = files.get(self.latest if version is None else version)  # type: ignore[arg-type]
        for action in self.actions(name) if name else ():
            if "commitInfo" in action:
                return action["commitInfo"] or {}
        return {}

    def configuration(self) -> dict[str, str]:
        """The table's properties as of its latest version (the newest metaData action)."""
        base = self.checkpoints[-1] if self.checkpoints else -1
        for version, name in reversed(self.commits):
            if version <= base:
                break
            for action in self.actions(name):
                if "metaData" in action:
                    return dict(action["metaData"].get("configuration") or {})
        for meta in self._checkpoint_column(base, "metaData") if base >= 0 else ():
            return dict(meta.get("configuration") or {})
        return {}

    def remove_before(self, version: int) -> int:
        """Delete every log file of the versions before `version` (commits, checksums, checkpoints, and the
        filesystem's hidden checksums of each); the files deleted."""
        gone = [
            n
            for n in self.names
            if (m := re.match(r"\.?(\d{20})\.", n.rsplit("/", 1)[-1])) and int(m.group(1)) < version
        ]
        for name in gone:
            self.fs.rm(name)
        return len(gone)

    def _relative(self, file: str) -> str:
        file = unquote(file)
        return file[len(self.root) + 1 :] if file.startswith(self.root + "/") else file

    def files_on_disk(self) -> set[str]:
        """Every file under the table's folder outside its log, relative to the table root."""
        return {f[len(self.root) + 1 :] for f in self.fs.find(self.root) if "/_delta_log/" not in f}

    def live_files(self) -> set[str]:
        """The data files the latest version reads, relative to the table root: the latest checkpoint's adds, then
        the commits after it."""
        checkpoints = self.checkpoints
        base = checkpoints[-1] if checkpoints else -1
        live = {self._relative(a["path"]) for a in self._checkpoint_column(base, "add")} if base >= 0 else set()
        for version, name in self.commits:
            if version > base:
                self._apply(live, name)
        return live

    def _apply(self, live: set[str], name: str) -> None:
        for action in self.actions(name):
            if "add" in action:
                live.add(self._relative(action["add"]["path"]))
            elif "remove" in action:
                live.discard(self._relative(action["remove"]["path"]))

    def oldest_readable_version(self) -> int | None:
        """The oldest version whose data files all still exist (None: none, or no table): the log can still list
        versions whose removed files a vacuum deleted."""
        commits = dict(self.commits)
        if not commits:
            return None
        existing = self.files_on_disk()
        latest = max(commits)
        active: set[str] = set()
        base = -1
        if any(v not in commits for v in range(latest + 1)):  # the log was cleaned: start from a checkpoint
            usable = [c for c in self.checkpoints if all(v in commits for v in range(c + 1, latest + 1))]
            if not usable:
                return None
            base = usable[0]
            active = {self._relative(a["path"]) for a in self._checkpoint_column(base, "add")}
            if active <= existing:
                return base
        for version in range(base + 1, latest + 1):
            self._apply(active, commits[version])
            if active <= existing:
                return version
        return None

    def change_files(self, after: int, upto: int) -> list[ChangeFile]:
        """The files holding the rows changed by the commits after version `after` up to `upto`, by the Delta
        protocol: a commit's change-data files when it wrote some, else the data files it added and removed with
        `dataChange` (a compaction's files change no row). Raises ChangesGone when a commit is no longer in the log,
        replaced the whole table (a full overwrite: read the table instead), or hid rows by deletion vectors without
        change-data files."""
        commits = dict(self.commits)
        gone = [v for v in range(after + 1, upto + 1) if v not in commits]
        if gone:
            raise ChangesGone(f"version {gone[0]} is no longer in its log (its history was compacted)")
        found: list[ChangeFile] = []
        for version in range(after + 1, upto + 1):
            actions = list(self.actions(commits[version]))
            info = next((a["commitInfo"] or {} for a in actions if "commitInfo" in a), {})
            parameters = info.get("operationParameters") or {}
            if parameters.get("mode") == "Overwrite" and not parameters.get("predicate"):
                raise ChangesGone(f"version {version} replaced the whole table ({info.get('operation', 'a write')})")
            cdc = [a["cdc"] for a in actions if "cdc" in a]
            if cdc:
                found += [ChangeFile(self._relative(c["path"]), c.get("partitionValues") or {}, None) for c in cdc]
                continue
            for kind, change in (("add", "insert"), ("remove", "delete")):
                for file in (a[kind] for a in actions if kind in a and a[kind].get("dataChange", True)):
                    if file.get("deletionVector"):
                        raise ChangesGone(f"version {version} hid rows by deletion vectors without change-data files")
                    found.append(ChangeFile(self._relative(file["path"]), file.get("partitionValues") or {}, change))
        return found

    def changes(self, after: int, upto: int) -> pa.Table | None:
        """The rows changed by the commits after version `after` up to `upto` (change_files), partition columns and
        `_change_type` included; None when none changed. Raises ChangesGone when they cannot be read: a file of them
        was deleted (a vacuum), or see change_files."""
        parts = []
        for file in self.change_files(after, upto):
            try:
                with self.fs.open(f"{self.root}/{file.path}", "rb") as f:
                    rows = pq.read_table(f)
            except FileNotFoundError:
                raise ChangesGone(f"{file.path} was deleted (a vacuum)") from None
            for column, value in file.partition.items():
                if column not in rows.column_names:
                    rows = rows.append_column(column, pa.array([value] * rows.num_rows, pa.string()))
            if file.change_type is not None:
                rows = rows.append_column(CHANGE_TYPE, pa.array([file.change_type] * rows.num_rows, pa.string()))
            parts.append(rows)
        return pa.concat_tables(parts, promote_options="permissive") if parts else None


def is_table(path: str, settings: Settings | None = None) -> bool:
    """Whether a Delta table lives at `path` (a commit in its log)."""
    return DeltaLog(path, settings).exists


def latest_version(path: str, settings: Settings | None = None) -> int | None:
    """The current version of the table at `path` (None: no table)."""
    return DeltaLog(path, settings).latest


def commits_since(path: str, before: int | None) -> int:
    """The commits the table at `path` got since it was at version `before` (None: it did not exist)."""
    return (latest_version(path) or 0) - (-1 if before is None else before)


def last_commit(path: str, settings: Settings | None = None) -> tuple[int, datetime] | None:
    """(version, commit time) of the table's latest commit."""
    log = DeltaLog(path, settings)
    info = log.commit_info()
    if log.latest is None or "timestamp" not in info:
        return None
    return log.latest, datetime.fromtimestamp(info["timestamp"] / 1000, tz=UTC)


def last_txn_version(path: str, app_id: str) -> int | None:
    """The highest txnVersion committed to the table at `path` by `app_id` (None: never, or no table)."""
    return DeltaLog(path).txn_versions().get(app_id)


def app_commits(path: str, app_id: str, floor: int | None = None) -> Iterator[Commit]:
    """The table's commits carrying an `app_id` txn, newest first (see DeltaLog.app_commits)."""
    return DeltaLog(path).app_commits(app_id, floor)


def data_changed(path: str, app_id: str, after: int | None, upto: int) -> bool:
    """Whether `app_id`'s commits with txn versions in (after, upto] added or removed data: batches that brought
    nothing for this table leave it, and whatever is built from it, as it was. When those commits are no longer in
    the log (an erasure compacted it), the table may have changed: True."""
    floor = -1 if after is None else after
    log = DeltaLog(path)
    found = [c for c in log.app_commits(app_id, floor) if floor < c.txn <= upto]
    if not found:
        return log.txn_versions().get(app_id, -1) > floor
    return any(c.touches_data for c in found)


def written(metrics: dict[str, str]) -> int:
    """Rows a commit wrote: a MERGE's inserted and updated rows, or a write's output rows."""
    if "numTargetRowsInserted" in metrics:
        return int(metrics["numTargetRowsInserted"]) + int(metrics.get("numTargetRowsUpdated") or 0)
    return int(metrics.get("numOutputRows") or 0)


def rows_committed(path: str, app_id: str, after: int | None, upto: int) -> int:
    """Rows `app_id` wrote in its commits with txn versions in (after, upto]: the rows of those input batches,
    counted from the commits' metrics instead of by reading them again."""
    floor = -1 if after is None else after
    return sum(written(c.metrics) for c in app_commits(path, app_id, floor) if floor < c.txn <= upto)


def rows_written(path: str) -> int:
    """Rows the table's latest commit wrote, from its operation metrics."""
    return written(DeltaLog(path).commit_info().get("operationMetrics") or {})


def oldest_readable_version(path: str) -> int | None:
    """The oldest version of the table at `path` whose data files all still exist (see DeltaLog)."""
    return DeltaLog(path).oldest_readable_version()
