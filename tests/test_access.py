"""Least privilege and secrets: the managed PostgreSQL's roles and pg_hba, secret files, masked configuration,
where services may listen, local Spark on loopback."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from tests.builders import cli

BI_PASSWORD = "bi-Secret-4-tests"


def _connect(dsn: str, **changes):
    conn = psycopg2.connect(psycopg2.extensions.make_dsn(dsn, **changes))
    conn.autocommit = True
    return conn


def _one(conn, sql: str, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


# -- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture
def managed_settings(pg_server, monkeypatch):
    """Settings whose warehouse is the managed cluster of the test session (LAKEHOUSE_PG_DSN unset)."""
    from lakehouse import config

    monkeypatch.setenv("LAKEHOUSE_DATA_DIR", str(pg_server.root.parent))
    monkeypatch.delenv("LAKEHOUSE_PG_DSN", raising=False)
    monkeypatch.setenv("LAKEHOUSE_BI_PASSWORD", BI_PASSWORD)
    config.get_settings.cache_clear()
    yield config.get_settings()
    config.get_settings.cache_clear()


def test_managed_cluster_lives_beyond_a_0700_home(pg_server):
    """The test session's cluster belongs to a data folder under a mode-0700 root-owned folder, as a checkout in
    /root: when we are root, the server (user postgres) cannot reach that folder, so its data directory is elsewhere."""
    home = pg_server.root.parent.parent
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert pg_server.running()
    if os.geteuid() == 0:
        reach = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(home)])
        assert reach.returncode != 0, "the postgres user should not be able to enter the 0700 folder"
        assert not str(pg_server.cluster).startswith(str(home))
        assert stat.S_IMODE(pg_server.cluster.stat().st_mode) == 0o700
    for secret in ("superuser.secret", "owner.secret"):
        assert stat.S_IMODE((pg_server.root / secret).stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when we are root")
def test_a_cluster_made_under_the_data_folder_is_moved_where_its_server_can_reach_it(tmp_path):
    """An earlier version kept the data directory at <data>/postgres/cluster; start() moves it, keeping its data."""
    from lakehouse.pgserver import ManagedPostgres, find_bindir

    root = Path(tempfile.mkdtemp(prefix="lakehouse-legacy-", dir="/tmp"))
    root.chmod(0o755)
    legacy = root / "cluster"
    legacy.mkdir(mode=0o700)
    shutil.chown(legacy, "postgres", "postgres")
    (root / "superuser.secret").write_text("legacy-superuser-pw")
    pwfile = Path(tempfile.mkdtemp(dir="/tmp")) / "pw"
    pwfile.write_text("legacy-superuser-pw")
    shutil.chown(pwfile.parent, "postgres")
    shutil.chown(pwfile, "postgres")
    server = ManagedPostgres(root)
    try:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(find_bindir() / "initdb"),
                "-D",
                str(legacy),
                "-U",
                "lakehouse",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=True,
            capture_output=True,
            cwd="/",
        )
        with open(legacy / "postgresql.conf", "a") as conf:  # as the earlier version configured it
            conf.write("listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
        (legacy / "marker").write_text("kept")
        dsn = server.start()
        assert not legacy.exists() and (server.cluster / "marker").read_text() == "kept"
        with _connect(server.admin_dsn) as conn:
            assert _one(conn, "select current_user")[0] == "lakehouse"
        assert _one(_connect(dsn), "select current_user")[0] == "lakehouse_owner"
    finally:
        server.remove()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pwfile.parent, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the data directory lives outside the data folder only when we are root")
def test_a_deleted_data_folder_leaves_no_cluster_behind(tmp_path):
    """`rm -rf data` after `lakehouse pg stop` leaves the data directory in the postgres user's home: the next start
    at the same place replaces it instead of failing on the lost passwords; `remove` deletes it."""
    from lakehouse.pgserver import ManagedPostgres

    root = tmp_path / "data" / "postgres"
    server = ManagedPostgres(root)
    try:
        server.start()
        server.stop()
        (server.cluster / "left-behind").touch()  # an inode number could be reused by the new cluster; a file cannot
        shutil.rmtree(tmp_path / "data")
        dsn = ManagedPostgres(root).start()
        assert not (server.cluster / "left-behind").exists()
        assert _one(_connect(dsn), "select current_user") == ("lakehouse_owner",)
    finally:
        server.remove()
    assert not server.cluster.exists() and not server.logfile.exists()


def test_managed_warehouse_least_privilege(pg_server, managed_settings):
    """A warehouse made by an earlier version as the superuser is handed over to the owner role; the mirror then runs
    as that role (no superuser, no CREATEROLE); bi_user is read-only by default, limited, refused by every database but
    the warehouse's, and its password reaches the server only as a SCRAM verifier."""
    from lakehouse.pgserver import DATABASE, OWNER, warehouse_logins
    from lakehouse.warehouse import roles
    from lakehouse.warehouse.loads import LOADS
    from lakehouse.warehouse.migrations import migrate
    from lakehouse.warehouse.mirror import ArrowGold, mirror
    from tests.warehouse_data import sample_gold

    superuser = _connect(pg_server.admin_dsn, dbname="postgres")
    with superuser.cursor() as cur:  # the warehouse as an earlier version left it: objects owned by the superuser
        cur.execute(f"drop database if exists {DATABASE} with (force)")
        cur.execute(f"create database {DATABASE}")
    migrate(pg_server.admin_dsn)
    with superuser.cursor() as cur:  # every statement of the superuser sessions goes to the server log
        cur.execute(f"alter role lakehouse in database {DATABASE} set log_statement = 'all'")
    log_start = pg_server.logfile.stat().st_size
    try:
        dsn, roles_dsn = warehouse_logins(managed_settings)
        assert dsn == pg_server.dsn and roles_dsn == pg_server.admin_dsn
        report = mirror(managed_settings, ArrowGold(sample_gold()))
        assert len(report.details["applied"]) == len(LOADS)
    finally:
        with superuser.cursor() as cur:
            cur.execute(f"alter role lakehouse in database {DATABASE} reset log_statement")

    owner = _connect(pg_server.dsn)
    assert _one(
        owner,
        "select current_user, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls from pg_roles"
        " where rolname = current_user",
    ) == (OWNER, False, False, False, False)
    assert _one(owner, "select pg_get_userbyid(datdba) from pg_database where datname = current_database()") == (OWNER,)
    assert _one(
        owner,
        "select array_agg(distinct pg_get_userbyid(c.relowner)) from pg_class c join pg_namespace n"
        " on n.oid = c.relnamespace where n.nspname in ('dw', 'stage')",
    ) == ([OWNER],)
    with owner.cursor() as cur:
        cur.execute("create table dw.owner_made_later (x int)")  # bi_reader reads what the owner creates later
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("create role sneaky login")

    log = pg_server.logfile.read_bytes()[log_start:].decode(errors="replace")
    assert "alter role bi_user" in log.lower() and "SCRAM-SHA-256$" in log
    assert BI_PASSWORD not in log
    assert _one(superuser, "select rolpassword like 'SCRAM-SHA-256$%%' from pg_authid where rolname = 'bi_user'")[0]

    bi = _connect(pg_server.dsn, user="bi_user", password=BI_PASSWORD)
    assert _one(bi, "show default_transaction_read_only") == ("on",)
    assert _one(bi, "show statement_timeout") == (roles.BI_LOGIN_SETTINGS["statement_timeout"],)
    limit = _one(bi, "select rolconnlimit from pg_roles where rolname = current_user")
    assert limit == (roles.BI_CONNECTION_LIMIT,)
    assert _one(bi, "select count(*) from dw.owner_made_later") == (0,)
    assert _one(bi, "select count(*) from dw.dim_student")[0] > 0
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        bi.cursor().execute("insert into dw.owner_made_later values (1)")
    for database in ("postgres", "template1"):
        with pytest.raises(psycopg2.OperationalError, match="pg_hba.conf rejects"):
            _connect(pg_server.dsn, user="bi_user", password=BI_PASSWORD, dbname=database)
    bi.close()
    owner.close()
    superuser.close()


# -- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dsn, shown",
    [
        ("postgresql://u:hunter2@db:5432/dw", "postgresql://u:********@db:5432/dw"),
        ("postgresql://u:p%40ss%3Aw@db/dw?sslmode=require", "postgresql://u:********@db/dw?sslmode=require"),
        (
            "postgresql://u@db/dw?password=hunter2&application_name=x",
            "postgresql://u@db/dw?password=********&application_name=x",
        ),
        ("postgres://u:hunter2@h1:5432,h2:5433/dw", "postgres://u:********@h1:5432,h2:5433/dw"),
        ("host=db password=hunter2 user=u", "user=u password=******** host=db"),
        ("host=db password = 'hun ter2' user=u", "user=u password=******** host=db"),
        ("host=db password='it\\'s hunter2' dbname=dw", "password=******** dbname=dw host=db"),
        ("postgresql://u@db/dw", "postgresql://u@db/dw"),
        ("host=db password='unterminated hunter2", "(a DSN libpq cannot parse; hidden)"),
    ],
)
def test_dsn_passwords_are_masked_in_every_spelling(dsn, shown):
    from lakehouse.config import mask_dsn

    masked = mask_dsn(dsn)
    assert "hunter2" not in masked and "hun ter2" not in masked
    assert sorted(masked.split()) == sorted(shown.split()) if "=" in shown and "://" not in shown else masked == shown


def test_config_masks_secrets_and_secret_looking_spark_settings(tmp_path):
    env = {
        **os.environ,
        "LAKEHOUSE_DATA_DIR": str(tmp_path / "data"),
        "LAKEHOUSE_PG_DSN": "host=db user=u password='pg hunter2'",
        "LAKEHOUSE_ADMIN_PASSWORD": "admin-hunter2",
        "LAKEHOUSE_BI_PASSWORD": "bi-hunter2",
        "LAKEHOUSE_GCS_HMAC_SECRET": "hmac-hunter2",
        "LAKEHOUSE_SPARK_CONF": '{"spark.hadoop.fs.s3a.secret.key": "s3-hunter2", "spark.ssl.keyStorePassword":'
        ' "ks-hunter2", "spark.hadoop.fs.gs.auth.access.token": "tok-hunter2",'
        ' "spark.executor.memory": "8g"}',
    }
    shown = cli("config", env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout
    flat = "".join(shown.stdout.split())
    assert '"spark.executor.memory":"8g"' in flat and '"spark.hadoop.fs.s3a.secret.key":"********"' in flat
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_secret_files_are_private_from_their_first_byte(tmp_path):
    from lakehouse.security import secure_dir, write_secret

    path = write_secret(tmp_path / "a.secret", "one")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "one"
    with pytest.raises(FileExistsError):  # never through an existing file
        write_secret(path, "two")
    (tmp_path / "link.secret").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):  # nor through a link planted where the secret goes
        write_secret(tmp_path / "link.secret", "three")
    assert not (tmp_path / "elsewhere").exists()
    write_secret(path, "four", replace=True)
    assert path.read_text() == "four" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.secret", "link.secret"]

    loose = tmp_path / "data"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert stat.S_IMODE(secure_dir(loose).stat().st_mode) == 0o700
    assert stat.S_IMODE(secure_dir(tmp_path / "new" / "data").stat().st_mode) == 0o700


def test_generated_admin_password_is_stored_once_and_the_variable_wins(settings, monkeypatch):
    from lakehouse import config
    from lakehouse.security import admin_password, admin_password_file

    assert admin_password(settings) == (None, None)  # nothing configured, nothing made
    password, path = admin_password(settings, create=True)
    assert path == admin_password_file(settings) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(password) >= 24 and admin_password(settings, create=True) == (password, path)
    monkeypatch.setenv("LAKEHOUSE_ADMIN_PASSWORD", "chosen")
    config.get_settings.cache_clear()
    assert admin_password(config.get_settings()) == ("chosen", None)


def test_listening_beyond_loopback_needs_a_login():
    from lakehouse.security import BindRefused, check_bind, is_loopback

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert is_loopback(host)
        check_bind(host, login=False)
    for host in ("0.0.0.0", "::", "10.1.2.3", "lakehouse.example.com"):
        assert not is_loopback(host)
        with pytest.raises(BindRefused, match="LAKEHOUSE_ADMIN_PASSWORD"):
            check_bind(host, login=False)
        check_bind(host, login=True)


# -- local Spark --------------------------------------------------------------------------------


def test_local_spark_listens_on_loopback_only(spark):
    import psutil

    assert spark.conf.get("spark.driver.bindAddress") == "127.0.0.1"
    assert spark.conf.get("spark.driver.host") == "127.0.0.1"
    spark.range(10).count()  # the driver's RPC and block manager are up
    jvm = [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]
    assert jvm, "no Spark JVM found among this process's children"
    listening = [c.laddr for p in jvm for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(addr.ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for addr in listening), listening
