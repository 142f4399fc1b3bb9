"""Freshness and volume of the source groups from the landing ledger (no Spark), and the alerts they send through a
real local webhook: stale once until it recovers, recovered once, an anomalous delivery once; an unreachable webhook
never fails a check."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from lakehouse import alerts, cli, freshness
from lakehouse.cli import app
from lakehouse.landing import land, read_ledger
from tests.builders import WebhookReceiver, ledger

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
EXPORTS = ("students", "courses", "universities", "subjects", "sessions", "subscriptions", "student_follow_subject")
GROUPS = ("events", *EXPORTS)


def _daily(days: int, lines: int = 100, last: int | None = None) -> list[tuple[str, str, int, datetime]]:
    """`days` daily deliveries of every group landed at 06:00 from T0 - days; the last one's events hold `last`."""
    out = []
    for k in range(days):
        day = (T0 - timedelta(days=days - 1 - k)).date().isoformat()
        landed = T0 - timedelta(days=days - 1 - k)
        events = last if last is not None and k == days - 1 else lines
        out += [("events", day, events, landed), *((e, day, lines, landed) for e in EXPORTS)]
    return out


@pytest.fixture
def webhook(settings, monkeypatch):
    receiver = WebhookReceiver()
    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK", receiver.url)
    from lakehouse import config

    config.get_settings.cache_clear()
    yield receiver
    receiver.close()


def _settings():
    from lakehouse import config

    return config.get_settings()


def test_the_sla_is_a_duration_and_the_webhook_a_secret():
    from lakehouse.config import MASK, Settings

    settings = Settings(_env_file=None, freshness_sla="1h30m", alert_webhook="https://hooks.example/T0/B0/secret")
    assert settings.sla == timedelta(minutes=90) and settings.masked()["alert_webhook"] == MASK
    assert Settings(_env_file=None).sla == timedelta(hours=26) and Settings(_env_file=None).alert_webhook is None
    with pytest.raises(ValueError, match="'soon' is not a duration"):
        Settings(_env_file=None, freshness_sla="soon")


def test_fresh_and_stale_against_the_sla():
    manifests = [{"batch_id": 1, "files": [_entry("events", "2026-03-01", 10, T0)]}]
    at = {g.group: g for g in freshness.evaluate(manifests, T0 + timedelta(hours=25), timedelta(hours=26), 50)}
    assert not at["events"].stale and at["events"].age(T0 + timedelta(hours=25)) == timedelta(hours=25)
    assert at["students"].stale and at["students"].last_landed is None  # never delivered
    later = {g.group: g for g in freshness.evaluate(manifests, T0 + timedelta(hours=27), timedelta(hours=26), 50)}
    assert later["events"].stale


def _entry(group, delivery, lines, landed):
    return {
        "path": f"events/{delivery}/p.json",
        "kind": "events",
        "entity": None,
        "delivery": delivery,
        "as_of": f"{delivery}T00:00:00",
        "lines": lines,
        "landed_at": landed.isoformat(),
        "status": "new",
    }


@pytest.mark.parametrize(
    ("history", "last", "anomaly", "volume"),
    [
        ([100] * 7, 49, True, "anomaly"),
        ([100] * 7, 50, False, "ok"),
        ([100, 100, 100, 10_000, 5, 100, 100, 100], 40, True, "anomaly"),  # the median of the 7 before: 100
        ([100, 100], 1, False, "no baseline"),  # fewer than 3 earlier deliveries: no judgement yet
    ],
)
def test_a_delivery_under_half_the_median_of_the_last_seven_is_an_anomaly(history, last, anomaly, volume):
    sizes = [*history, last]
    manifests = [
        {"batch_id": k, "files": [_entry("events", f"2026-02-{k:02d}", n, T0)]} for k, n in enumerate(sizes, 1)
    ]
    (events,) = [g for g in freshness.evaluate(manifests, T0, timedelta(hours=26), 50) if g.group == "events"]
    assert (events.anomaly, events.volume, events.latest_lines) == (anomaly, volume, last)


def test_landing_counts_each_files_lines(settings):
    from pathlib import Path

    day = Path(settings.source_url) / "events" / "2026-03-01"
    day.mkdir(parents=True)
    (day / "a.json").write_text('{"at":"2026-03-01 01:00:00"}\n\n{"at":"2026-03-01 02:00:00"}')  # no final newline
    (day / "b.json").write_text('{"at":"2026-03-01 03:00:00"}\n')
    land(settings)
    assert sorted((e["path"], e["lines"]) for m in read_ledger(settings) for e in m["files"]) == [
        ("events/2026-03-01/a.json", 3),
        ("events/2026-03-01/b.json", 1),
    ]


def test_stale_is_alerted_once_until_it_recovers_and_recovery_once(settings, webhook):
    ledger(settings, _daily(3))
    fresh = freshness.check(_settings(), now=T0 + timedelta(hours=1))
    assert fresh.ok and not fresh.alerts and webhook.bodies == []
    for hours in (30, 31, 40):  # stale from the first of these checks on; said once
        report = freshness.check(_settings(), now=T0 + timedelta(hours=hours))
        assert not report.ok
    bodies = webhook.wait(8)
    assert sorted((b["kind"], b["group"]) for b in bodies) == sorted(("stale", g) for g in ("events", *EXPORTS))
    stale = next(b for b in bodies if b["group"] == "events")
    assert (
        stale["text"] == ("events is stale: its newest delivery (2026-03-02) landed 30 h 00 min ago, over the 26h SLA")
        and stale["delivery"] == "2026-03-02"
    )
    # another process checking (the CLI) does not say it again
    result = CliRunner().invoke(app, ["checks"])
    assert result.exit_code == 1 and "stale" in result.stdout and len(webhook.bodies) == 8
    # events deliver again: recovered once; the exports stay stale, unsaid
    ledger(settings, [("events", "2026-03-04", 100, T0 + timedelta(hours=47))])
    for hours in (48, 49):
        freshness.check(_settings(), now=T0 + timedelta(hours=hours))
    assert [(b["kind"], b["group"]) for b in webhook.wait(9)[8:]] == [("recovered", "events")]
    # events turn stale again: said again, once
    for hours in (48 + 27, 48 + 28):
        freshness.check(_settings(), now=T0 + timedelta(hours=hours))
    assert [(b["kind"], b["group"]) for b in webhook.wait(10)[9:]] == [("stale", "events")]


def test_an_anomalous_delivery_is_alerted_once(settings, webhook):
    ledger(settings, _daily(8, last=10))
    for minutes in (5, 20):
        report = freshness.check(_settings(), now=T0 + timedelta(minutes=minutes))
        assert not report.ok and [g.group for g in report.groups if g.anomaly] == ["events"]
    (body,) = webhook.wait(1)
    assert body == {
        "kind": "volume_anomaly",
        "text": "events delivery 2026-03-02 holds 10 lines, under 50% of the median of its last 7 deliveries (100)",
        "group": "events",
        "delivery": "2026-03-02",
    }


def test_checks_prints_a_table_and_exits_1_when_stale(settings, monkeypatch):
    now = datetime.now(UTC)
    ledger(settings, [("events", "2026-03-01", 10, now - timedelta(minutes=5))])
    monkeypatch.setattr(cli.console, "width", 200)  # whatever width the console found when it was made
    result = CliRunner().invoke(app, ["checks"])  # the exports were never delivered: stale
    assert result.exit_code == 1
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert "fresh" in rows["events"] and "5 min" in rows["events"] and "stale" in rows["students"]
    ledger(settings, [(e, "2026-03-01", 10, now - timedelta(minutes=1)) for e in EXPORTS])
    assert CliRunner().invoke(app, ["checks"]).exit_code == 0
    monkeypatch.setenv("LAKEHOUSE_FRESHNESS_SLA", "1s")
    from lakehouse import config

    config.get_settings.cache_clear()
    assert CliRunner().invoke(app, ["checks"]).exit_code == 1


def test_an_unreachable_webhook_never_fails_a_check(settings, monkeypatch, caplog):
    refusing = WebhookReceiver(status=503)
    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK", refusing.url)
    from lakehouse import config

    config.get_settings.cache_clear()
    try:
        later = T0 + timedelta(hours=29)
        ledger(settings, [("events", "2026-03-01", 10, T0), *((e, "2026-03-02", 10, later) for e in EXPORTS)])
        report = freshness.check(_settings(), now=T0 + timedelta(hours=30))  # events stale: one alert
        assert [a.kind for a in report.alerts] == ["stale"]
        assert len(refusing.bodies) == alerts.ATTEMPTS  # a bounded number of attempts
        assert "the alert webhook did not take the stale alert (HTTP 503)" in caplog.text
    finally:
        refusing.close()
    closed = refusing.url  # nothing listens there any more
    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK", closed)
    config.get_settings.cache_clear()
    assert alerts.send(_settings(), alerts.Alert("stale", "x", group="events")) is False


def test_the_alert_state_is_a_small_file_of_the_data_folder(settings, webhook):
    ledger(settings, [("events", "2026-03-01", 10, T0)])
    freshness.check(_settings(), now=T0 + timedelta(hours=30))
    state = json.loads((settings.data_dir / freshness.STATE_FILE).read_text())
    assert set(state["stale"]) == {"events", *EXPORTS} and state["volume"] == []


@pytest.mark.e2e
def test_the_checks_deployment_alerts_once_and_tells_prefect(settings, webhook):
    """The `checks` flow (the deployment's entrypoint, no parameters): a stale group does not fail the run, it is
    alerted once, and the alert is a Prefect event `lakehouse.stale` for Prefect's automations."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter
    from prefect.testing.utilities import prefect_test_harness

    from flows.checks import checks

    now = datetime.now(UTC)
    ledger(settings, [(g, "2026-03-01", 10, now - timedelta(hours=30 if g == "events" else 1)) for g in GROUPS])
    with prefect_test_harness(server_startup_timeout=120):
        state = checks(return_state=True)
        assert state.is_completed(), state.message
        assert [g.group for g in state.result().groups if g.stale] == ["events"]
        assert checks(return_state=True).is_completed()  # a second check: nothing new to say
        deadline, found = time.monotonic() + 60, []
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not found:
                page = client.read_events(filter=EventFilter(event=EventNameFilter(prefix=["lakehouse."])), limit=50)
                found = [(e.event, e.payload.get("group")) for e in page.events]
                time.sleep(0.5)
    assert found == [("lakehouse.stale", "events")]
    assert [(b["kind"], b["group"]) for b in webhook.bodies] == [("stale", "events")]


def test_a_run_failure_says_its_cause_once_in_the_fields_that_apply():
    from lakehouse.expectations import ExpectationFailed
    from lakehouse.reports import ExpectationResult

    held = ExpectationFailed("held back", "silver.page_views", "country_present", 3, 10, "run-1")
    try:
        try:
            raise held
        except ExpectationFailed as cause:
            raise RuntimeError("silver failed") from cause
    except RuntimeError as wrapped:
        alert = alerts.run_failed("full-pipeline", wrapped, "run-1", "http://ui/runs/flow-run/run-1")
    assert alert.payload() == {
        "kind": "expectation_failed",
        "text": "full-pipeline failed: expectation country_present on silver.page_views failed for 3 of 10 rows; "
        "nothing after it was published and the delivery stays pending",
        "table": "silver.page_views",
        "expectation": "country_present",
        "rows_failed": 3,
        "run_id": "run-1",
        "flow": "full-pipeline",
        "url": "http://ui/runs/flow-run/run-1",
    }
    other = alerts.run_failed("maintenance", ValueError("retention too short\nmore"), "run-2").payload()
    assert other == {
        "kind": "run_failed",
        "text": "maintenance failed: ValueError: retention too short",
        "run_id": "run-2",
        "flow": "maintenance",
    }
    found = ExpectationResult(
        "run-3", "2026-01-01T00:00:00+00:00", "gold.fact_page_view", "known", "warn", 50, 4, "warned"
    )
    assert alerts.warned(found, "full-pipeline").payload()["text"] == (
        "gold.fact_page_view: expectation known warned for 4 of 50 rows (kept)"
    )


def test_a_finished_run_alerts_each_warned_rule_and_each_table_that_drifted_from_gold(settings, webhook):
    from lakehouse.reports import ExpectationResult, LockReport, RunReport, StageReport, TableDrift

    warned = ExpectationResult(
        "r1", "2026-03-01T00:00:00+00:00", "silver.students", "state_code", "warn", 10, 2, "warned"
    )
    passed = ExpectationResult("r1", "2026-03-01T00:00:00+00:00", "silver.students", "other", "warn", 10, 0, "passed")
    drift = [
        TableDrift("dim_student", "dim_student_history", 4, 12, 11, "a", "b"),
        TableDrift("fact_session", "fact_session", 4, 30, 30, "c", "c"),
    ]
    run = RunReport(
        "full-pipeline",
        [StageReport("silver", expectations=[warned, passed]), StageReport("mirror", details={"drift": drift})],
        LockReport(),
    )
    found = alerts.of_run(run, "full-pipeline", "r1")
    assert [(a.kind, a.table) for a in found] == [
        ("expectation_warned", "silver.students"),
        ("warehouse_drift", "dw.dim_student"),
    ]
    assert "11 rows against 12" in found[1].text and "--full-refresh warehouse" in found[1].text
    for alert in found:
        alerts.send(_settings(), alert)
    assert [p["kind"] for p in webhook.wait(2)] == ["expectation_warned", "warehouse_drift"]
