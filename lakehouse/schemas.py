"""Explicit Spark schemas of the raw record shapes, and the reference data silver conforms to."""

from __future__ import annotations

from pyspark.sql.types import StringType, StructField, StructType


def _strings(*names: str) -> StructType:
    return StructType([StructField(n, StringType(), True) for n in names])


# Every raw field is read as text (Spark keeps numbers/booleans/objects as their JSON text), then cast in silver:
# ids that arrive as strings or numbers, and any malformed value, take the same path.
# fmt: off
PAGE_VIEW_FIELDS = (
    "at", "browser", "carrier", "city_name", "clv_total", "country", "custom_1", "custom_2", "custom_3", "custom_4",
    "device_new", "first-accessed-page", "install_uuid", "language", "library_ver", "marketing_campaign",
    "marketing_medium", "marketing_source", "model", "name", "nth", "os_ver", "platform", "region", "session_uuid",
    "studentId_clientType", "type", "user_type", "uuid",
    "Page Name", "PageName", "Page Category", "PageCategory",
    "Page Category 1", "PageCategory1", "Page Category 2", "PageCategory2", "Page Category 3", "PageCategory3",
    "Last Accessed Url", "LastAccessedUrl", "erased",
)
# fmt: on
PAGE_VIEW_RAW = _strings(*PAGE_VIEW_FIELDS)

# silver column <- raw spellings (first non-null wins)
PAGE_VIEW_SPELLINGS = {
    "page_name": ("Page Name", "PageName"),
    "page_category": ("Page Category", "PageCategory"),
    "page_category_1": ("Page Category 1", "PageCategory1"),
    "page_category_2": ("Page Category 2", "PageCategory2"),
    "page_category_3": ("Page Category 3", "PageCategory3"),
    "last_accessed_url": ("Last Accessed Url", "LastAccessedUrl"),
}

# The mark an erasure leaves on the raw events and records it anonymizes (`"erased": "true"`): silver carries it as
# `student_erased`, so their facts point to the warehouse's erased member, not to the anonymous one.
ERASED = "erased"
ENTITY_RAW = {
    "students": _strings("Id", "RegisteredDate", "State", "City", "UniversityId", "CourseId", "SignupSource"),
    "courses": _strings("Id", "Name"),
    "universities": _strings("Id", "Name"),
    "subjects": _strings("Id", "Name"),
    "sessions": _strings("StudentId", "SessionStartTime", "StudentClient", ERASED),
    "subscriptions": _strings("StudentId", "PaymentDate", "PlanType", ERASED),
    "student_follow_subject": _strings("StudentId", "SubjectId", "FollowDate", ERASED),
}

# Per entity, the fields that identify a record or key the warehouse's rows (length-capped), and its date field.
ENTITY_IDS = {
    "students": ("Id",),
    "courses": ("Id",),
    "universities": ("Id",),
    "subjects": ("Id",),
    "sessions": ("StudentId", "StudentClient"),
    "subscriptions": ("StudentId", "PlanType"),
    "student_follow_subject": ("StudentId", "SubjectId"),
}
ENTITY_DATES = {
    "students": "RegisteredDate",
    "sessions": "SessionStartTime",
    "subscriptions": "PaymentDate",
    "student_follow_subject": "FollowDate",
}

# Brazilian states: code -> name. Silver conforms `State` (code or name, any case/accents) to the code.
BR_STATES = {
    "AC": "Acre",
    "AL": "Alagoas",
    "AP": "Amapá",
    "AM": "Amazonas",
    "BA": "Bahia",
    "CE": "Ceará",
    "DF": "Distrito Federal",
    "ES": "Espírito Santo",
    "GO": "Goiás",
    "MA": "Maranhão",
    "MT": "Mato Grosso",
    "MS": "Mato Grosso do Sul",
    "MG": "Minas Gerais",
    "PA": "Pará",
    "PB": "Paraíba",
    "PR": "Paraná",
    "PE": "Pernambuco",
    "PI": "Piauí",
    "RJ": "Rio de Janeiro",
    "RN": "Rio Grande do Norte",
    "RS": "Rio Grande do Sul",
    "RO": "Rondônia",
    "RR": "Roraima",
    "SC": "Santa Catarina",
    "SP": "São Paulo",
    "SE": "Sergipe",
    "TO": "Tocantins",
}
