"""The rest of the privacy audit: secrets never on a command line, no symbolic link followed where the code writes as
root or opens a checked file, text from data shown as text, an oversized export costing no disk, a full disk failing
one file, a local lake kept private, and the admin login sent only to the platform that is ours."""

from __future__ import annotations

import errno
import http.server
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.security import open_beneath, secure_data_dir
from lakehouse.sources import LocalSource, SourceError, open_source


def test_a_local_session_gets_its_settings_from_a_private_file_not_its_command_line(tmp_path):
    secret = "not-on-the-command-line-7f3a"
    script = (
        "import psutil, sys\n"
        "from lakehouse.config import get_settings\nfrom lakehouse.spark import get_spark\n"
        "spark = get_spark(get_settings())\nspark.range(1).count()\n"
        "jvm = [p for p in psutil.Process().children(recursive=True) if 'java' in p.name()]\n"
        "print(' '.join(' '.join(p.cmdline()) for p in jvm))\n"
        "print(spark.conf.get('spark.hadoop.fs.gs.auth.client.secret'))\n"
    )
    env = {
        **os.environ,
        "LAKEHOUSE_DATA_DIR": str(tmp_path / "data"),
        "LAKEHOUSE_SPARK_MASTER": "local[1]",
        "LAKEHOUSE_SPARK_DRIVER_MEMORY": "1g",
        "LAKEHOUSE_SPARK_CONF": json.dumps({"spark.hadoop.fs.gs.auth.client.secret": secret}),
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    command, seen = done.stdout.splitlines()[-2:]
    assert "java" in command and secret not in command and "spark.hadoop" not in command
    assert seen == secret  # the session has it all the same
    # the properties file is gone once the JVM has read it; the scratch folder of the session goes at its exit
    assert not list((tmp_path / "data" / "spark-scratch").rglob("*.conf"))


def test_files_are_opened_with_no_link_followed_below_their_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f.json").write_text("ok")
    (tmp_path / "outside.json").write_text("secret")
    assert os.read(open_beneath(tmp_path, "real/f.json"), 10) == b"ok"
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "g.json").symlink_to(tmp_path / "outside.json")
    for relative in ("link/f.json", "real/g.json"):
        with pytest.raises(OSError) as raised:
            open_beneath(tmp_path, relative)
        assert raised.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_a_source_file_swapped_for_a_link_after_its_check_is_refused(tmp_path):
    root = tmp_path / "source"
    delivery = root / "transactional" / "2017-11-16"
    delivery.mkdir(parents=True)
    (delivery / "students.json").write_text("[]")
    (tmp_path / "outside.json").write_text('[{"Id": "secret"}]')
    source = open_source(str(root))
    assert isinstance(source, LocalSource)
    (found,) = list(source.list_files())
    assert source.open(found).read() == b"[]"
    (delivery / "students.json").unlink()
    (delivery / "students.json").symlink_to(tmp_path / "outside.json")  # after the listing's check
    with pytest.raises(SourceError, match="outside the source folder|changed into a link"):
        source.open(found)


def test_the_managed_cluster_never_writes_through_a_link(pg_server, tmp_path):
    from lakehouse.pgserver import ManagedPostgres

    server = pg_server
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    hba = server.cluster / "pg_hba.conf"
    saved = hba.read_text()
    hba.unlink()
    hba.symlink_to(victim)
    try:
        with pytest.raises(OSError):
            ManagedPostgres(server.root)._write_hba()
        assert victim.read_text() == "untouched"
    finally:
        hba.unlink()
        hba.write_text(saved)
        server._chown(hba)


def test_text_from_data_is_shown_as_text(settings):
    from lakehouse.cli import app, escape_text

    assert escape_text("\x1b[31mred [bold]x[/]\n") == "\\x1b[31mred \\[bold]x\\[/]\\n"
    done = CliRunner().invoke(app, ["tables", "gold.\x1b[2J[bold]nope"])
    assert done.exit_code == 1 and "\x1b" not in done.output and "[bold]nope" in done.output


def test_an_oversized_export_costs_no_disk_and_a_full_disk_fails_one_file(settings, monkeypatch):
    from lakehouse import landing
    from lakehouse.landing import land, read_ledger

    source = Path(settings.source_url)
    delivery = source / "transactional" / "2017-11-16"
    delivery.mkdir(parents=True)
    (delivery / "students.json").write_text("[" + " " * 4096 + "]")
    (delivery / "courses.json").write_text('[{"Id": 1, "Name": "Direito"}]')
    small = settings.model_copy(update={"max_file_bytes": 1024})
    report = land(small)
    (entry,) = [e for e in read_ledger(small)[0]["files"] if e["entity"] == "students"]
    assert entry["file_reason"] == "file_too_large" and entry["sha256"] and entry["head"].startswith("[")
    assert not (Path(small.lake_url) / entry["landed_path"]).exists()  # its content was never kept
    assert report.files == 2
    (delivery / "sessions.json").write_text("[]")
    real_copy = landing._copy_hashing

    def disk_full(source, f, fs, tmp, *args):  # the lake's disk, not the code under test, is faked
        if f.entity == "sessions":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(source, f, fs, tmp, *args)

    monkeypatch.setattr(landing, "_copy_hashing", disk_full)
    report = land(small)
    assert report.files == 0 and "no space left" in report.details["not_landed_files"][0]["why"]
    monkeypatch.setattr(landing, "_copy_hashing", real_copy)
    assert land(small).files == 1  # the next run with room lands it


def test_a_local_lake_outside_the_data_folder_is_made_private(tmp_path):
    lake = tmp_path / "elsewhere" / "lake"
    lake.mkdir(parents=True, mode=0o755)
    secure_data_dir(Settings(data_dir=str(tmp_path / "data"), lake=str(lake), _env_file=None))
    assert stat.S_IMODE(lake.stat().st_mode) == 0o700


def test_the_admin_login_goes_only_to_the_platform_that_is_ours(tmp_path):
    from lakehouse.platform import client_env, running_platform
    from lakehouse.prefect_server import prefect_home

    heard: list[str | None] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            heard.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(data_dir=str(tmp_path / "data"), admin_password="pw", engine_idle="0", _env_file=None)
        home = prefect_home(settings)
        home.mkdir(parents=True)
        # a state file naming this process (alive, but no `lakehouse up`) and a port someone else listens on
        me = psutil.Process()
        state = {"pid": me.pid, "started": me.create_time(), "api_url": f"http://127.0.0.1:{server.server_port}/api"}
        (home / "up.json").write_text(json.dumps({**state, "ui_url": "http://x"}))
        assert running_platform(settings) is None
        env = client_env(settings)
        assert env.get("PREFECT_API_URL") is None  # a temporary server of its own instead
        assert heard == []
    finally:
        server.shutdown()
