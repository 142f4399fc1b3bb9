"""The warm engines of a data folder: a Spark Connect server and a Prefect server that `lakehouse run`, `lakehouse
erase` and the flows they run reuse, instead of starting a JVM and a temporary Prefect server at every command. Each
is started on first use in the background (`lakehouse engine serve <kind>`, its own process group), listens on
loopback behind a token or a login kept in 0600 files, takes its settings from a 0600 properties file as under
`make up`, and stops after LAKEHOUSE_ENGINE_IDLE without use. One that crashed, hangs, or serves other settings is
stopped and replaced; none is ever waited on past a bound."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from lakehouse.config import PROJECT_ROOT, Settings, get_settings
from lakehouse.prefect_server import auth_env, home_env
from lakehouse.security import ADMIN_USER, free_port, secure_dir, wait_listening, write_secret
from lakehouse.spark import SCRATCH, connect_server_command, jvm_environment, session_conf

KINDS = ("spark", "prefect")
FOLDER = "engine"
START_TIMEOUT = 300  # seconds a new engine may take to listen
PROBE_TIMEOUT = 60  # seconds a running engine may take to answer a probe before it is deemed hung


@dataclass
class Engine:
    """A running engine, as its supervisor recorded it."""

    kind: str
    pid: int  # the supervisor
    started: float  # the supervisor's start time (a reused pid is not it)
    server: int  # the server's pid
    port: int
    fingerprint: str  # of the settings it serves

    @property
    def url(self) -> str:
        return f"sc://localhost:{self.port}" if self.kind == "spark" else f"http://127.0.0.1:{self.port}/api"


def folder(settings: Settings) -> Path:
    return secure_dir(Path(settings.data_dir).resolve() / FOLDER)


def _path(settings: Settings, kind: str, suffix: str) -> Path:
    return folder(settings) / f"{kind}.{suffix}"


def secret(settings: Settings, kind: str) -> str:
    """The engine's token (Spark Connect) or login password (Prefect), created once, mode 0600."""
    path = _path(settings, kind, "secret")
    with contextlib.suppress(FileExistsError):
        write_secret(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def fingerprint(settings: Settings, kind: str) -> str:
    """What an engine must have been started with to serve these settings."""
    conf = session_conf(settings) if kind == "spark" else {"data_dir": str(Path(settings.data_dir).resolve())}
    return hashlib.sha256(json.dumps(conf, sort_keys=True).encode()).hexdigest()[:16]


def read(settings: Settings, kind: str) -> Engine | None:
    """The engine recorded for this data folder, if its supervisor is still the process that recorded it."""
    try:
        engine = Engine(**json.loads(_path(settings, kind, "json").read_text()))
        if abs(psutil.Process(engine.pid).create_time() - engine.started) > 1:
            return None
    except (OSError, ValueError, TypeError, psutil.Error):
        return None
    return engine


def _listening(engine: Engine) -> bool:
    try:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == engine.port
            for c in psutil.Process(engine.server).net_connections("tcp")
        )
    except psutil.Error:
        return False


def _answers(settings: Settings, engine: Engine) -> bool:
    """Whether the engine answers a small request within PROBE_TIMEOUT (a hung server does not)."""
    if engine.kind == "prefect":
        try:
            return httpx.get(f"{engine.url}/health", timeout=PROBE_TIMEOUT).status_code == 200
        except httpx.HTTPError:
            return False
    answered: list[bool] = []

    def probe() -> None:
        from pyspark.sql.connect.session import SparkSession as RemoteSession

        os.environ["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = secret(settings, "spark")
        session = RemoteSession.builder.remote(engine.url).create()
        try:
            answered.append(session.sql("select 1").collect()[0][0] == 1)
        finally:
            session.stop()

    thread = threading.Thread(target=probe, daemon=True, name="engine-probe")
    thread.start()
    thread.join(PROBE_TIMEOUT)
    return bool(answered and answered[0])


def stop(settings: Settings, kind: str, grace: float = 20) -> bool:
    """Stop the data folder's engine of `kind` (its supervisor, then whatever is left of the server); whether one
    ran."""
    engine = read(settings, kind)
    if engine is None:
        _path(settings, kind, "json").unlink(missing_ok=True)
        return False
    for pid, sig in ((engine.pid, signal.SIGTERM), (engine.server, signal.SIGTERM)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
    _, alive = psutil.wait_procs([p for p in _processes(engine)], timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _path(settings, kind, "json").unlink(missing_ok=True)
    return True


def _processes(engine: Engine) -> list[psutil.Process]:
    found = []
    for pid in (engine.pid, engine.server):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            found += [proc, *proc.children(recursive=True)]
    return found


@contextlib.contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def in_use(settings: Settings, kind: str) -> Iterator[None]:
    """Hold the engine while a command uses it: an idle engine stops only when no command holds it."""
    path = _path(settings, kind, "use")
    with _locked(path, fcntl.LOCK_SH):
        path.touch()
        try:
            yield
        finally:
            path.touch()


@contextlib.contextmanager
def holding(settings: Settings) -> Iterator[None]:
    """Hold both engines of the data folder while a command runs (a no-op for one that does not run)."""
    with in_use(settings, "spark"), in_use(settings, "prefect"):
        yield


def ensure(settings: Settings, kind: str) -> Engine:
    """A running engine of `kind` for these settings: the recorded one when it answers and serves these settings,
    else a new one (the old stopped first). RuntimeError, in one line, when a new one does not start."""
    with _locked(_path(settings, kind, "start"), fcntl.LOCK_EX):
        engine = read(settings, kind)
        wanted = fingerprint(settings, kind)
        if engine and engine.fingerprint == wanted and _listening(engine) and _answers(settings, engine):
            return engine
        if engine is not None or _path(settings, kind, "json").exists():
            stop(settings, kind)  # crashed, hung, or started for other settings
        log = Path(settings.data_dir) / "logs" / f"engine-{kind}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lakehouse.engine", "serve", kind],
                cwd=PROJECT_ROOT,
                env={**os.environ, "LAKEHOUSE_DATA_DIR": str(Path(settings.data_dir).resolve())},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            engine = read(settings, kind)
            if engine is not None and _listening(engine):
                return engine
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        proc.kill()
        raise RuntimeError(f"the {kind} engine did not start; its log: {log}")


def client_env(settings: Settings, kind: str, engine: Engine) -> dict[str, str]:
    """Environment that points this project's commands at the engine."""
    if kind == "spark":
        return {"LAKEHOUSE_SPARK_MASTER": engine.url, "SPARK_CONNECT_AUTHENTICATE_TOKEN": secret(settings, kind)}
    return {
        **home_env(settings),
        "PREFECT_API_URL": engine.url,
        "PREFECT_API_AUTH_STRING": f"{ADMIN_USER}:{secret(settings, kind)}",
    }


# -- the supervisor: `python -m lakehouse.engine serve <kind>` --------------------------------------------------------


def idle_for(settings: Settings, kind: str) -> float:
    """Seconds since a command last held the engine."""
    path = _path(settings, kind, "use")
    return time.time() - (path.stat().st_mtime if path.exists() else 0)


def _start_server(settings: Settings, kind: str, port: int) -> subprocess.Popen[bytes]:
    log = Path(settings.data_dir) / "logs" / f"engine-{kind}-server.log"
    if kind == "spark":
        env = {**os.environ, **jvm_environment(), "SPARK_CONNECT_AUTHENTICATE_TOKEN": secret(settings, kind)}
        command = connect_server_command(settings, port)
    else:
        env = {**os.environ, **home_env(settings), **auth_env(f"{ADMIN_USER}:{secret(settings, kind)}")}
        env.pop("PREFECT_API_URL", None)
        command = [sys.executable, "-m", "lakehouse.prefect_server", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_listening(port, proc, START_TIMEOUT, f"the {kind} engine (log: {log})")
    return proc


def serve(kind: str, idle: float, poll: float = 1.0) -> int:
    """Run the engine of `kind` for the data folder of this process's settings until it is idle for `idle` seconds
    with no command holding it, or stopped, or its server exits."""
    settings = get_settings()
    port = free_port()
    server = _start_server(settings, kind, port)
    me = psutil.Process()
    engine = Engine(kind, me.pid, me.create_time(), server.pid, port, fingerprint(settings, kind))
    state = _path(settings, kind, "json")
    write_secret(state, json.dumps(asdict(engine)), replace=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    _path(settings, kind, "use").touch()
    try:
        while not stopping.wait(poll) and server.poll() is None:
            if idle_for(settings, kind) > idle:
                with open(_path(settings, kind, "use"), "a+") as handle:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no command holds it
                    except BlockingIOError:
                        continue
                    state.unlink(missing_ok=True)  # commands start a new one from here on
                    break
    finally:
        recorded = read(settings, kind)
        if recorded is not None and recorded.pid == me.pid:
            state.unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(Path(settings.data_dir).resolve() / SCRATCH / f"connect-{port}", ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="run a warm engine of this data folder (started by commands)")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("kind", choices=KINDS)
    args = parser.parse_args(argv)
    return serve(args.kind, get_settings().engine_idle_seconds)


if __name__ == "__main__":
    sys.exit(main())
