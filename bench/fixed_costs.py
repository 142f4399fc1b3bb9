"""What a run pays before its data: Spark started after landing, Spark started in the background while landing runs
(`lakehouse run` alone), and a warm Spark Connect server (the deployments under `make up`).

Each round runs three fresh processes in turn on their own copy of one small lake, each timing land + bronze from its
start: `sequential` lands, then builds its local session (the former order); `overlapped` calls `warm_up` first, then
lands (what the flows do); `connect` lands and runs bronze on a Connect server the script started once, before the
rounds (its start is not timed: `make up` pays it once a day, not per run). A warm-up round is thrown away; medians.
Usage: python -m bench.fixed_costs [--events 20000] [--rounds 3] [--out bench/results/fixed_costs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import sys, time
started = time.perf_counter()
from lakehouse import bronze, landing
from lakehouse.config import Settings
from lakehouse.spark import build_session, get_spark, warm_up
variant, source, root, master = sys.argv[1:5]
settings = Settings(_env_file=None, source=source, lake=root + "/lake", data_dir=root + "/data", shuffle_partitions=2,
                    spark_master=master)
if variant == "overlapped":
    warm_up(settings)
landing.land(settings)
spark = build_session(settings) if variant != "overlapped" else get_spark(settings)
bronze.ingest(spark, settings, "bench")
print(round(time.perf_counter() - started, 3))
"""


def _connect_server(work: Path, token: str) -> tuple[subprocess.Popen[bytes], str]:
    from lakehouse.config import Settings
    from lakehouse.security import free_port
    from lakehouse.spark import start_connect_server

    port = free_port()
    settings = Settings(_env_file=None, data_dir=str(work / "connect"), shuffle_partitions=2)
    return start_connect_server(settings, port, token, work / "connect.log"), f"sc://localhost:{port}"


def measure(events: int, rounds: int) -> dict:
    from lakehouse.tools.generate import generate

    work = Path(tempfile.mkdtemp(prefix="bench-fixed-"))
    source = work / "source"
    generate(source, seed=7, students=max(200, events // 50), events=events, deliveries=1)
    token = secrets.token_urlsafe(24)
    server, url = _connect_server(work, token)
    masters = {"sequential": "local[2]", "overlapped": "local[2]", "connect": url}
    seconds: dict[str, list[float]] = {name: [] for name in masters}
    try:
        for round_ in range(rounds + 1):
            for name, master in masters.items():
                root = work / f"{name}-{round_}"
                done = subprocess.run(
                    [sys.executable, "-c", RUN, name, str(source), str(root), master],
                    capture_output=True,
                    text=True,
                    timeout=1800,
                    env={**os.environ, "SPARK_CONNECT_AUTHENTICATE_TOKEN": token},
                )
                if done.returncode:
                    raise RuntimeError(f"{name}: {done.stderr[-2000:]}")
                if round_:
                    seconds[name].append(float(done.stdout.split()[-1]))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "events": events,
        "rounds": rounds,
        "load_average": os.getloadavg(),
        "seconds": seconds,
        "median_s": medians,
        "vs_sequential": {name: round(m / medians["sequential"], 3) for name, m in medians.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fixed_costs.json"))
    args = parser.parse_args(argv)
    result = measure(args.events, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
