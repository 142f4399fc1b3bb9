"""A project-managed PostgreSQL cluster under the data folder, used when `LAKEHOUSE_PG_DSN` is unset."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.config import Settings, get_settings
from lakehouse.security import free_port, read_beneath, secure_dir, write_beneath, write_secret
from lakehouse.warehouse.loads import SQL_DIR
from lakehouse.warehouse.roles import BI_GROUP, BI_LOGIN

if TYPE_CHECKING:
    import psycopg2.extensions

INSTALL_HINT = "PostgreSQL server binaries not found: install them with `apt-get install -y postgresql`"
SUPERUSER = "lakehouse"  # administers the cluster only
OWNER = "lakehouse_owner"  # owns the warehouse database; the mirror's login
DATABASE = "lakehouse"
LARGE_OBJECTS = SQL_DIR / "008_no_large_objects_for_public.sql"


class PostgresError(RuntimeError):
    """The managed PostgreSQL cluster could not be set up or started."""


def find_bindir() -> Path:
    """The folder holding initdb/pg_ctl (Debian keeps it off the PATH), newest version first."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]), reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, on_path)
    if not candidates:
        raise PostgresError(INSTALL_HINT)
    return Path(candidates[0]).parent


def _account(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise PostgresError(f"user {user!r} missing; {INSTALL_HINT}") from None


def _postmaster(pidfile: Path) -> int | None:
    """The pid of the live server that wrote `pidfile` (None: no file, or its process is gone)."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
        return pid if Path(f"/proc/{pid}/cmdline").read_bytes().find(b"postgres") >= 0 else None
    except (ValueError, IndexError, ProcessLookupError, FileNotFoundError):
        return None
    except PermissionError:
        return int(pidfile.read_text().split()[0])


@dataclass
class ManagedPostgres:
    """A local cluster whose state (port, passwords) lives in `root`. The data directory is `root/cluster`, except
    when we are root: the server then runs as the `postgres` user, which cannot reach a 0700 data folder (nor a
    checkout in root's home), so the data directory lives in that user's home (`~postgres/lakehouse/<id>`).

    Roles: the superuser `lakehouse` administers the cluster; the warehouse database is owned by `lakehouse_owner`
    (no superuser, no CREATEROLE), the login the mirror uses; `bi_user` reaches only the databases listed in the
    cluster's `bi_databases` file (pg_hba)."""

    root: Path

    @property
    def cluster(self) -> Path:
        owner = self._owner()
        if owner is None:
            return self.root / "cluster"
        home = Path(_account(owner).pw_dir).resolve()
        resolved = self.root.resolve()
        digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
        return home / "lakehouse" / f"{resolved.parent.name or 'root'}-{digest}"

    @property
    def logfile(self) -> Path:
        return self.cluster.with_name(self.cluster.name + ".log")

    @property
    def bi_databases(self) -> Path:
        """The databases `bi_user` may connect to, one per line (pg_hba reads it at each reload)."""
        return self.cluster / "bi_databases"

    @property
    def _secret(self) -> Path:
        return self.root / "superuser.secret"

    @property
    def _owner_secret(self) -> Path:
        return self.root / "owner.secret"

    @property
    def port(self) -> int:
        return int((self.root / "port").read_text())

    def _url(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        """The warehouse database as its owner (no superuser): what the mirror uses."""
        return self._url(OWNER, self._owner_secret.read_text().strip(), DATABASE)

    @property
    def admin_dsn(self) -> str:
        """The warehouse database as the cluster's superuser (roles, databases, pg_hba)."""
        return self._url(SUPERUSER, self._secret.read_text().strip(), DATABASE)

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

    @property
    def _base(self) -> Path:
        """The trusted folder the server's files are reached from: the server user's home, or `root`."""
        owner = self._owner()
        return Path(_account(owner).pw_dir).resolve() if owner else Path(os.path.abspath(self.root))

    def _write(self, path: Path, text: str, append: bool = False) -> None:
        """Write a file of the server's folders (which its user owns) without following a symbolic link."""
        write_beneath(self._base, Path(os.path.abspath(path)).relative_to(self._base), text, append)

    def _read(self, path: Path) -> str:
        return read_beneath(self._base, Path(os.path.abspath(path)).relative_to(self._base))

    def _chown(self, path: Path) -> None:
        owner = self._owner()
        if owner:
            entry = _account(owner)
            os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    # -- lifecycle -------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.cluster / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster once: scram auth on 127.0.0.1 only, a random superuser password."""
        if self.initialized():
            if self._secret.exists():
                return
            self.remove()  # an orphan: the data folder that held its passwords and port was deleted since
        find_bindir()  # PostgresError naming the install command, before anything is made
        secure_dir(self.root)
        if not (self.root / "port").exists():
            (self.root / "port").write_text(str(free_port()))
        if self._adopt_legacy_cluster():
            return
        if self.cluster.exists():
            shutil.rmtree(self.cluster)  # a half-made cluster from an interrupted initdb
        self._make_server_dir(self.cluster.parent)
        self.cluster.mkdir(mode=0o700)
        self._chown(self.cluster)
        write_secret(self._secret, secrets.token_urlsafe(24), replace=True)
        pwfile = write_secret(
            self.cluster.with_name(f".{self.cluster.name}.pwfile"), self._secret.read_text(), replace=True
        )
        self._chown(pwfile)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.cluster),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self._write(
            self.cluster / "postgresql.conf",
            (
                "\n# managed by lakehouse\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                "fsync = on\nmax_connections = 50\nshared_buffers = 256MB\n"
                "password_encryption = scram-sha-256\n"
            ),
            append=True,
        )

    def _make_server_dir(self, path: Path) -> None:
        """The folder holding the data directory, reachable by the server's user (created when missing)."""
        if path == self.root:
            return
        if not path.parent.is_dir():
            raise PostgresError(
                f"{path.parent}, the home of the user the managed PostgreSQL runs as, does not exist:"
                f" create it (`install -d -o postgres -g postgres {path.parent}`), or set"
                " LAKEHOUSE_PG_DSN to a server of your own"
            )
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._chown(path)
        except OSError as exc:
            raise PostgresError(
                f"cannot create {path} for the managed PostgreSQL ({exc.strerror}): make that folder"
                f" writable by root, or set LAKEHOUSE_PG_DSN to a server of your own"
            ) from None

    def _adopt_legacy_cluster(self) -> bool:
        """Move a cluster made by an earlier version under `root` to where the server's user can reach it."""
        legacy = self.root / "cluster"
        if legacy == self.cluster or not (legacy / "PG_VERSION").exists():
            return False
        pid = _postmaster(legacy / "postmaster.pid")
        if pid:  # stop it as pg_ctl would (fast shutdown): pg_ctl, run as the server's user, cannot reach it
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _postmaster(legacy / "postmaster.pid") == pid:
                time.sleep(0.2)
        self._make_server_dir(self.cluster.parent)
        shutil.move(str(legacy), str(self.cluster))
        for path in [self.cluster, *self.cluster.rglob("*")]:
            self._chown(path)
        (self.root / "postgres.log").unlink(missing_ok=True)
        return True

    def running(self) -> bool:
        return (
            self.initialized() and self._run("pg_ctl", "status", "-D", str(self.cluster), check=False).returncode == 0
        )

    def start(self) -> str:
        """Start the cluster if needed (creating it on first use); return the owner's DSN of the warehouse."""
        self.init()
        self._write_hba()
        if not self.running():
            self._clear_stale_pid()
            self._write(self.logfile, "", append=True)
            self._chown(self.logfile)
            self._run(
                "pg_ctl",
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                str(self.cluster),
                "-l",
                str(self.logfile),
                "-o",
                f"-p {self.port}",
            )
        self._ensure_database()
        return self.dsn

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.cluster))

    def remove(self) -> None:
        """Stop the cluster and delete its data directory (the state in `root` stays)."""
        self.stop()
        shutil.rmtree(self.cluster, ignore_errors=True)
        self.logfile.unlink(missing_ok=True)

    def _clear_stale_pid(self) -> None:
        pidfile = self.cluster / "postmaster.pid"
        if pidfile.exists() and _postmaster(pidfile) is None:
            pidfile.unlink()

    # -- roles, database, pg_hba -----------------------------------------------------------
    def _write_hba(self) -> None:
        """pg_hba: TCP on 127.0.0.1 with scram passwords; bi_user only to the databases in `bi_databases`."""
        if not self.bi_databases.exists():
            self._write(self.bi_databases, DATABASE + "\n")
            self._chown(self.bi_databases)
        hba = self.cluster / "pg_hba.conf"
        wanted = HBA.format(bi=BI_LOGIN)
        if self._read(hba) != wanted:
            self._write(hba, wanted)
            self._chown(hba)
            if self.running():
                self._run("pg_ctl", "reload", "-D", str(self.cluster))

    def allow_bi(self, database: str) -> None:
        """Let `bi_user` connect to one more database of this cluster (another warehouse)."""
        names = self._read(self.bi_databases).split()
        if database not in names:
            self._write(self.bi_databases, "\n".join([*names, database]) + "\n")
            self._run("pg_ctl", "reload", "-D", str(self.cluster))

    def _connect(self, database: str) -> psycopg2.extensions.connection:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                return psycopg2.connect(self._url(SUPERUSER, self._secret.read_text().strip(), database))
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _ensure_database(self) -> None:
        """The owner role, the BI group and the warehouse database owned by the owner role (an earlier version's
        database, made by the superuser, is handed over)."""
        from psycopg2.extensions import encrypt_password

        try:
            owner_password = self._owner_secret.read_text().strip()
        except FileNotFoundError:
            owner_password = secrets.token_urlsafe(24)
            write_secret(self._owner_secret, owner_password, replace=True)
        conn = self._connect("postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_roles where rolname = %s", (OWNER,))
                if cur.fetchone() is None:
                    cur.execute(f"create role {OWNER}")
                verifier = encrypt_password(owner_password, OWNER, conn, "scram-sha-256")
                cur.execute(
                    f"alter role {OWNER} with login nosuperuser nocreatedb nocreaterole noreplication"
                    " nobypassrls password %s",
                    (verifier,),
                )
                cur.execute("select 1 from pg_roles where rolname = %s", (BI_GROUP,))
                if cur.fetchone() is None:
                    cur.execute(f"create role {BI_GROUP} nologin")
                cur.execute("select pg_get_userbyid(datdba) from pg_database where datname = %s", (DATABASE,))
                found = cur.fetchone()
                if found is None:
                    cur.execute(f"create database {DATABASE} owner {OWNER}")
                elif found[0] != OWNER:
                    cur.execute(f"alter database {DATABASE} owner to {OWNER}")
        finally:
            conn.close()
        conn = self._connect(DATABASE)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(HAND_OVER, {"owner": OWNER, "bi": BI_GROUP})
                cur.execute(LARGE_OBJECTS.read_text())  # run as the superuser: PUBLIC loses them here too
        finally:
            conn.close()


# The managed cluster's pg_hba.conf. `@bi_databases` is the file of that name beside it.
HBA = """# managed by lakehouse (rewritten at each start): TCP on 127.0.0.1 only, scram-sha-256 passwords
# TYPE  DATABASE        USER        ADDRESS         METHOD
host    @bi_databases   {bi:<11} 127.0.0.1/32    scram-sha-256
host    all             {bi:<11} all             reject
host    all             all         127.0.0.1/32    scram-sha-256
"""

# Objects an earlier version made as the superuser in the warehouse database go to the owner role, with the
# default privileges that let bi_reader read the tables the owner creates.
HAND_OVER = """
do $$
declare
    item record;
begin
    for item in select n.nspname from pg_namespace n
                where n.nspname in ('dw', 'stage') and pg_get_userbyid(n.nspowner) <> %(owner)s loop
        execute format('alter schema %%I owner to %%I', item.nspname, %(owner)s);
    end loop;
    for item in select n.nspname, c.relname, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace
                where n.nspname in ('dw', 'stage') and c.relkind in ('r', 'p', 'v', 'm', 'S')
                  and pg_get_userbyid(c.relowner) <> %(owner)s
                  and not exists (select from pg_depend d where d.classid = 'pg_class'::regclass
                                  and d.objid = c.oid and d.deptype in ('a', 'i')) loop
        execute format('alter %%s %%I.%%I owner to %%I',
                       case item.relkind when 'S' then 'sequence' when 'v' then 'view'
                                         when 'm' then 'materialized view' else 'table' end,
                       item.nspname, item.relname, %(owner)s);
    end loop;
    if exists (select from pg_namespace where nspname = 'dw') then
        execute format('alter default privileges for role %%I in schema dw grant select on tables to %%I',
                       %(owner)s, %(bi)s);
    end if;
end
$$;
"""


def managed(settings: Settings | None = None) -> ManagedPostgres:
    return ManagedPostgres((settings or get_settings()).pg_dir)


def warehouse_logins(settings: Settings | None = None) -> tuple[str, str]:
    """(the mirror's DSN, the DSN that manages the BI login): `LAKEHOUSE_PG_DSN` for both, else the managed
    cluster's owner role and its superuser (the cluster started on demand)."""
    settings = settings or get_settings()
    if settings.pg_dsn is not None:
        return settings.pg_dsn.get_secret_value(), settings.pg_dsn.get_secret_value()
    server = managed(settings)
    return server.start(), server.admin_dsn


def warehouse_dsn(settings: Settings | None = None) -> str:
    """The warehouse DSN: `LAKEHOUSE_PG_DSN`, else the managed cluster's owner role (started on demand)."""
    return warehouse_logins(settings)[0]
