"""Synthetic source generator: layout, determinism, and every quirk docs/source-data.md lists, read back from the files."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tracemalloc
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lakehouse.tools.generate import generate

SMALL = dict(seed=7, students=50, events=2000, deliveries=3)
DELIVERIES = ["2017-11-16", "2017-11-17", "2017-11-18T06:00:00"]
ENTITIES = ["courses", "sessions", "student_follow_subject", "students", "subjects", "subscriptions", "universities"]
CLIENTS = {"Website", "Webapp", "Android", "iOS"}
STATE_NAMES = {
    "São Paulo": "SP",
    "Rio de Janeiro": "RJ",
    "Minas Gerais": "MG",
    "Rio Grande do Sul": "RS",
    "Paraná": "PR",
    "Bahia": "BA",
    "Santa Catarina": "SC",
    "Pernambuco": "PE",
    "Ceará": "CE",
    "Goiás": "GO",
    "Distrito Federal": "DF",
    "Espírito Santo": "ES",
    "Pará": "PA",
    "Amazonas": "AM",
    "Maranhão": "MA",
    "Paraíba": "PB",
    "Rio Grande do Norte": "RN",
    "Mato Grosso": "MT",
    "Mato Grosso do Sul": "MS",
    "Alagoas": "AL",
    "Piauí": "PI",
    "Sergipe": "SE",
    "Rondônia": "RO",
    "Tocantins": "TO",
    "Acre": "AC",
    "Amapá": "AP",
    "Roraima": "RR",
}
# fmt: off
EVENT_FIELDS = {
    "at", "browser", "carrier", "city_name", "clv_total", "country", "custom_1", "custom_2", "custom_3", "custom_4",
    "device_new", "first-accessed-page", "install_uuid", "language", "library_ver", "marketing_campaign",
    "marketing_medium", "marketing_source", "model", "name", "nth", "os_ver", "platform", "region", "session_uuid",
    "studentId_clientType", "type", "user_type", "uuid",
}
# fmt: on
SPACED = {"Page Name", "Page Category", "Page Category 1", "Page Category 2", "Page Category 3", "Last Accessed Url"}
CAMEL = {"PageName", "PageCategory", "PageCategory1", "PageCategory2", "PageCategory3", "LastAccessedUrl"}
STUDENT_CLIENT = re.compile(r"^(\d+)@(Website|Webapp|Android|iOS)$")


# ---------------------------------------------------------------------------------------------- helpers


def parse_at(value) -> datetime | None:
    """Reference reader of `at`: space, glued or ISO 8601; naive is UTC."""
    if not isinstance(value, str):
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    if "T" in value:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return None


def at_style(value: str) -> str:
    if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", value):
        return "space"
    if re.fullmatch(r"\d{4}-\d\d-\d\d\d\d:\d\d:\d\d", value):
        return "glued"
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value):
        return "iso_z"
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", value):
        return "iso_offset"
    return "other"


def tx(root: Path, delivery: str, entity: str) -> list:
    return json.loads((root / "transactional" / delivery / f"{entity}.json").read_text(encoding="utf-8"))


def event_files(root: Path, delivery: str) -> list[Path]:
    return sorted((root / "events" / delivery).glob("*.json"))


def raw_lines(path: Path):
    """(line_number, text, crlf) for every line of a JSON Lines file."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    for n, raw in enumerate(data[:-1].split(b"\n"), start=1):
        crlf = raw.endswith(b"\r")
        yield n, (raw[:-1] if crlf else raw).decode("utf-8"), crlf


def classify(text: str):
    """(kind, parsed) with kind one of valid, blank, not_json, truncated_json, json_array, json_scalar, missing_at, bad_at."""
    if not text.strip():
        return "blank", None
    try:
        obj = json.loads(text)
    except ValueError:
        return ("truncated_json" if text.startswith('{"at"') else "not_json"), None
    if isinstance(obj, list):
        return "json_array", obj
    if not isinstance(obj, dict):
        return "json_scalar", obj
    if obj.get("at") is None:
        return "missing_at", obj
    if parse_at(obj["at"]) is None:
        return "bad_at", obj
    return "valid", obj


def valid_events(root: Path, delivery: str):
    """(file, line, event) for every valid event line of a delivery."""
    for f in event_files(root, delivery):
        for _, text, _ in raw_lines(f):
            kind, obj = classify(text)
            if kind == "valid":
                yield f, text, obj


def norm_int(value):
    return int(value) if value is not None else None


def canon(record: dict) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def window_start(delivery: str) -> datetime:
    day = datetime.fromisoformat(delivery[:10]).replace(tzinfo=UTC)
    return datetime(2017, 11, 1, tzinfo=UTC) if delivery == DELIVERIES[0] else day - timedelta(days=1)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    return root, generate(root, **SMALL)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    root = tmp_path_factory.mktemp("default")
    return root, generate(root)


# ---------------------------------------------------------------------------------------------- layout and determinism


def test_layout(small):
    root, summary = small
    assert summary["deliveries"] == DELIVERIES
    assert sorted(p.name for p in (root / "transactional").iterdir()) == DELIVERIES
    assert sorted(p.name for p in (root / "events").iterdir()) == DELIVERIES
    for d in DELIVERIES:
        assert sorted(p.name for p in (root / "transactional" / d).iterdir()) == [f"{e}.json" for e in ENTITIES]
        for e in ENTITIES:
            rows = tx(root, d, e)
            assert isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)
            assert summary["transactional"][d][e] == len(rows)
        parts = [p.name for p in (root / "events" / d).iterdir()]
        assert sorted(parts) == [f"part-{i:05d}.json" for i in range(4)] == summary["events_by_delivery"][d]["files"]
        lines = sum(1 for f in event_files(root, d) for _ in raw_lines(f))
        assert lines == summary["events_by_delivery"][d]["lines"]
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]


def test_same_arguments_same_bytes(small, tmp_path):
    root, _ = small
    again = tmp_path / "again"
    generate(again, **SMALL)
    assert tree_bytes(again) == tree_bytes(root)
    generate(again, **SMALL)  # overwriting an existing output
    assert tree_bytes(again) == tree_bytes(root)

    other = tmp_path / "other"
    generate(other, **{**SMALL, "seed": 8})
    a, b = tree_bytes(root), tree_bytes(other)
    assert a.keys() == b.keys()
    assert a["transactional/2017-11-16/students.json"] != b["transactional/2017-11-16/students.json"]
    assert a["events/2017-11-16/part-00000.json"] != b["events/2017-11-16/part-00000.json"]


def test_deliveries_and_sizes_follow_arguments(tmp_path):
    summary = generate(tmp_path, seed=1, students=30, events=500, deliveries=5)
    assert summary["deliveries"] == ["2017-11-16", "2017-11-17", "2017-11-18", "2017-11-19", "2017-11-20T06:00:00"]
    assert summary["totals"]["events"] == 500
    assert len(tx(tmp_path, "2017-11-16", "students")) >= 30


# ---------------------------------------------------------------------------------------------- transactional


def test_transactional_shapes(small):
    root, _ = small
    ts3 = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
    ts4 = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{4}$")
    int_like = lambda v: isinstance(v, int) or (isinstance(v, str) and v.isdigit())  # noqa: E731
    for d in DELIVERIES:
        for s in tx(root, d, "students"):
            assert set(s) <= {"Id", "RegisteredDate", "State", "City", "UniversityId", "CourseId", "SignupSource"}
            assert isinstance(s["Id"], str) and s["Id"].isdigit()
            assert ts3.match(s["RegisteredDate"])
            assert s["State"] is None or s["State"] in STATE_NAMES or s["State"] in STATE_NAMES.values()
            assert int_like(s["UniversityId"]) and int_like(s["CourseId"])
            assert s["SignupSource"] in (None, "Facebook", "Google", "Email", "Other", "Twitter")
        for e in ("courses", "universities", "subjects"):
            for r in tx(root, d, e):
                assert set(r) == {"Id", "Name"} and int_like(r["Id"]) and isinstance(r["Name"], str)
        for r in tx(root, d, "sessions"):
            assert set(r) == {"StudentId", "SessionStartTime", "StudentClient"}
            assert isinstance(r["StudentId"], str) and ts3.match(r["SessionStartTime"])
            assert r["StudentClient"] in CLIENTS | {None}
        for r in tx(root, d, "subscriptions"):
            assert {"StudentId", "PaymentDate"} <= set(r) <= {"StudentId", "PaymentDate", "PlanType"}
            assert ts3.match(r["PaymentDate"]) and r.get("PlanType") in (
                None,
                "Mensal",
                "Anual",
                "Semestral",
                "Trimestral",
            )
        for r in tx(root, d, "student_follow_subject"):
            assert set(r) == {"StudentId", "SubjectId", "FollowDate"} and int_like(r["SubjectId"])
            assert r["FollowDate"] is None or ts4.match(r["FollowDate"])


def test_transactional_quirks(small):
    root, summary = small
    for d in DELIVERIES:
        students = tx(root, d, "students")
        assert any("City" not in s for s in students)
        assert any(s["State"] is None for s in students)
        assert any(s["SignupSource"] is None for s in students)
        assert any(isinstance(s["UniversityId"], str) for s in students)
        assert any(isinstance(s["CourseId"], str) for s in students)
        assert any(isinstance(c["Id"], str) for c in tx(root, d, "courses"))
        follows = tx(root, d, "student_follow_subject")
        assert any(isinstance(f["SubjectId"], str) for f in follows)
        assert any(f["FollowDate"] is None for f in follows)
        assert any(s["StudentClient"] is None for s in tx(root, d, "sessions"))
        assert any("PlanType" not in s for s in tx(root, d, "subscriptions"))
        for e in ("students", "sessions", "subscriptions", "student_follow_subject"):
            counts = Counter(canon(r) for r in tx(root, d, e))
            repeated = sum(c - 1 for c in counts.values())
            assert repeated >= 1 and repeated == summary["transactional_duplicates"][d][e]


def test_state_skew_and_names(default):
    root, _ = default
    students = tx(root, DELIVERIES[-1], "students")
    states = Counter(STATE_NAMES.get(s["State"], s["State"]) for s in students if s["State"])
    assert [s for s, _ in states.most_common(3)] == ["SP", "RJ", "MG"]
    assert any(s["State"] in STATE_NAMES for s in students)  # a few states spelled out


def test_changes_between_deliveries(small):
    root, summary = small
    by = {d: {s["Id"]: s for s in tx(root, d, "students")} for d in DELIVERIES}
    d0, d1, d2 = (by[d] for d in DELIVERIES)
    moved = [i for i in d0.keys() & d1.keys() if "City" in d0[i] and "City" in d1[i] and d0[i]["City"] != d1[i]["City"]]
    assert moved
    code = lambda s: STATE_NAMES.get(s["State"], s["State"])  # noqa: E731
    assert any(d0[i]["State"] and d1[i]["State"] and code(d0[i]) != code(d1[i]) for i in moved)
    assert any(norm_int(d0[i]["CourseId"]) != norm_int(d1[i]["CourseId"]) for i in d0.keys() & d1.keys())
    returning = sorted((d0.keys() & d2.keys()) - d1.keys())
    assert returning and returning == summary["changes"][DELIVERIES[1]]["absent"]
    assert all(d0[i] == d2[i] for i in returning)
    assert d1.keys() - d0.keys() and d2.keys() - d1.keys() - d0.keys()  # new students every delivery
    assert d0.keys() - d1.keys() - d2.keys()  # deleted for good
    for d in DELIVERIES[1:]:
        new = set(summary["changes"][d]["new_students"])
        assert new and all(by[d][i]["RegisteredDate"] >= "2017-11-16" for i in new)

    courses = [{norm_int(c["Id"]): c["Name"] for c in tx(root, d, "courses")} for d in DELIVERIES]
    renamed = [i for i in courses[0] if courses[0][i] != courses[1][i]]
    assert len(renamed) == 1 and courses[1][renamed[0]] == courses[2][renamed[0]]


@pytest.mark.parametrize("entity", ["sessions", "subscriptions", "student_follow_subject"])
def test_facts_grow_with_each_export(small, entity):
    """Rule: export k holds every row created up to k whose student is in students export k."""
    root, _ = small
    students = {d: {s["Id"] for s in tx(root, d, "students")} for d in DELIVERIES}
    rows = {d: tx(root, d, entity) for d in DELIVERIES}
    for d in DELIVERIES:
        assert all(r["StudentId"] in students[d] for r in rows[d])
    for prev, nxt in zip(DELIVERIES, DELIVERIES[1:]):
        later = {canon(r) for r in rows[nxt]}
        kept = {canon(r) for r in rows[prev] if r["StudentId"] in students[nxt]}
        assert kept <= later
        assert later - {canon(r) for r in rows[prev]}  # new rows each delivery
    returning = (students[DELIVERIES[0]] & students[DELIVERIES[2]]) - students[DELIVERIES[1]]
    back = [canon(r) for r in rows[DELIVERIES[0]] if r["StudentId"] in returning]
    assert set(back) <= {canon(r) for r in rows[DELIVERIES[2]]}


# ---------------------------------------------------------------------------------------------- events


def test_event_fields_spellings_and_formats(small):
    root, _ = small
    keys, styles, users, spellings = set(), Counter(), Counter(), Counter()
    for d in DELIVERIES:
        for _, _, e in valid_events(root, d):
            keys |= e.keys()
            assert 24 <= len(e) <= 35
            assert e["name"] == "PageView" and e["type"] == "e"
            styles[at_style(e["at"])] += 1
            has_spaced, has_camel = bool(SPACED & e.keys()), bool(CAMEL & e.keys())
            assert has_spaced != has_camel
            spellings["spaced" if has_spaced else "camel"] += 1
            assert e.get("country") is None or re.fullmatch(r"[a-z]{2}", e["country"])
            assert isinstance(e["nth"], int) and isinstance(e["clv_total"], int) and isinstance(e["device_new"], bool)
            users[e["user_type"]] += 1
            if e["user_type"] == "anonymous":
                assert e.get("studentId_clientType") is None
            else:
                assert STUDENT_CLIENT.match(e["studentId_clientType"])
    assert keys == EVENT_FIELDS | SPACED | CAMEL
    assert set(styles) == {"space", "glued", "iso_z", "iso_offset"}
    assert spellings["spaced"] > 0 and spellings["camel"] > 0
    assert users["anonymous"] > 0 and users["known"] > users["anonymous"]


def test_known_students_exist_and_match_their_university_and_course(small):
    root, _ = small
    for d in DELIVERIES:
        students = {s["Id"]: s for s in tx(root, d, "students")}
        univ = {norm_int(u["Id"]): u["Name"] for u in tx(root, d, "universities")}
        course = {norm_int(c["Id"]): c["Name"] for c in tx(root, d, "courses")}
        known = orphans = consistent = 0
        for _, _, e in valid_events(root, d):
            if e["user_type"] != "known":
                continue
            known += 1
            sid = STUDENT_CLIENT.match(e["studentId_clientType"]).group(1)
            s = students.get(sid)
            if s is None:
                orphans += 1
                continue
            consistent += (
                e.get("custom_1") == univ[norm_int(s["UniversityId"])]
                and e.get("custom_2") == course[norm_int(s["CourseId"])]
            )
        assert 1 <= orphans <= 0.05 * known
        assert consistent >= 0.97 * (known - orphans)


def test_duplicate_lines_within_and_across_files_and_deliveries(small):
    root, summary = small
    where: dict[str, list[tuple[str, str]]] = {}
    for d in DELIVERIES:
        for f, text, _ in valid_events(root, d):
            where.setdefault(text, []).append((d, f.name))
    repeated = {t: w for t, w in where.items() if len(w) > 1}
    assert any(len(set(w)) < len(w) for w in repeated.values())  # same file
    assert any(len({f for dd, f in w if dd == d}) > 1 for w in repeated.values() for d in DELIVERIES)
    assert any(len({dd for dd, _ in w}) > 1 for w in repeated.values())  # across deliveries
    injected = sum(sum(i["duplicates"].values()) for i in summary["events_by_delivery"].values())
    assert sum(len(w) - 1 for w in repeated.values()) == injected
    assert len(where) == summary["totals"]["events"]


def test_malformed_blank_and_crlf_lines(small):
    root, summary = small
    for d in DELIVERIES:
        info = summary["events_by_delivery"][d]
        kinds: Counter = Counter()
        crlf_files = set()
        bad_at_values = set()
        for f in event_files(root, d):
            endings = {crlf for _, _, crlf in raw_lines(f)}
            assert len(endings) == 1  # a file uses one line ending throughout
            if endings == {True}:
                crlf_files.add(f.name)
            for _, text, _ in raw_lines(f):
                kind, obj = classify(text)
                kinds[kind] += 1
                if kind == "bad_at":
                    bad_at_values.add(obj["at"])
        assert crlf_files == {info["crlf_file"]}
        assert kinds["blank"] == info["blank_lines"] >= 1
        for kind, count in info["malformed"].items():
            assert kinds[kind] == count >= 1, kind
        assert bad_at_values <= {"not-a-date", "2017-13-45 99:99:99", "2017-11-31 10:00:00", "16/11/2017 25:61"}


def test_late_events_and_windows(small):
    root, summary = small
    for d in DELIVERIES:
        start = window_start(d)
        end = datetime.fromisoformat(d[:10]).replace(tzinfo=UTC)
        times = [parse_at(e["at"]) for _, _, e in valid_events(root, d)]
        assert all(t < end for t in times)
        late = [t for t in times if t < start]  # includes lines re-delivered from earlier deliveries
        assert late and all(t >= window_start(DELIVERIES[0]) - timedelta(days=5) for t in late)
    first = [parse_at(e["at"]) for _, _, e in valid_events(root, DELIVERIES[0])]
    assert {t.day for t in first if t.month == 11} == set(range(1, 16))


def test_countries_above_and_below_100_in_november(default):
    root, _ = default
    seen: set[bytes] = set()
    november: Counter = Counter()
    for d in DELIVERIES:
        for _, text, e in valid_events(root, d):
            digest = hashlib.blake2b(text.encode(), digest_size=12).digest()
            if digest in seen:
                continue
            seen.add(digest)
            t = parse_at(e["at"])
            if t.year == 2017 and t.month == 11:
                november[e.get("country")] += 1
    total = sum(november.values())
    assert november["br"] > 0.9 * total
    foreign = {c: n for c, n in november.items() if c not in ("br", None)}
    assert {"us", "pt", "ar"} <= {c for c, n in foreign.items() if n > 100}
    assert len([c for c, n in foreign.items() if n < 100]) >= 5


def test_streaming_memory_is_bounded(tmp_path):
    """Peak traced Python memory stays small and does not grow with the number of events."""
    peaks = []
    for events in (4_000, 16_000):
        tracemalloc.start()
        try:
            generate(tmp_path / str(events), seed=3, students=500, events=events, deliveries=3)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 50 * 1024 * 1024, f"peak {peaks[1] / 1e6:.1f} MB"
    assert peaks[1] < peaks[0] + 2 * 1024 * 1024, f"peaks {[p / 1e6 for p in peaks]} MB"


def test_streaming_memory_for_200k_events(tmp_path):
    """Maximum resident memory of a fresh process writing 200k events."""
    code = (
        "import re, sys; from pathlib import Path; from lakehouse.tools.generate import generate; "
        "generate(sys.argv[1], seed=3, students=2000, events=200_000, deliveries=3); "
        "print(re.search(r'VmHWM:\\s*(\\d+)', Path('/proc/self/status').read_text()).group(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    max_rss_kb = int(out.stdout.split()[-1])
    assert max_rss_kb < 100 * 1024, f"max RSS {max_rss_kb / 1024:.0f} MB"
