"""Declared expectations on real Spark, Delta and PostgreSQL, with a local webhook: each action's exact counts in
quality.expectation_results, dropped rows in quarantine with their reason and place, a bad expectations file refused
before any work, a failing rule that leaves every gold and dw table as it was and alerts once, the held-back delivery
processed after the rule is relaxed, and the trust panel showing each state."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import psycopg2
import pytest

from lakehouse import bronze, delta_log, gold, silver, tables, trust
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.delta import read_table
from lakehouse.landing import land, read_ledger
from lakehouse.warehouse.mirror import mirror
from tests.builders import WebhookReceiver, cli, new_database, srt

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

DAY1, DAY2 = "2017-11-16", "2017-11-17"
EVENTS1 = f"events/{DAY1}/part-0.json"
EVENTS2 = f"events/{DAY2}/part-0.json"


def event(at: str, page: str | None, student: str | None, country: str | None = "br") -> str:
    fields = {"at": at, "studentId_clientType": student, "country": country, "custom_4": "CoreUser"}
    if page is not None:
        fields["PageName"] = page
    return json.dumps(fields)


LINES1 = [
    event(f"{DAY1} 10:00:00", "/a", "1@Website"),
    event(f"{DAY1} 10:05:00", "/b", "2@Android"),
    event("2017-11-20 10:00:00", "/future", "1@Website"),  # after its delivery: dropped
    event(f"{DAY1} 10:10:00", None, "1@Website"),  # no page: dropped
    event(f"{DAY1} 10:15:00", "/c", "1@SmartTV"),  # an unknown client: warned
    event(f"{DAY1} 10:20:00", "/d", "999@Website"),  # a learner no export knows: warned in gold
    event(f"{DAY1} 10:25:00", "/e", None),  # anonymous
]
LINES2 = [
    event(f"{DAY2} 09:00:00", "/f", "1@Website"),
    event(f"{DAY2} 09:01:00", "/g", "2@Android", country=None),  # fails the strict rule below
    event(f"{DAY2} 09:02:00", "/h", "2@Android"),
]
STUDENTS = [
    {"Id": "1", "RegisteredDate": "2017-01-01 00:00:00.000", "State": "SP", "City": "Campinas"},
    {"Id": "2", "RegisteredDate": "2017-02-01 00:00:00.000", "State": "Rio de Janeiro", "City": "Niterói"},
]
SESSIONS = [{"StudentId": "1", "SessionStartTime": f"{DAY1} 10:00:00.000", "StudentClient": "Website"}]
PROJECT_RULES = (PROJECT_ROOT / "expectations.yaml").read_text()
STRICT = """
  - name: country_present
    table: silver.page_views
    expect: "country is not null"
    action: {action}
"""


def _put(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _dw(dsn: str, sql: str) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        found = cur.fetchall()
    conn.close()
    return found


@pytest.fixture(scope="module")
def lake(spark, pg_server, tmp_path_factory):
    """A lake after one run of the project's own expectations over the first delivery (land to dw)."""
    root = tmp_path_factory.mktemp("quality")
    dsn = new_database(pg_server)
    settings = Settings(
        _env_file=None,
        source=str(root / "source"),
        lake=str(root / "lake"),
        data_dir=root / "data",
        pg_dsn=dsn,
        spark_master="local[2]",
        shuffle_partitions=2,
    )
    _put(root / "source", EVENTS1, "\n".join(LINES1) + "\n")
    _put(root / "source", f"transactional/{DAY1}/students.json", json.dumps(STUDENTS))
    _put(root / "source", f"transactional/{DAY1}/sessions.json", json.dumps(SESSIONS))
    for entity in ("courses", "universities", "subjects", "subscriptions", "student_follow_subject"):
        _put(root / "source", f"transactional/{DAY1}/{entity}.json", "[]")  # every group delivers: all fresh
    land(settings)
    bronze.ingest(spark, settings, "r1")
    reports = {"silver": silver.refresh(spark, settings, "r1"), "gold": gold.refresh(spark, settings, "r1")}
    mirror(settings, dsn=dsn)
    return SimpleNamespace(settings=settings, root=root, dsn=dsn, reports=reports)


def _results(spark, settings, run_id: str) -> list[tuple]:
    rows = read_table(spark, "quality", "expectation_results", settings).where(f"run_id = '{run_id}'")
    return srt(
        tuple(r)
        for r in rows.select("table_name", "expectation", "action", "rows_checked", "rows_failed", "outcome").collect()
    )


def test_each_action_counts_exactly_and_dropped_rows_keep_their_place(spark, lake):
    s = lake.settings
    assert _results(spark, s, "r1") == srt(
        [
            ("silver.page_views", "event_not_after_delivery", "drop", 7, 1, "dropped"),
            ("silver.page_views", "page_name_present", "drop", 7, 1, "dropped"),
            ("silver.page_views", "known_client_type", "warn", 7, 1, "warned"),
            ("silver.students", "student_state_is_a_code", "warn", 2, 0, "passed"),
            ("silver.sessions", "session_start_readable", "fail", 1, 0, "passed"),
            ("gold.fact_page_view", "page_view_student_known", "warn", 5, 1, "warned"),
        ]
    )
    reported = [r for stage in lake.reports.values() for r in stage.expectations]
    assert srt((r.table_name, r.expectation, r.rows_failed, r.outcome) for r in reported) == srt(
        (t, e, f, o) for t, e, _, _, f, o in _results(spark, s, "r1")
    )
    quarantined = read_table(spark, "quarantine", "events", s).where("reason like 'expectation:%'")
    assert srt(
        tuple(r) for r in quarantined.select("reason", "source_file", "line_number", "raw", "run_id").collect()
    ) == [
        ("expectation:event_not_after_delivery", EVENTS1, 3, LINES1[2], "r1"),
        ("expectation:page_name_present", EVENTS1, 4, LINES1[3], "r1"),
    ]
    assert quarantined.where("landed_path like 'landing/events/%' and batch_id = 1").count() == 2
    assert lake.reports["silver"].quarantined == 2 and lake.reports["gold"].quarantined == 0  # in the run's summary
    views = read_table(spark, "silver", "page_views", s)
    kept = {(r.source_file, r.line_number) for r in views.select("source_file", "line_number").collect()}
    assert kept == {(EVENTS1, n) for n in (1, 2, 5, 6, 7)}  # warned rows are kept
    assert read_table(spark, "bronze", "events", s).count() == views.count() + quarantined.count()  # every line
    assert read_table(spark, "gold", "fact_page_view", s).count() == 5
    assert _dw(lake.dsn, "select sum(page_views) from dw.fact_page_view_daily") == [(5,)]


def test_the_trust_panel_shows_what_the_run_found(lake):
    from apps.dashboard import trust_headline

    found = trust.overview(lake.settings)
    events = next(x for x in found.sources if x.status.group == "events")
    assert not events.status.stale and (events.quarantined, events.rows) == (2, 7)
    rows = {r["table"]: r for r in found.table_rows()}
    assert rows["silver.page_views"]["expectations"] == "1 warned (1 row), 2 dropped (2 rows)"
    assert rows["gold.fact_page_view"]["expectations"] == "1 warned (1 row)"
    assert rows["gold.mart_daily_activity"]["expectations"] == "—"
    assert all(r["work"] == "up to date" and r["freshness"] == "fresh" for r in rows.values())
    said = trust_headline(found)
    assert "all 8 sources fresh (SLA 26h)" in said and "expectations: 2 passed, 2 warned, 2 dropped" in said


def _versions(settings: Settings, layer: str) -> dict[str, int | None]:
    return {t.name: delta_log.latest_version(settings.table_path(layer, t.name)) for t in tables.layer(layer)}


def test_a_failing_rule_holds_its_delivery_back_alerts_once_and_the_relaxed_rule_lets_it_through(spark, lake):
    s, root = lake.settings, lake.root
    _put(root / "source", EVENTS2, "\n".join(LINES2) + "\n")
    strict, bad = root / "strict.yaml", root / "bad.yaml"
    strict.write_text(PROJECT_RULES + STRICT.format(action="fail"))
    bad.write_text(PROJECT_RULES + STRICT.format(action="stop"))
    bad_line = bad.read_text().splitlines().index("    action: stop") + 1
    webhook = WebhookReceiver()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LAKEHOUSE_"))}
    env |= {
        "LAKEHOUSE_SOURCE": s.source_url,
        "LAKEHOUSE_LAKE": s.lake_url,
        "LAKEHOUSE_DATA_DIR": str(s.data_dir),
        "LAKEHOUSE_PG_DSN": lake.dsn,
        "LAKEHOUSE_SPARK_MASTER": "local[2]",
        "LAKEHOUSE_SHUFFLE_PARTITIONS": "2",
        "LAKEHOUSE_ALERT_WEBHOOK": webhook.url,
    }
    gold_before, silver_before = _versions(s, "gold"), _versions(s, "silver")
    dw_before = _dw(
        lake.dsn, "select (select count(*) from dw.load_audit), (select sum(page_views) from dw.fact_page_view_daily)"
    )
    try:
        # a bad file: refused in one line naming the rule, before anything lands; the run's failure is alerted
        refused = cli("run", env={**env, "LAKEHOUSE_EXPECTATIONS": str(bad)}, timeout=900)
        assert refused.returncode == 1, refused.stdout[-2000:]
        assert f"{bad}:{bad_line}: expectation country_present: unknown action 'stop'" in refused.stderr
        assert len(read_ledger(s)) == 1, "nothing was landed"
        (alert,) = webhook.wait(1)
        assert alert["kind"] == "run_failed" and "unknown action 'stop'" in alert["text"]

        # the strict rule fails: the run stops before silver.page_views is written, nothing later is published
        failed = cli("run", env={**env, "LAKEHOUSE_EXPECTATIONS": str(strict)}, timeout=1500)
        assert failed.returncode == 1, failed.stdout[-2000:]
        said = " ".join(failed.stderr.split())  # the one line, as the terminal wrapped it
        assert re.search(
            r"expectation country_present failed on silver\.page_views: 1 of 3 rows \(33\.3%, more than the 0% "
            r"allowed\); sample keys \(event_id\): [0-9a-f]{64}\.",
            said,
        ), failed.stderr
        assert len(read_ledger(s)) == 2 and read_table(spark, "bronze", "events", s).count() == 10  # landed, ingested
        assert _versions(s, "gold") == gold_before and _versions(s, "silver") == silver_before
        assert (
            _dw(
                lake.dsn,
                "select (select count(*) from dw.load_audit), (select sum(page_views) from dw.fact_page_view_daily)",
            )
            == dw_before
        )
        bodies = webhook.wait(2)
        assert len(bodies) == 2, bodies  # once
        alert = bodies[1]
        assert {k: alert[k] for k in ("kind", "table", "expectation", "rows_failed")} == {
            "kind": "expectation_failed",
            "table": "silver.page_views",
            "expectation": "country_present",
            "rows_failed": 1,
        }
        results = read_table(spark, "quality", "expectation_results", s).where(f"run_id = '{alert['run_id']}'")
        assert ("silver.page_views", 3, 1, "failed") in {
            (r.table_name, r.rows_checked, r.rows_failed, r.outcome)
            for r in results.where("expectation = 'country_present'").collect()
        }
        held = {r["table"]: r for r in trust.overview(s.model_copy(update={"expectations": strict})).table_rows()}
        assert held["silver.page_views"]["work"] == "pending" and held["gold.fact_page_view"]["work"] == "pending"
        assert held["silver.page_views"]["expectations"] == "3 passed, 1 failed (1 row)"
    finally:
        webhook.close()

    # the rule relaxed (the project's own file): the next run processes the held-back delivery; nothing is lost
    assert silver.pending(s)
    again = silver.refresh(spark, s, "r3")
    assert {(r.expectation, r.rows_checked) for r in again.expectations if r.table_name == "silver.page_views"} == {
        ("event_not_after_delivery", 3),
        ("page_name_present", 3),
        ("known_client_type", 3),
    }
    gold.refresh(spark, s, "r3")
    mirror(s, dsn=lake.dsn)
    assert read_table(spark, "silver", "page_views", s).count() == 8
    assert _dw(lake.dsn, "select sum(page_views) from dw.fact_page_view_daily") == [(8,)]
    assert all(r["work"] == "up to date" for r in trust.overview(s).table_rows())

    # a rebuild checks every row again, and quarantines no line twice
    silver.refresh(spark, s, "r4", full_refresh=True)
    assert read_table(spark, "quarantine", "events", s).where("reason like 'expectation:%'").count() == 2
    assert read_table(spark, "silver", "page_views", s).count() == 8
