"""A project-managed PostgreSQL cluster under the data folder, used when `LAKEHOUSE_PG_DSN` is unset."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lakehouse.config import Settings, get_settings

INSTALL_HINT = "PostgreSQL server binaries not found: install them with `apt-get install -y postgresql`"
SUPERUSER = "lakehouse"
DATABASE = "lakehouse"


class PostgresError(RuntimeError):
    """The managed PostgreSQL cluster could not be set up or started."""


def find_bindir() -> Path:
    """The folder holding initdb/pg_ctl (Debian keeps it off the PATH), newest version first."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, on_path)
    if not candidates:
        raise PostgresError(INSTALL_HINT)
    return Path(candidates[0]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ManagedPostgres:
    """A local cluster in `root` (data in `root/cluster`), owned by a non-root user when we are root."""

    root: Path

    @property
    def cluster(self) -> Path:
        return self.root / "cluster"

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    @property
    def _secret(self) -> Path:
        return self.root / "superuser.secret"

    @property
    def port(self) -> int:
        return int((self.root / "port").read_text())

    @property
    def dsn(self) -> str:
        password = self._secret.read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    # -- running the server programs -------------------------------------------------------
    def _owner(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(find_bindir() / args[0]), *args[1:]]
        owner = self._owner()
        if owner:
            cmd = ["runuser", "-u", owner, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and proc.returncode != 0:
            raise PostgresError(f"{args[0]} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
        return proc

    def _chown(self, path: Path) -> None:
        owner = self._owner()
        if owner:
            entry = pwd.getpwnam(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- lifecycle -------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.cluster / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster once: scram auth on 127.0.0.1 only, a random superuser password."""
        if self.initialized():
            return
        if self._owner():
            try:
                pwd.getpwnam(self._owner())
            except KeyError:
                raise PostgresError(f"user 'postgres' missing; {INSTALL_HINT}") from None
        self.root.mkdir(parents=True, exist_ok=True)
        if self.cluster.exists():
            shutil.rmtree(self.cluster)  # a half-made cluster from an interrupted initdb
        self.cluster.mkdir(mode=0o700)
        self._chown(self.cluster)
        self._secret.write_text(secrets.token_urlsafe(24))
        self._secret.chmod(0o600)
        pwfile = self.root / ".pwfile"
        pwfile.write_text(self._secret.read_text())
        self._chown(pwfile)
        try:
            self._run("initdb", "-D", str(self.cluster), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        finally:
            pwfile.unlink(missing_ok=True)
        (self.root / "port").write_text(str(_free_port()))
        with open(self.cluster / "postgresql.conf", "a") as conf:
            conf.write("\n# managed by lakehouse\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                       "fsync = on\nmax_connections = 50\nshared_buffers = 256MB\n")

    def running(self) -> bool:
        return self.initialized() and self._run("pg_ctl", "status", "-D", str(self.cluster), check=False).returncode == 0

    def start(self) -> str:
        """Start the cluster if needed (creating it on first use) and return its DSN."""
        self.init()
        if not self.running():
            self._clear_stale_pid()
            self.logfile.touch()
            self._chown(self.logfile)
            self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.cluster), "-l", str(self.logfile),
                      "-o", f"-p {self.port}")
        self._ensure_database()
        return self.dsn

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.cluster))

    def _clear_stale_pid(self) -> None:
        pidfile = self.cluster / "postmaster.pid"
        if not pidfile.exists():
            return
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 0)
            alive = Path(f"/proc/{pid}/cmdline").read_bytes().find(b"postgres") >= 0
        except (ValueError, IndexError, ProcessLookupError, FileNotFoundError):
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            pidfile.unlink()

    def _ensure_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(self.dsn.rsplit("/", 1)[0] + "/postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_database where datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f"create database {DATABASE}")
        finally:
            conn.close()


def managed(settings: Settings | None = None) -> ManagedPostgres:
    return ManagedPostgres((settings or get_settings()).pg_dir)


def warehouse_dsn(settings: Settings | None = None) -> str:
    """The warehouse DSN: `LAKEHOUSE_PG_DSN`, else the managed cluster (started on demand)."""
    settings = settings or get_settings()
    if settings.pg_dsn is not None:
        return settings.pg_dsn.get_secret_value()
    return managed(settings).start()
