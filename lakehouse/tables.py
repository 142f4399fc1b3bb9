"""The catalogue: one spec per table of the lake and the warehouse (grain, keys, typed and described columns, which
of them are personal data, layout, how the table is kept), and the shapes of the source's exports. Every layer, the
warehouse, the docs and the checks read it; nothing else lists entities, columns or table policies."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

# -- the source's shapes ---------------------------------------------------------------------------------------------

ERASED = "erased"  # the mark an erasure leaves on a raw event or record it anonymizes (`"erased": "true"`)
ERASED_ID = "erased_id"  # beside it: a token of the identity the event or record had (distinct ones stay distinct)


@dataclass(frozen=True)
class Export:
    """One transactional export of the source (`transactional/<delivery>/<entity>.json`): its record fields (all
    read as text), the fields that identify a record, its date field, and the field naming a learner."""

    entity: str
    fields: tuple[str, ...]
    ids: tuple[str, ...]
    date_field: str | None = None
    student_field: str | None = None

    @property
    def is_snapshot(self) -> bool:
        """A snapshot states every key that exists (students, courses...); a record export lists things that
        happened (sessions, subscriptions, follows)."""
        return self.ids == ("Id",)


EXPORTS: tuple[Export, ...] = (
    Export(
        "students",
        ("Id", "RegisteredDate", "State", "City", "UniversityId", "CourseId", "SignupSource"),
        ("Id",),
        "RegisteredDate",
        "Id",
    ),
    Export("courses", ("Id", "Name"), ("Id",)),
    Export("universities", ("Id", "Name"), ("Id",)),
    Export("subjects", ("Id", "Name"), ("Id",)),
    Export(
        "sessions",
        ("StudentId", "SessionStartTime", "StudentClient", ERASED, ERASED_ID),
        ("StudentId", "StudentClient"),
        "SessionStartTime",
        "StudentId",
    ),
    Export(
        "subscriptions",
        ("StudentId", "PaymentDate", "PlanType", ERASED, ERASED_ID),
        ("StudentId", "PlanType"),
        "PaymentDate",
        "StudentId",
    ),
    Export(
        "student_follow_subject",
        ("StudentId", "SubjectId", "FollowDate", ERASED, ERASED_ID),
        ("StudentId", "SubjectId"),
        "FollowDate",
        "StudentId",
    ),
)
EXPORT = {e.entity: e for e in EXPORTS}
ENTITIES: tuple[str, ...] = tuple(EXPORT)
SNAPSHOTS: tuple[str, ...] = tuple(e.entity for e in EXPORTS if e.is_snapshot)
RECORDS: tuple[str, ...] = tuple(e.entity for e in EXPORTS if not e.is_snapshot)

# The fields of a page-view event line as delivered, both spellings of the page fields included.
# fmt: off
EVENT_FIELDS = (
    "at", "browser", "carrier", "city_name", "clv_total", "country", "custom_1", "custom_2", "custom_3", "custom_4",
    "device_new", "first-accessed-page", "install_uuid", "language", "library_ver", "marketing_campaign",
    "marketing_medium", "marketing_source", "model", "name", "nth", "os_ver", "platform", "region", "session_uuid",
    "studentId_clientType", "type", "user_type", "uuid",
    "Page Name", "PageName", "Page Category", "PageCategory",
    "Page Category 1", "PageCategory1", "Page Category 2", "PageCategory2", "Page Category 3", "PageCategory3",
    "Last Accessed Url", "LastAccessedUrl", ERASED,
)
# fmt: on
EVENT_STUDENT_FIELD = "studentId_clientType"  # "<student id>@<client type>"
EVENT_PERSON_FIELDS = ("session_uuid", "install_uuid", "uuid")  # per-person ids of an event line
# What could single a learner out among others once their id is gone: blanked when an erasure anonymizes their events
# (the page category, the user type, the country, the client type and the day the marts count are kept, `at` to the
# hour; the per-person ids are replaced by hashes of a value never stored); their records keep their time to the hour
# (docs/erasure.md).
# fmt: off
EVENT_QUASI_IDENTIFIERS = (
    "city_name", "region", "custom_1", "custom_2", "custom_3", "browser", "carrier", "model", "os_ver", "platform",
    "clv_total", "Page Name", "PageName", "Last Accessed Url", "LastAccessedUrl", "first-accessed-page",
    "marketing_campaign", "marketing_medium", "marketing_source",
)
# fmt: on
# silver column <- the raw spellings of one field (first non-null wins)
EVENT_SPELLINGS = {
    "page_name": ("Page Name", "PageName"),
    "page_category": ("Page Category", "PageCategory"),
    "page_category_1": ("Page Category 1", "PageCategory1"),
    "page_category_2": ("Page Category 2", "PageCategory2"),
    "page_category_3": ("Page Category 3", "PageCategory3"),
    "last_accessed_url": ("Last Accessed Url", "LastAccessedUrl"),
}

# -- table specs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column: its name, its type (Spark SQL for the lake, PostgreSQL for `dw`), a one-line description, and
    whether it holds personal data (a learner's id, raw text naming one, or a per-person id or hash)."""

    name: str
    type: str
    description: str
    pii: bool = False


class Kept(StrEnum):
    """How a table is kept up to date."""

    APPENDED = "appended"  # new rows are added; rows never change
    MERGED = "merged"  # new rows inserted and changed rows updated by key (Delta MERGE)
    REPLACED_BY_DELIVERY = "replaced by delivery"  # the rows of the deliveries from the first changed one are rewritten
    REPLACED_BY_GROUP = "replaced by group"  # the groups the new rows touch are recomputed and rewritten
    REBUILT = "rebuilt"  # rewritten whole from its inputs
    LOADED = "loaded by the mirror"  # dw: SCD2 versions or facts applied from gold
    VIEW = "a view"  # dw: computed when read


@dataclass(frozen=True)
class Table:
    """One table: `<layer>.<name>`, its grain in one sentence, its key columns, its columns, its layout (partition
    columns; the columns Delta keeps min/max statistics on, never a personal one) and how it is kept."""

    layer: str
    name: str
    grain: str
    keys: tuple[str, ...]
    columns: tuple[Column, ...]
    kept_by: Kept
    partition_by: tuple[str, ...] = ()
    stats: tuple[str, ...] = ()
    source: str | None = None  # dw: the gold table it is loaded from

    @property
    def key(self) -> str:
        return f"{self.layer}.{self.name}"

    @property
    def change_feed(self) -> bool:
        """Whether Delta keeps the table's change data feed: a gold table the mirror loads a fact or a mart from, so
        that it reads only the rows changed since the version it applied (CHANGE_FEED)."""
        return self.key in CHANGE_FEED

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.key} has no column {name!r}")

    @property
    def personal(self) -> tuple[str, ...]:
        """The columns holding personal data."""
        return tuple(c.name for c in self.columns if c.pii)

    @property
    def ddl(self) -> str:
        """The columns as a Spark DDL schema string (`name type, ...`)."""
        return ", ".join(f"`{c.name}` {c.type}" for c in self.columns)

    def check(self) -> None:
        """Refuse a spec that contradicts itself: unknown keys, partition or statistics columns, statistics on
        personal data, a column twice."""
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"{self.key}: a column is listed twice")
        for group, cols in (("key", self.keys), ("partition", self.partition_by), ("statistics", self.stats)):
            unknown = [c for c in cols if c not in names]
            if unknown:
                raise ValueError(f"{self.key}: {group} column(s) {', '.join(unknown)} not among its columns")
        leaked = [c for c in self.stats if self.column(c).pii]
        if leaked:
            raise ValueError(f"{self.key}: Delta statistics on personal column(s) {', '.join(leaked)}")


# -- columns shared by several tables ---------------------------------------------------------------------------------

_SHARED: dict[str, Column] = {
    c.name: c
    for c in (
        # where a row came from
        Column("source_file", "string", "the source file the row was read from, as the source names it"),
        Column("landed_path", "string", "where landing copied that file in the lake (content-addressed)"),
        Column("line_number", "bigint", "1-based line of the event file, or position in the export's array"),
        Column("delivery", "string", "the delivery folder (an ISO date or timestamp) the row came in"),
        Column("as_of", "timestamp", "the delivery's as-of time (UTC)"),
        Column("batch_id", "bigint", "the landing batch that brought the file"),
        Column("landed_at", "timestamp", "when landing copied the file"),
        Column("run_id", "string", "the flow run that wrote the row"),
        Column("at_raw", "string", "the event's `at` exactly as delivered"),
        Column("loaded_at", "timestamp", "when silver wrote the row"),
        Column(
            "changed_batch_id",
            "bigint",
            "the bronze batch in which what gold reads of the row last changed (gold reads changes by it)",
        ),
        # quarantine
        Column("reason", "string", "why the line, record or file was set aside (docs/quarantine.md)"),
        Column("raw", "string", "the line, record or start of the file as text", pii=True),
        Column("raw_base64", "string", "the original bytes in base64 when they are not UTF-8", pii=True),
        # learners
        Column(
            "student_id",
            "string",
            "the learner's id as the platform exports it (text); null when anonymous or erased",
            pii=True,
        ),
        Column("student_erased", "boolean", "true when an erasure anonymized the row: its learner's id is gone"),
        Column("registered_at", "timestamp", "when the learner registered (UTC)"),
        Column("state", "string", "the learner's Brazilian state as a two-letter code (or as delivered)"),
        Column("city", "string", "the learner's city"),
        Column("university_id", "int", "the learner's university"),
        Column("course_id", "int", "the learner's course"),
        Column("signup_source", "string", "how the learner signed up (Facebook, Google, Email, Other...)"),
        Column("university_name", "string", "the university's name"),
        Column("course_name", "string", "the course's name"),
        Column("subject_id", "int", "the subject's id"),
        Column("subject_name", "string", "the subject's name"),
        Column("is_deleted", "boolean", "true when the latest delivery of its entity no longer holds it"),
        # page views
        Column(
            "event_id",
            "string",
            "hash of the event's values: one id per distinct event, wherever and however often delivered",
            pii=True,
        ),
        Column("event_at", "timestamp", "when the page was viewed (UTC)"),
        Column("event_date", "date", "the day of event_at (late events land in their own day)"),
        Column("client_type", "string", "the client the learner used (Website, Webapp, Android, iOS)"),
        Column("user_type", "string", "the platform's user type (custom_4: CoreUser, CasualUser, NewUser...)"),
        Column("country", "string", "country of the access, lowercase ISO 3166 code"),
        Column("region", "string", "region of the access"),
        Column("city_name", "string", "city of the access"),
        Column("browser", "string", "browser and version"),
        Column("platform", "string", "operating system family"),
        Column("page_name", "string", "the page viewed (either spelling of Page Name)"),
        Column("page_category", "string", "the page's category"),
        Column("session_uuid", "string", "the session the view belongs to (a per-person id)", pii=True),
        # marts
        Column("page_views", "bigint", "page views counted"),
        Column("students", "bigint", "distinct learners (non-null student_id) counted"),
        Column("month", "date", "first day of the month"),
    )
}


def col(name: str, description: str | None = None, *, type: str | None = None, pii: bool | None = None) -> Column:
    """A shared column by name, optionally with a description, type or personal flag of its own."""
    base = _SHARED[name] if name in _SHARED else None
    if base is None:
        if description is None or type is None:
            raise KeyError(f"column {name!r} is not shared: give its type and description")
        return Column(name, type, description, bool(pii))
    return replace(
        base,
        description=description or base.description,
        type=type or base.type,
        pii=base.pii if pii is None else pii,
    )


def cols(*names: str) -> tuple[Column, ...]:
    return tuple(col(n) for n in names)


def own(name: str, type: str, description: str, pii: bool = False) -> Column:
    """A column of one table only."""
    return Column(name, type, description, pii)


ORIGIN = cols("source_file", "landed_path", "line_number", "delivery", "as_of", "batch_id", "landed_at", "run_id")
# Every bronze and quarantine table is read by batch (silver, the accounting): statistics on these columns only.
_BY_BATCH = ("batch_id", "as_of")

# -- bronze and quarantine ---------------------------------------------------------------------------------------------

_BRONZE: list[Table] = [
    Table(
        "bronze",
        "events",
        "one row per non-blank event line that is a JSON object with a readable `at`, as delivered",
        ("landed_path", "line_number"),
        (own("value", "string", "the event line exactly as delivered (JSON text)", pii=True), col("at_raw"), *ORIGIN),
        Kept.APPENDED,
        stats=_BY_BATCH,
    ),
    *(
        Table(
            "bronze",
            e.entity,
            f"one row per record of a delivered {e.entity}.json export, as delivered",
            ("landed_path", "line_number"),
            (
                own(
                    "record",
                    "string",
                    "the exported record exactly as delivered (JSON text)",
                    pii=e.student_field is not None,
                ),
                *ORIGIN,
            ),
            Kept.APPENDED,
            stats=_BY_BATCH,
        )
        for e in EXPORTS
    ),
    Table(
        "quarantine",
        "events",
        "one row per event line that cannot be read or held, with its reason",
        ("landed_path", "line_number"),
        (col("reason"), col("raw"), col("raw_base64"), *ORIGIN),
        Kept.APPENDED,
        stats=_BY_BATCH,
    ),
    Table(
        "quarantine",
        "transactional",
        "one row per export record, or whole export (line_number null), that cannot be read or held, with its reason",
        ("landed_path", "line_number"),
        (
            own("entity", "string", "the export's entity (its file name), as delivered"),
            col("reason"),
            col("raw"),
            col("raw_base64"),
            *ORIGIN,
        ),
        Kept.APPENDED,
        stats=_BY_BATCH,
    ),
]

# -- silver ----------------------------------------------------------------------------------------------------------

_PROVENANCE = (
    col("at_raw"),
    col("source_file", "the file of the event's earliest delivered occurrence"),
    col("line_number", "its line in that file"),
    col("delivery", "its delivery"),
    col("as_of", "its delivery's as-of"),
    col("batch_id", "its landing batch"),
    col("run_id"),
    col("loaded_at"),
)
_CHANGED = col("changed_batch_id")
PROVENANCE = tuple(c.name for c in _PROVENANCE)  # what an earlier delivered occurrence of a page view replaces

_PAGE_VIEWS = Table(
    "silver",
    "page_views",
    "one row per distinct event (its earliest delivered occurrence), typed, spellings folded",
    ("event_id",),
    (
        col("event_id"),
        col("event_at"),
        col("event_date"),
        col("student_id", "the learner before the `@` of studentId_clientType; null when anonymous or erased"),
        col("student_erased"),
        col("client_type", "the client after the `@` of studentId_clientType"),
        col("user_type"),
        own("visitor_type", "string", "the raw `user_type` field: known or anonymous"),
        col("country"),
        col("region"),
        col("city_name"),
        col("browser"),
        col("platform"),
        col("page_name"),
        col("page_category"),
        own("page_category_1", "string", "the page's first sub-category"),
        own("page_category_2", "string", "the page's second sub-category"),
        own("page_category_3", "string", "the page's third sub-category"),
        own("last_accessed_url", "string", "the URL viewed before this page", pii=True),
        own("first_accessed_page", "string", "the first page of the session"),
        col("session_uuid"),
        own("event_name", "string", "the event's name (PageView)"),
        own("event_type", "string", "the event's type field"),
        own("carrier", "string", "mobile carrier"),
        own("clv_total", "bigint", "customer lifetime value counter"),
        own("custom_1", "string", "the learner's university name, as the event carries it"),
        own("custom_2", "string", "the learner's course name, as the event carries it"),
        own("custom_3", "string", "custom field 3"),
        own("is_device_new", "boolean", "whether the device was new (device_new)"),
        own("install_uuid", "string", "the app install (a per-person id)", pii=True),
        own("language", "string", "the client's language"),
        own("library_ver", "string", "the tracking library's version"),
        own("marketing_campaign", "string", "marketing campaign"),
        own("marketing_medium", "string", "marketing medium"),
        own("marketing_source", "string", "marketing source"),
        own("model", "string", "device model"),
        own("nth", "bigint", "the event's number in its session"),
        own("os_ver", "string", "operating system version"),
        own("uuid", "string", "the visitor (a per-person id)", pii=True),
        own(
            "extra_fields",
            "map<string,string>",
            "fields the event carried beyond the known ones, as text",
            pii=True,
        ),
        *_PROVENANCE,
        _CHANGED,
    ),
    Kept.MERGED,
    partition_by=("event_date",),
    stats=("event_at", "batch_id", "changed_batch_id"),
)
_SNAPSHOT_KEY = {
    "students": "student_id",
    "courses": "course_id",
    "universities": "university_id",
    "subjects": "subject_id",
}
_SNAPSHOT_ATTRS = {
    "students": cols("registered_at", "state", "city", "university_id", "course_id", "signup_source"),
    "courses": cols("course_name"),
    "universities": cols("university_name"),
    "subjects": cols("subject_name"),
}
_SNAPSHOT_TAIL = (
    col("is_deleted", "true when this delivery's export does not hold the key (the last state is carried)"),
    col("delivery", "the delivery this state is of"),
    col("as_of", "that delivery's as-of"),
    _CHANGED,
)
_SILVER_SNAPSHOTS = [
    Table(
        "silver",
        entity,
        f"one row per ({_SNAPSHOT_KEY[entity]}, {entity} delivery) from the key's first delivery on",
        (_SNAPSHOT_KEY[entity], "delivery"),
        (
            col(_SNAPSHOT_KEY[entity], type="string" if entity == "students" else "int"),
            *_SNAPSHOT_ATTRS[entity],
            *_SNAPSHOT_TAIL,
        ),
        Kept.REPLACED_BY_DELIVERY,
        stats=("as_of", "changed_batch_id"),
    )
    for entity in SNAPSHOTS
]
_RECORD_ATTRS = {
    "sessions": (
        own("session_start_at", "timestamp", "when the session started (UTC)"),
        col("client_type", "the client of the session (StudentClient)"),
    ),
    "subscriptions": (
        own("payment_at", "timestamp", "when the payment was made (UTC)"),
        own("plan_type", "string", "the plan paid for (Mensal, Anual...)"),
    ),
    "student_follow_subject": (
        col("subject_id", "the subject followed"),
        own("followed_at", "timestamp", "when the learner followed the subject (UTC)"),
    ),
}
_RECORD_NOUN = {"sessions": "session", "subscriptions": "payment", "student_follow_subject": "follow"}
_RECORD_ID = own(
    "record_id",
    "string",
    "hash of the record's values: one id per distinct record (the learner's id included)",
    pii=True,
)
_SILVER_RECORDS = [
    Table(
        "silver",
        entity,
        f"one row per distinct {_RECORD_NOUN[entity]} record over all deliveries",
        ("record_id",),
        (
            _RECORD_ID,
            col("student_id"),
            col("student_erased"),
            *_RECORD_ATTRS[entity],
            own("first_delivery", "string", "the first delivery whose export held the record"),
            own("first_as_of", "timestamp", "that delivery's as-of"),
            own("last_delivery", "string", "the last delivery whose export held the record"),
            own("last_as_of", "timestamp", "that delivery's as-of"),
            col("is_deleted", "true when the latest export of its entity no longer holds the record"),
            _CHANGED,
        ),
        Kept.REBUILT,
        stats=("changed_batch_id",),
    )
    for entity in RECORDS
]

# -- gold ------------------------------------------------------------------------------------------------------------

_GOLD_ENTITY = {"students": "student", "courses": "course", "universities": "university", "subjects": "subject"}
STUDENT_ATTRIBUTES = (
    col("registered_at"),
    col("state"),
    col("city"),
    col("university_id"),
    col("university_name", "the university's name as of the state's delivery"),
    col("course_id"),
    col("course_name", "the course's name as of the state's delivery"),
    col("signup_source"),
)
_DIM_ATTRS = {
    "student": STUDENT_ATTRIBUTES,
    "course": cols("course_name"),
    "university": cols("university_name"),
    "subject": cols("subject_name"),
}


def _dim_key(entity: str) -> Column:
    return (
        col(f"{entity}_id", type="string")
        if entity == "student"
        else col(f"{entity}_id", f"the {entity}'s id", type="int")
    )


_GOLD_DIMS = [
    t
    for e in ("university", "course", "subject", "student")
    for t in (
        Table(
            "gold",
            f"dim_{e}_history",
            f"one row per ({e}_id, delivery of its entity from the id's first): the states the warehouse versions",
            (f"{e}_id", "delivery"),
            (
                _dim_key(e),
                *_DIM_ATTRS[e],
                col("is_deleted", "true when that delivery does not hold the key (the last state is carried)"),
                col("as_of", "the as-of of the delivery this state is of"),
                col("delivery", "the delivery this state is of"),
            ),
            Kept.REPLACED_BY_DELIVERY,
            stats=("as_of",),
        ),
        Table(
            "gold",
            f"dim_{e}",
            f"one row per {e} ever seen: its latest delivered state",
            (f"{e}_id",),
            (
                _dim_key(e),
                *_DIM_ATTRS[e],
                col("is_deleted", "true when the latest delivery of its entity no longer holds it"),
                col("as_of", "the as-of of the delivery this state comes from"),
            ),
            Kept.REBUILT,
        ),
    )
]
_FACT_PAGE_VIEW = (
    col("event_id"),
    col("event_at"),
    col("event_date"),
    col("student_id"),
    col("student_erased"),
    col("client_type"),
    col("country"),
    col("region"),
    col("city_name"),
    col("browser"),
    col("platform"),
    col("page_name"),
    col("page_category"),
    col("user_type"),
    col("session_uuid"),
)
_RECORD_FACT_ID = {"sessions": "session_id", "subscriptions": "subscription_id", "student_follow_subject": "follow_id"}
_RECORD_FACT_NAME = {
    "sessions": "fact_session",
    "subscriptions": "fact_subscription",
    "student_follow_subject": "fact_subject_follow",
}
_RECORD_FACT_DATE = {
    "sessions": "session_date",
    "subscriptions": "payment_date",
    "student_follow_subject": "followed_date",
}


def _record_fact_columns(entity: str) -> tuple[Column, ...]:
    attrs = list(_RECORD_ATTRS[entity])
    at = next(i for i, c in enumerate(attrs) if c.name.endswith("_at"))
    attrs.insert(at + 1, own(_RECORD_FACT_DATE[entity], "date", f"the day of {attrs[at].name}"))
    return (
        replace(_RECORD_ID, name=_RECORD_FACT_ID[entity]),
        col("student_id"),
        col("student_erased"),
        *attrs,
        own("first_as_of", "timestamp", "the as-of of the first delivery whose export held the record"),
        col("is_deleted", "true when the latest export no longer holds the record (it still happened)"),
    )


_GOLD_FACTS = [
    Table(
        "gold",
        "fact_page_view",
        "one row per distinct event, dated by the event",
        ("event_id",),
        _FACT_PAGE_VIEW,
        Kept.APPENDED,
        partition_by=("event_date",),
        stats=("event_at",),
    ),
    *(
        Table(
            "gold",
            _RECORD_FACT_NAME[e],
            f"one row per distinct {_RECORD_NOUN[e]} record ever exported",
            (_RECORD_FACT_ID[e],),
            _record_fact_columns(e),
            Kept.MERGED,
            stats=("first_as_of",),
        )
        for e in RECORDS
    ),
]
_ANONYMOUS = "the learner; null holds the anonymous page views"
_GOLD_MARTS = [
    Table(
        "gold",
        "activity_by_student",
        "one row per (student_id, user_type): the page views the marts add up",
        ("student_id", "user_type"),
        (col("student_id", _ANONYMOUS), col("user_type"), col("page_views")),
        Kept.MERGED,
    ),
    Table(
        "gold",
        "activity_by_country_student",
        "one row per (country, month, student_id): the page views the country mart adds up",
        ("country", "month", "student_id"),
        (col("country"), col("month"), col("student_id", _ANONYMOUS), col("page_views")),
        Kept.MERGED,
        partition_by=("month",),
    ),
    Table(
        "gold",
        "dim_date",
        "one row per calendar day from the first to the last date of any fact",
        ("date",),
        (
            own("date", "date", "the day"),
            own("year", "int", "its year"),
            own("month", "int", "its month (1-12)"),
            own("day", "int", "its day of the month"),
            own("weekday", "int", "ISO weekday: 1 = Monday ... 7 = Sunday"),
            own("weekday_name", "string", "the weekday's English name"),
            own("month_start_date", "date", "first day of its month"),
        ),
        Kept.REBUILT,
    ),
    Table(
        "gold",
        "mart_daily_activity",
        "one row per (event_date, client_type)",
        ("event_date", "client_type"),
        (
            col("event_date"),
            col("client_type"),
            col("page_views"),
            col("students"),
            own("sessions", "bigint", "distinct sessions (session_uuid) counted"),
        ),
        Kept.REPLACED_BY_GROUP,
    ),
    Table(
        "gold",
        "mart_country_access",
        "one row per (country, month)",
        ("country", "month"),
        (col("country"), col("month"), col("page_views"), col("students")),
        Kept.REPLACED_BY_GROUP,
    ),
    Table(
        "gold",
        "mart_users_by_type",
        "one row per user type (custom_4)",
        ("user_type",),
        (col("user_type"), col("page_views"), col("students")),
        Kept.REPLACED_BY_GROUP,
    ),
    Table(
        "gold",
        "mart_state_activity",
        "one row per learner state (null: anonymous page views, ids no export knows, learners without a state)",
        ("state",),
        (col("state", "the learner's current state (two-letter code)"), col("page_views"), col("students")),
        Kept.REPLACED_BY_GROUP,
    ),
    Table(
        "gold",
        "page_view_enriched",
        "one row per distinct event with its learner's current attributes, for data scientists",
        ("event_id",),
        (*_FACT_PAGE_VIEW, *(c for c in STUDENT_ATTRIBUTES if c.name != "registered_at"), col("registered_at")),
        Kept.MERGED,
        partition_by=("event_date",),
        stats=("event_at",),
    ),
]

# -- quality: what the declared expectations found ---------------------------------------------------------------

_QUALITY = [
    Table(
        "quality",
        "expectation_results",
        "one row per (run, table, expectation) a refresh checked: the rows it checked, those that failed, the outcome",
        ("run_id", "table_name", "expectation"),
        (
            col("run_id", "the flow run whose refresh checked the rows"),
            own("checked_at", "timestamp", "when the rows were checked"),
            own("table_name", "string", "the silver or gold table checked, as `<layer>.<table>`"),
            own("expectation", "string", "the expectation's name in the expectations file"),
            own("action", "string", "what a failing row does: warn, drop or fail"),
            own("rows_checked", "bigint", "the rows the refresh was to write into the table"),
            own("rows_failed", "bigint", "the rows the expectation was not true for (false or null)"),
            own("outcome", "string", "passed (no row failed), warned, dropped or failed (the table was not written)"),
        ),
        Kept.APPENDED,
        stats=("checked_at",),
    ),
]

# -- the system tables -----------------------------------------------------------------------------------------------

_SYSTEM = [
    Table(
        "_system",
        "erasures",
        "one row per erasure: how many learners and rows, never who",
        ("erasure_id",),
        (
            own("erasure_id", "string", "the erasure's id"),
            col("run_id", "the flow run that erased"),
            own("erased_at", "timestamp", "when the erasure completed"),
            own("mode", "string", "anonymize or delete"),
            own("students", "int", "how many learners were erased"),
            own("rows", "map<string,bigint>", "rows changed per table"),
            own("seconds", "double", "how long it took"),
        ),
        Kept.APPENDED,
    ),
]

LAKE: tuple[Table, ...] = (
    *_BRONZE,
    _PAGE_VIEWS,
    *_SILVER_SNAPSHOTS,
    *_SILVER_RECORDS,
    *_GOLD_DIMS,
    *_GOLD_FACTS,
    *_GOLD_MARTS,
    *_QUALITY,
    *_SYSTEM,
)

# -- the warehouse (PostgreSQL schema dw) ----------------------------------------------------------------------------

_PG_TYPES = {
    "string": "text",
    "int": "integer",
    "bigint": "bigint",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "date": "date",
    "double": "double precision",
}


def pg_type(spark_type: str) -> str:
    """The PostgreSQL type of a lake column's Spark type."""
    return _PG_TYPES[spark_type]


def _pg(c: Column, description: str | None = None, name: str | None = None) -> Column:
    return replace(c, name=name or c.name, type=pg_type(c.type), description=description or c.description)


ERASED_MEMBER = "(erased)"  # dw.dim_student's member that facts of erased learners point to (student_sk 0)


def _warehouse_dimension(entity: str) -> Table:
    history = next(t for t in _GOLD_DIMS if t.name == f"dim_{entity}_history")
    attrs = [c for c in history.columns if c.name not in ("as_of", "delivery")]
    member = f"; {ERASED_MEMBER!r} for the erased member" if entity == "student" else ""
    key = _pg(attrs[0], attrs[0].description + member)
    return Table(
        "dw",
        f"dim_{entity}",
        f"one row per {entity} version (SCD type 2)"
        + ("; student_sk 0 is the erased member" if entity == "student" else ""),
        (f"{entity}_sk",),
        (
            own(f"{entity}_sk", "bigint", f"surrogate key of the {entity} version"),
            key,
            *(_pg(c) for c in attrs[1:-1]),
            _pg(attrs[-1], "true when the version records the key's absence from its entity's delivery"),
            own("valid_from", "timestamptz", "the as-of of the delivery that brought the version"),
            own("valid_to", "timestamptz", "the as-of of the delivery that replaced it; null while current"),
            own("is_current", "boolean", "true for the key's current version"),
        ),
        Kept.LOADED,
        source=history.name,
    )


def _student_sk(what: str = "the learner version valid at the fact's time") -> Column:
    return own("student_sk", "bigint", f"{what}; 0: an erased learner; null: anonymous")


_WAREHOUSE_FACT_SOURCES = {
    "fact_session": "sessions",
    "fact_subscription": "subscriptions",
    "fact_subject_follow": "student_follow_subject",
}


def _warehouse_record_fact(name: str) -> Table:
    gold = next(t for t in _GOLD_FACTS if t.name == name)
    entity = _WAREHOUSE_FACT_SOURCES[name]
    attrs = [c for c in _RECORD_ATTRS[entity]]
    sks = [_student_sk()] + (
        [own("subject_sk", "bigint", "the subject version valid at the follow's time")]
        if name == "fact_subject_follow"
        else []
    )
    student = _pg(col("student_id"), f"the learner; {ERASED_MEMBER!r} for an erased learner; null: anonymous")
    day = gold.column(_RECORD_FACT_DATE[entity])
    return Table(
        "dw",
        name,
        gold.grain,
        tuple(c.name for c in (student, *attrs)),
        (*sks, student, *(_pg(c) for c in attrs), _pg(day, f"{day.description} (UTC): joins dw.dim_date")),
        Kept.LOADED,
        source=name,
    )


_CALENDAR = Table(
    "dw",
    "dim_date",
    "one row per calendar day from the first to the last date of any fact",
    ("date",),
    (
        own("date", "date", "the day: the facts' event_date, session_date, payment_date and followed_date join it"),
        own("year", "integer", "its year"),
        own("quarter", "integer", "its quarter (1-4)"),
        own("month", "integer", "its month (1-12)"),
        own("month_name", "text", "the month's English name"),
        own("week", "integer", "its ISO 8601 week of the year (1-53)"),
        own("weekday", "integer", "ISO weekday: 1 = Monday ... 7 = Sunday"),
        own("weekday_name", "text", "the weekday's English name"),
        own("is_weekend", "boolean", "true on Saturday and Sunday"),
    ),
    Kept.LOADED,
    source="dim_date",
)


def _warehouse_mart(name: str) -> Table:
    """A gold mart, row for row."""
    gold = next(t for t in _GOLD_MARTS if t.name == name)
    return Table("dw", name, gold.grain, gold.keys, tuple(_pg(c) for c in gold.columns), Kept.LOADED, source=name)


_CURRENT_VIEWS = {"student": "students", "course": "courses", "university": "universities", "subject": "subjects"}


def _current_view(entity: str) -> Table:
    """dw.<entities>: each key's current version, under the name a person looks for."""
    dimension = _warehouse_dimension(entity)
    kept = [c for c in dimension.columns if c.name not in ("valid_from", "valid_to", "is_current")]
    member = "; the erased member (student_sk 0) too" if entity == "student" else ""
    return Table(
        "dw",
        _CURRENT_VIEWS[entity],
        f"one row per {entity} ever delivered: its current version (dw.dim_{entity} where is_current){member}",
        (f"{entity}_id",),
        (
            *kept,
            own("current_since", "timestamptz", "the as-of of the delivery this state was first delivered in"),
        ),
        Kept.VIEW,
        source=f"dim_{entity}",
    )


WAREHOUSE: tuple[Table, ...] = (
    *(_warehouse_dimension(e) for e in ("student", "course", "university", "subject")),
    *(_warehouse_record_fact(n) for n in _WAREHOUSE_FACT_SOURCES),
    Table(
        "dw",
        "fact_page_view_daily",
        "one row per (day, learner, client type, country); learner null when anonymous",
        ("event_date", "student_id", "client_type", "country"),
        (
            _pg(col("event_date", "the day of the page views")),
            _student_sk("the learner version valid at the day's first page view"),
            _pg(col("student_id"), f"the learner; {ERASED_MEMBER!r} for an erased learner; null: anonymous"),
            _pg(col("client_type")),
            _pg(col("country")),
            _pg(col("page_views", "page views of the day")),
            own("first_event_at", "timestamptz", "the day's first page view"),
            own("last_event_at", "timestamptz", "the day's last page view"),
        ),
        Kept.LOADED,
        source="fact_page_view",
    ),
    _CALENDAR,
    *(
        _warehouse_mart(n)
        for n in ("mart_country_access", "mart_users_by_type", "mart_state_activity", "mart_daily_activity")
    ),
    *(_current_view(e) for e in _CURRENT_VIEWS),
    Table(
        "dw",
        "load_audit",
        "one row per (load, target table) that a mirror applied",
        ("load_id", "table_name"),
        (
            own("load_id", "bigint", "the mirror run"),
            own("table_name", "text", "the dw table loaded"),
            own("gold_table", "text", "the gold table read"),
            own("gold_version", "bigint", "the Delta version of the gold table read"),
            own(
                "deliveries",
                "text[]",
                "the deliveries applied: new ones, and those whose gold rows changed (dimensions)",
            ),
            own("rows_staged", "bigint", "rows copied from gold"),
            own("rows_inserted", "bigint", "rows inserted"),
            own("rows_closed", "bigint", "versions whose end moved (dimensions)"),
            own("rows_removed", "bigint", "rows removed"),
            own("loaded_at", "timestamptz", "when the load committed"),
            own("restated_from", "timestamptz", "the as-of the versions were restated from (dimensions)"),
            own("rows_repointed", "bigint", "rows given the surrogate keys of changed dimension versions (facts)"),
            own("staged_columns", "text[]", "the columns staged: a table whose columns changed since is loaded again"),
            own("gold_rows", "bigint", "the rows of the gold table's state read (what the drift check compares with)"),
            own("gold_state", "text", "the hash of that state (reused while the gold version stays the same)"),
        ),
        Kept.APPENDED,
    ),
    Table(
        "dw",
        "load_delivery",
        "one row per (target table, delivery) applied to the dimension history, with what gold held of it",
        ("table_name", "delivery", "as_of"),
        (
            own("table_name", "text", "the dw dimension"),
            own("delivery", "text", "the delivery applied"),
            own("as_of", "timestamptz", "its as-of"),
            own("load_id", "bigint", "the mirror run that applied it"),
            own("rows", "bigint", "gold history rows of the delivery when applied"),
            own(
                "fingerprint",
                "text",
                "a hash of those rows: when gold's differs, the dimension is restated from this delivery on",
            ),
        ),
        Kept.APPENDED,
    ),
    Table(
        "dw",
        "schema_version",
        "one row per warehouse migration applied",
        ("version",),
        (
            own("version", "integer", "the migration's number"),
            own("name", "text", "its name"),
            own("checksum", "text", "sha256 of its file when applied"),
            own("applied_at", "timestamptz", "when it was applied"),
        ),
        Kept.APPENDED,
    ),
)

TABLES: tuple[Table, ...] = (*LAKE, *WAREHOUSE)
BY_KEY: dict[str, Table] = {t.key: t for t in TABLES}
# The gold tables whose change data feed the mirror reads: those it loads facts and marts from, row by row as they
# change; not the dimension histories (restated by delivery) nor a table rewritten whole at every change (the calendar)
CHANGE_FEED: frozenset[str] = frozenset(
    f"gold.{t.source}"
    for t in WAREHOUSE
    if t.kept_by is Kept.LOADED
    and not (t.source or "").endswith("_history")
    and BY_KEY[f"gold.{t.source}"].kept_by is not Kept.REBUILT
)


def table(layer: str, name: str) -> Table:
    """The spec of `<layer>.<name>`."""
    try:
        return BY_KEY[f"{layer}.{name}"]
    except KeyError:
        raise KeyError(f"the catalogue has no table {layer}.{name}") from None


def layer(name: str) -> tuple[Table, ...]:
    """The specs of one layer's tables, in the catalogue's order."""
    return tuple(t for t in TABLES if t.layer == name)


def names(layer_name: str) -> tuple[str, ...]:
    return tuple(t.name for t in layer(layer_name))


for _t in TABLES:
    _t.check()
