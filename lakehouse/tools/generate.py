"""Deterministic synthetic source in the shapes of the Passei Direto case study (docs/source-data.md).

Pure standard library. Same arguments, same bytes: every random draw comes from seeded
`random.Random` instances, output order is fixed, and no wall-clock time is read.
Events are streamed line by line; only bounded reservoirs of lines are kept for duplicates.
"""

from __future__ import annotations

import json
import math
import os
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

from lakehouse.tables import ENTITIES, EXPORTS

FIRST_DELIVERY = date(2017, 11, 16)
FIRST_WINDOW_START = date(2017, 11, 1)
LAST_DELIVERY_TIME = "T06:00:00"
MAX_LINES_PER_PART = 250_000
MIN_PARTS = 4
MIN_EVENTS_PER_DELIVERY = 8
CRLF_PART = 1
CLIENTS = ("Website", "Webapp", "Android", "iOS")
MALFORMED_KINDS = ("not_json", "truncated_json", "json_array", "json_scalar", "missing_at", "bad_at")
DUPLICATE_KINDS = ("within_file", "cross_file", "cross_delivery")

# (code, name, weight, cities)
STATES = (
    ("SP", "São Paulo", 300, ("São Paulo", "Campinas", "Santos", "Ribeirão Preto", "São José dos Campos", "Sorocaba")),
    ("RJ", "Rio de Janeiro", 130, ("Rio de Janeiro", "Niterói", "Duque de Caxias", "Nova Iguaçu", "Petrópolis")),
    ("MG", "Minas Gerais", 120, ("Belo Horizonte", "Uberlândia", "Juiz de Fora", "Contagem")),
    ("RS", "Rio Grande do Sul", 60, ("Porto Alegre", "Caxias do Sul", "Pelotas")),
    ("PR", "Paraná", 60, ("Curitiba", "Londrina", "Maringá")),
    ("BA", "Bahia", 50, ("Salvador", "Feira de Santana")),
    ("SC", "Santa Catarina", 40, ("Florianópolis", "Joinville", "Blumenau")),
    ("PE", "Pernambuco", 40, ("Recife", "Olinda")),
    ("CE", "Ceará", 30, ("Fortaleza", "Juazeiro do Norte")),
    ("GO", "Goiás", 30, ("Goiânia", "Anápolis")),
    ("DF", "Distrito Federal", 30, ("Brasília",)),
    ("ES", "Espírito Santo", 20, ("Vitória", "Vila Velha")),
    ("PA", "Pará", 20, ("Belém",)),
    ("AM", "Amazonas", 15, ("Manaus",)),
    ("MA", "Maranhão", 10, ("São Luís",)),
    ("PB", "Paraíba", 10, ("João Pessoa", "Campina Grande")),
    ("RN", "Rio Grande do Norte", 10, ("Natal",)),
    ("MT", "Mato Grosso", 10, ("Cuiabá",)),
    ("MS", "Mato Grosso do Sul", 10, ("Campo Grande",)),
    ("AL", "Alagoas", 8, ("Maceió",)),
    ("PI", "Piauí", 7, ("Teresina",)),
    ("SE", "Sergipe", 6, ("Aracaju",)),
    ("RO", "Rondônia", 5, ("Porto Velho",)),
    ("TO", "Tocantins", 4, ("Palmas",)),
    ("AC", "Acre", 2, ("Rio Branco",)),
    ("AP", "Amapá", 2, ("Macapá",)),
    ("RR", "Roraima", 2, ("Boa Vista",)),
)

# fmt: off
UNIVERSITY_PREFIXES = (
    "Universidade Federal de", "Universidade Estadual de", "Centro Universitário de", "Faculdade de Tecnologia de",
    "Universidade Católica de", "Instituto Federal de", "Faculdade Integrada de", "Universidade Metodista de",
)
COURSES = (
    "Administração", "Direito", "Medicina", "Enfermagem", "Engenharia Civil", "Engenharia de Produção",
    "Engenharia Mecânica", "Engenharia Elétrica", "Engenharia Química", "Engenharia de Computação",
    "Ciência da Computação", "Sistemas de Informação", "Análise e Desenvolvimento de Sistemas", "Psicologia",
    "Pedagogia", "Ciências Contábeis", "Economia", "Arquitetura e Urbanismo", "Fisioterapia", "Farmácia",
    "Nutrição", "Odontologia", "Biomedicina", "Educação Física", "Ciências Biológicas", "Química", "Física",
    "Matemática", "Letras", "História", "Geografia", "Jornalismo", "Publicidade e Propaganda", "Relações Internacionais",
    "Serviço Social", "Medicina Veterinária", "Agronomia", "Zootecnia", "Design", "Gestão de Recursos Humanos",
    "Logística", "Marketing", "Turismo", "Filosofia", "Sociologia", "Estatística", "Engenharia Ambiental",
    "Engenharia de Software", "Radiologia", "Gastronomia",
)
SUBJECT_BASES = (
    "Cálculo", "Física", "Álgebra Linear", "Química Geral", "Estatística", "Anatomia", "Fisiologia", "Bioquímica",
    "Direito Civil", "Direito Penal", "Direito Constitucional", "Contabilidade", "Microeconomia", "Macroeconomia",
    "Programação", "Estruturas de Dados", "Banco de Dados", "Redes de Computadores", "Resistência dos Materiais",
    "Mecânica dos Fluidos", "Termodinâmica", "Psicologia do Desenvolvimento", "Didática", "Farmacologia",
    "Patologia", "Histologia", "Genética", "Microbiologia", "Marketing", "Gestão de Projetos", "Metodologia Científica",
    "Sociologia", "Filosofia", "Português Instrumental", "Inglês Técnico", "Desenho Técnico", "Topografia",
    "Hidráulica", "Eletricidade", "Circuitos Elétricos",
)
# fmt: on
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII")
SIGNUP_SOURCES = (("Facebook", 40), ("Google", 25), ("Email", 25), ("Other", 7), ("Twitter", 3))
PLANS = (("Mensal", 60), ("Anual", 20), ("Semestral", 15), ("Trimestral", 5))
USER_TYPES = (("CoreUser", 30), ("CasualUser", 40), ("OccasionalUser", 15), ("PremiumUser", 7), ("ChurnedUser", 8))
CLIENT_WEIGHTS = (("Website", 45), ("Webapp", 15), ("Android", 30), ("iOS", 10))

# (country, weight per 100_000 sessions, ((region, city), ...)); br locations come from STATES.
FOREIGN = (
    ("us", 1400, (("CA", "Los Angeles"), ("FL", "Miami"), ("NY", "New York"), ("MA", "Boston"))),
    ("pt", 1000, (("11", "Lisboa"), ("13", "Porto"), ("06", "Coimbra"))),
    ("ar", 600, (("C", "Buenos Aires"), ("X", "Córdoba"))),
    ("mx", 35, (("CMX", "Ciudad de México"),)),
    ("es", 30, (("MD", "Madrid"), ("CT", "Barcelona"))),
    ("de", 25, (("BE", "Berlin"),)),
    ("fr", 25, (("IDF", "Paris"),)),
    ("gb", 20, (("ENG", "London"),)),
    ("co", 20, (("DC", "Bogotá"),)),
    ("cl", 20, (("RM", "Santiago"),)),
    ("py", 15, (("ASU", "Asunción"),)),
    ("uy", 15, (("MO", "Montevideo"),)),
    ("ao", 15, (("LUA", "Luanda"),)),
    ("it", 12, (("RM", "Roma"),)),
    ("ca", 12, (("ON", "Toronto"),)),
    ("jp", 8, (("13", "Tokyo"),)),
)
BR_WEIGHT = 100_000 - sum(w for _, w, _ in FOREIGN) - 300  # 300: no country at all

WEB_PLATFORMS = (("Windows10", "Win32"), ("Windows7", "Win32"), ("MacOSX", "MacIntel"), ("Linux", "Linux x86_64"))
WEB_BROWSERS = ("Chrome62", "Chrome61", "Firefox56", "Firefox57", "Safari11", "Edge16", "Opera48")
ANDROID_MODELS = ("SM-G531H", "Moto G (5)", "SM-J500M", "LG-K430", "Moto G (4)", "SM-G570M")
ANDROID_OS = ("7.0", "6.0.1", "8.0.0", "5.1.1")
IOS_MODELS = ("iPhone9,1", "iPhone8,1", "iPhone7,2", "iPad6,11")
IOS_OS = ("11.1", "11.0.3", "10.3.3")
CARRIERS = ("TelefonicaBrasilS.a.", "ClaroS.A.", "TIMCelularS.A.", "OiS.A.", "NETServiçosdeComunicaçãoS.A.")
MOBILE_CARRIERS = ("Vivo", "Claro", "TIM", "Oi", "Nextel")
CAMPAIGNS = (
    ("blackfriday2017", "cpc", "google"),
    ("enem2017", "social", "facebook"),
    ("newsletter", "email", "mailchimp"),
)
PAGE_CATEGORIES = (
    ("busca", 25),
    ("arquivo", 25),
    ("disciplina", 15),
    ("home", 10),
    ("perfil", 6),
    ("materiais", 6),
    ("exercicios", 5),
    ("premium", 3),
    ("login", 3),
    ("cadastro", 2),
)
# fmt: off
SLUG_WORDS = ("resumo", "lista", "exercicios", "prova", "apostila", "trabalho", "calculo", "fisica", "direito",
              "anatomia", "estudos-dirigidos", "questoes", "gabarito", "mapa-mental", "slides", "introducao")
# fmt: on

NOT_JSON = (
    "this is not json",
    "<html><body>502 Bad Gateway</body></html>",
    "at=2017-11-16 02:10:20 name=PageView",
    "{unquoted: keys, at: 2017-11-16}",
)
JSON_SCALARS = ("42", '"PageView"', "null", "true", "3.14")
BAD_AT = ("not-a-date", "2017-13-45 99:99:99", "2017-11-31 10:00:00", "16/11/2017 25:61")
BLANKS = ("", "   ", "\t", " \t ")


def _j(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _weighted(rng: random.Random, items: Sequence[Any], cum: Sequence[float]) -> Any:
    return items[bisect_right(cum, rng.random() * cum[-1])]


def _table(pairs: Sequence[tuple[Any, float]]) -> tuple[list[Any], list[float]]:
    items = [p[0] for p in pairs]
    return items, list(accumulate(p[1] for p in pairs))


def _ts(dt: datetime, frac: int) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S") + ("." + "0" * frac if frac else "")


def _rand_dt(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


def _n(size: int, rate: float, minimum: int = 1) -> int:
    return max(minimum, int(size * rate))


def delivery_names(deliveries: int) -> list[str]:
    """Delivery folder names: consecutive days from 2017-11-16, the last one (of several) as a timestamp."""
    names = [(FIRST_DELIVERY + timedelta(days=k)).isoformat() for k in range(deliveries)]
    if deliveries > 1:
        names[-1] += LAST_DELIVERY_TIME
    return names


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def _dump_array(records: list[dict]) -> str:
    if not records:
        return "[]\n"
    return "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n"


# --------------------------------------------------------------------------------------------------
# Transactional model
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Student:
    """A student of the transactional model, as the next export shows it."""

    id: str
    registered: str  # RegisteredDate as delivered
    state: tuple  # an entry of STATES: (code, name, weight, cities)
    state_as_name: bool  # State delivered as the state's name instead of its code
    city: str
    univ: int
    course: int
    signup: str
    user_type: str
    quirks: set[str] = field(default_factory=set)  # how the export garbles this student's record


class _World:
    """Mutable state of Base A, advanced one delivery at a time."""

    def __init__(self, rng: random.Random, students: int):
        self.rng = rng
        self.size = students
        self.state_items, self.state_cum = _table([(s, s[2]) for s in STATES])
        self.signup_items, self.signup_cum = _table(SIGNUP_SOURCES)
        self.plan_items, self.plan_cum = _table(PLANS)
        self.utype_items, self.utype_cum = _table(USER_TYPES)
        self.client_items, self.client_cum = _table(CLIENT_WEIGHTS)

        combos = [f"{p} {city}" for p in UNIVERSITY_PREFIXES for s in STATES for city in s[3]]
        n_univ = max(3, min(len(combos), students // 20))
        self.universities = {i + 1: name for i, name in enumerate(rng.sample(combos, n_univ))}
        n_course = max(5, min(len(COURSES), students // 10))
        self.courses = {i + 1: name for i, name in enumerate(rng.sample(COURSES, n_course))}
        subj_names = [f"{b} {r}" for r in ROMAN for b in SUBJECT_BASES]
        n_subj = max(10, min(len(subj_names), students // 4))
        self.subjects = {i + 1: name for i, name in enumerate(subj_names[:n_subj])}
        self.univ_cum = list(accumulate(1.0 / (i + 1) ** 0.8 for i in range(n_univ)))
        self.course_cum = list(accumulate(1.0 / (i + 1) ** 0.7 for i in range(n_course)))
        n_str_course = max(1, n_course // 20)
        self.course_id_as_str = set(rng.sample(sorted(self.courses), n_str_course))

        self.students: dict[str, _Student] = {}
        self.present: set[str] = set()
        self.next_id = 1
        self.sessions: list[dict] = []
        self.subscriptions: list[dict] = []
        self.follows: list[dict] = []
        self.follow_pairs: set[tuple[str, int]] = set()

    # -- helpers
    def _location(self) -> tuple[Any, str]:
        st = _weighted(self.rng, self.state_items, self.state_cum)
        return st, self.rng.choice(st[3])

    def _new_student(self, registered: datetime) -> str:
        rng = self.rng
        sid = str(self.next_id)
        self.next_id += 1
        st, city = self._location()
        days_old = (datetime(2017, 11, 16) - registered).days
        self.students[sid] = _Student(  # arguments are evaluated in this order: it fixes the random draws
            id=sid,
            registered=_ts(registered, 3),
            state=st,
            state_as_name=rng.random() < 0.03,
            city=city,
            univ=bisect_right(self.univ_cum, rng.random() * self.univ_cum[-1]) + 1,
            course=bisect_right(self.course_cum, rng.random() * self.course_cum[-1]) + 1,
            signup=_weighted(rng, self.signup_items, self.signup_cum),
            user_type="NewUser" if days_old < 30 else _weighted(rng, self.utype_items, self.utype_cum),
        )
        self.present.add(sid)
        return sid

    def _quirk(self, ids: list[str], rate: float, name: str, exclude: Iterable[str] = ()) -> None:
        pool = [i for i in ids if not (self.students[i].quirks & set(exclude))]
        for sid in self.rng.sample(pool, min(len(pool), _n(len(ids), rate))):
            self.students[sid].quirks.add(name)

    def present_ids(self) -> list[str]:
        return sorted(self.present, key=int)

    def student_record(self, sid: str) -> dict:
        s = self.students[sid]
        q = s.quirks
        state_code, state_name = s.state[0], s.state[1]
        rec = {
            "Id": sid,
            "RegisteredDate": s.registered,
            "State": None if "null_state" in q else (state_name if s.state_as_name else state_code),
            "City": s.city,
            "UniversityId": str(s.univ) if "univ_str" in q else s.univ,
            "CourseId": str(s.course) if "course_str" in q else s.course,
            "SignupSource": None if "null_signup" in q else s.signup,
        }
        if "missing_city" in q:
            del rec["City"]
        return rec

    # -- deliveries
    def initial(self, window_start: datetime, window_end: datetime) -> dict:
        rng = self.rng
        reg_start = datetime(2016, 1, 1)
        for _ in range(self.size):
            # skewed toward recent registrations
            span = (window_end - reg_start).total_seconds()
            self._new_student(reg_start + timedelta(seconds=int(span * (1 - rng.random() ** 1.6))))
        ids = self.present_ids()
        self._student_quirks(ids)
        self._facts(
            ids, window_start, window_end, sessions=1.5, subs=0.08, follows=2.0, history_start=datetime(2017, 3, 1)
        )
        return {"initial_students": len(ids)}

    def _student_quirks(self, ids: list[str]) -> None:
        self._quirk(ids, 0.01, "missing_city")
        self._quirk(ids, 0.01, "null_state")
        self._quirk(ids, 0.01, "null_signup")
        self._quirk(ids, 0.03, "univ_str")
        self._quirk(ids, 0.03, "course_str")

    def advance(
        self, k: int, deliveries: int, window_start: datetime, window_end: datetime, returning: list[str]
    ) -> dict:
        """Apply the changes that delivery k shows; returns what changed."""
        rng = self.rng
        for sid in returning:
            self.present.add(sid)
        back = set(returning)
        stable = [i for i in self.present_ids() if i not in back]
        changes: dict = {}
        # students with quirks stay, so every export keeps every quirk
        plain = [i for i in stable if not self.students[i].quirks]
        # permanently deleted students
        deleted = sorted(rng.sample(plain, min(len(plain) // 4, _n(self.size, 0.005))), key=int)
        gone = set(deleted)
        plain = [i for i in plain if i not in gone]
        # temporarily absent (back in k + 1): only when a later delivery exists
        absent = []
        if k + 1 < deliveries:
            absent = sorted(rng.sample(plain, min(len(plain) // 4, _n(self.size, 0.01))), key=int)
        rest = [i for i in stable if i not in gone]
        for sid in deleted + absent:
            self.present.discard(sid)
        away = set(absent)
        staying = [i for i in rest if i not in away]
        movers = sorted(rng.sample(staying, min(len(staying) // 4, _n(self.size, 0.02, 2))), key=int)
        moved_state = []
        for n, sid in enumerate(movers):
            s = self.students[sid]
            if n % 3 == 0:  # change state too
                while True:
                    st, city = self._location()
                    if st[0] != s.state[0]:
                        break
                s.state, s.city = st, city
                moved_state.append(sid)
            else:
                options = [c for c in s.state[3] if c != s.city] or [c for st in STATES for c in st[3] if c != s.city]
                s.city = rng.choice(options)
        moving = set(movers)
        others = [i for i in staying if i not in moving]
        course_changed = sorted(rng.sample(others, min(len(others) // 4, _n(self.size, 0.015))), key=int)
        for sid in course_changed:
            s = self.students[sid]
            s.course = rng.choice([c for c in sorted(self.courses) if c != s.course])
        renamed: dict[str, Any] | None = None
        if k == 1:
            cid = sorted(self.courses)[min(1, len(self.courses) - 1)]
            renamed = {"id": cid, "old": self.courses[cid], "new": self.courses[cid] + " (Bacharelado)"}
            self.courses[cid] = renamed["new"]
        new = []
        for _ in range(_n(self.size, 0.03, 2)):
            new.append(self._new_student(_rand_dt(rng, window_start, window_end)))
        self._quirk(new, 0.05, "univ_str")
        self._quirk(new, 0.05, "missing_city")
        ids = self.present_ids()
        self._facts(ids, window_start, window_end, sessions=0.25, subs=0.01, follows=0.2, history_start=window_start)
        changes.update(
            new_students=new,
            deleted=deleted,
            absent=absent,
            returned=sorted(returning, key=int),
            moved=movers,
            moved_state=moved_state,
            course_changed=course_changed,
            renamed_course=renamed,
        )
        return changes

    def _facts(
        self,
        ids: list[str],
        window_start: datetime,
        window_end: datetime,
        sessions: float,
        subs: float,
        follows: float,
        history_start: datetime,
    ) -> None:
        rng = self.rng
        n_sessions = _n(self.size, sessions, 5)
        new_sessions = self._student_facts(
            n_sessions,
            ids,
            ("SessionStartTime", window_start, window_end),
            ("StudentClient", self.client_items, self.client_cum),
        )
        for r in rng.sample(new_sessions, _n(len(new_sessions), 0.005)):
            r["StudentClient"] = None
        self.sessions.extend(new_sessions)

        n_subs = _n(self.size, subs, 3)
        new_subs = self._student_facts(
            n_subs, ids, ("PaymentDate", history_start, window_end), ("PlanType", self.plan_items, self.plan_cum)
        )
        for r in rng.sample(new_subs, _n(len(new_subs), 0.01)):
            del r["PlanType"]
        self.subscriptions.extend(new_subs)

        new_follows = []
        subj_ids = sorted(self.subjects)
        for _ in range(_n(self.size, follows, 5)):
            sid, subj = rng.choice(ids), rng.choice(subj_ids)
            if (sid, subj) in self.follow_pairs:
                continue
            self.follow_pairs.add((sid, subj))
            new_follows.append(
                {"StudentId": sid, "SubjectId": subj, "FollowDate": _ts(_rand_dt(rng, history_start, window_end), 4)}
            )
        for r in rng.sample(new_follows, _n(len(new_follows), 0.02)):
            r["SubjectId"] = str(r["SubjectId"])
        for r in rng.sample(new_follows, _n(len(new_follows), 0.005)):
            r["FollowDate"] = None
        self.follows.extend(new_follows)

    def _student_facts(
        self, count: int, ids: list[str], time: tuple[str, datetime, datetime], kind: tuple[str, list[Any], list[float]]
    ) -> list[dict[str, Any]]:
        """`count` records of a random student, each with a time field drawn between two times (millisecond text)
        and then a field drawn by weight."""
        (time_field, start, end), (kind_field, items, cum) = time, kind
        rng = self.rng
        return [
            {
                "StudentId": rng.choice(ids),
                time_field: _ts(_rand_dt(rng, start, end), 3),
                kind_field: _weighted(rng, items, cum),
            }
            for _ in range(count)
        ]

    def export(self) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
        """Full export of every entity as of now, with a few exact duplicate records."""
        rng = self.rng
        present = self.present
        out = {
            "students": [self.student_record(i) for i in self.present_ids()],
            "courses": [
                {"Id": str(i) if i in self.course_id_as_str else i, "Name": n} for i, n in sorted(self.courses.items())
            ],
            "universities": [{"Id": i, "Name": n} for i, n in sorted(self.universities.items())],
            "subjects": [{"Id": i, "Name": n} for i, n in sorted(self.subjects.items())],
            "sessions": [r for r in self.sessions if r["StudentId"] in present],
            "subscriptions": [r for r in self.subscriptions if r["StudentId"] in present],
            "student_follow_subject": [r for r in self.follows if r["StudentId"] in present],
        }
        dups = {}
        for entity in (e.entity for e in EXPORTS if e.student_field):  # exports of learners' records
            rows = out[entity]
            picks = sorted(rng.sample(range(len(rows)), min(len(rows), _n(len(rows), 0.002))), reverse=True)
            for p in picks:  # descending, so earlier picks keep their index
                rows.insert(rng.randrange(p + 1, min(len(rows), p + 50) + 1), rows[p])
            dups[entity] = len(picks)
        return out, dups


# --------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)
_DAY_CACHE: dict[int, str] = {}


def _day(d: int) -> str:
    s = _DAY_CACHE.get(d)
    if s is None:
        s = _DAY_CACHE[d] = (date(1970, 1, 1) + timedelta(days=d)).isoformat()
    return s


def _at(t: int, mode: int) -> str:
    """Render epoch seconds t (UTC) in one of the observed `at` formats."""
    if mode == 3:  # ISO 8601 with a -03:00 offset: same instant in Brasília time
        t -= 10800
    d, s = divmod(t, 86400)
    hms = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
    if mode == 0:
        return _day(d) + " " + hms
    if mode == 1:
        return _day(d) + hms
    if mode == 2:
        return _day(d) + "T" + hms + "Z"
    return _day(d) + "T" + hms + "-03:00"


def _epoch(dt: datetime) -> int:
    return int((dt - _EPOCH).total_seconds())


@dataclass(frozen=True, slots=True)
class _Page:
    """A page of the site, with its page fields pre-rendered in both spellings."""

    glued: str  # "PageName":...,"PageCategory":...,"PageCategory1".."3"
    spaced: str  # "Page Name":...,"Page Category":...,"Page Category 1".."3"
    url: str  # the url as JSON text
    category: str
    weight: int  # how often it is viewed, relative to the others


@dataclass(frozen=True, slots=True)
class _Visitor:
    """A known student as page views show them: what each event of theirs carries."""

    student_id: str
    state: str | None  # UF code; None for an id no export knows
    city: str | None
    university: str | None  # custom_1
    course: str | None  # custom_2
    user_type: str  # custom_4


@dataclass(slots=True)
class _Session:
    """One browsing session, drawn once: its fixed JSON fragments and where its next page view stands."""

    at: int  # epoch seconds of the next page view
    remaining: int  # page views still to come
    head: str  # the fields before `nth`, rendered, ending in `,"nth":`
    tail: str  # the fields between `nth` and the page fields, rendered
    spaced: bool  # page fields spelled with spaces (`Page Name`) rather than glued (`PageName`)
    last_url_key: str  # `,"Last Accessed Url":` or `,"LastAccessedUrl":`
    nth: int
    last_url: str  # JSON of the previous page's url
    first_page: int  # index of the first page in the pages table; -1 once it was viewed
    late: bool  # dated before its delivery's window
    anonymous: bool
    country: str | None


@dataclass(slots=True)  # not frozen: a frozen dataclass is slower to build, and one is built per event
class _Event:
    """One page view: its line is '{"at":"' + at + '",' + rest."""

    at: str
    rest: str
    late: bool
    anonymous: bool
    country: str | None
    epoch: int  # the `at` instant, epoch seconds UTC


class _EventFactory:
    """Builds event lines from pre-rendered JSON fragments; one instance per delivery."""

    POOL = 16

    def __init__(
        self, rng: random.Random, world: _World, window_start: datetime, window_end: datetime, pages: list[_Page]
    ):
        self.rng = rng
        self.ws, self.we = _epoch(window_start), _epoch(window_end)
        self.pages = pages
        self.page_cum = pages_cum = list(accumulate(p.weight for p in pages))
        self.page_total = pages_cum[-1]
        students = []
        for sid in world.present_ids():
            s = world.students[sid]
            students.append(
                _Visitor(
                    sid, s.state[0], s.city, world.universities.get(s.univ), world.courses.get(s.course), s.user_type
                )
            )
        self.students = students
        self.max_id = world.next_id
        self.state_items, self.state_cum = world.state_items, world.state_cum
        self.client_items, self.client_cum = world.client_items, world.client_cum
        countries = [("br", BR_WEIGHT, None), (None, 300, None)] + [(c, w, locs) for c, w, locs in FOREIGN]
        self.country_items = [(c, locs) for c, _, locs in countries]
        self.country_cum = list(accumulate(w for _, w, _ in countries))
        self.active: list[_Session] = []
        self.sessions_started = 0
        self.late = 0
        self.anonymous = 0
        self.countries: dict[str, int] = {}
        self.countries_november: dict[str, int] = {}
        self.first_format: int | None = None

    def _session(self) -> _Session:
        rng = self.rng
        r = rng.random
        n = self.sessions_started
        self.sessions_started += 1
        late = n == 1 or r() < 0.01
        orphan = n == 5
        anonymous = n == 3 or (not orphan and r() < 0.12)
        orphan = orphan or (not anonymous and r() < 0.004)
        if late:
            start = rng.randrange(self.ws - 5 * 86400, self.ws - 3 * 3600)
        else:
            start = rng.randrange(self.ws, self.we - 3 * 3600)
        length = 1 + min(29, int(math.log(1 - r()) / math.log(0.8)))
        client = _weighted(rng, self.client_items, self.client_cum)
        country, locs = _weighted(rng, self.country_items, self.country_cum)
        student = None
        if not anonymous:
            if orphan:
                student = _Visitor(
                    str(self.max_id + 1_000_000 + rng.randrange(1_000_000)), None, None, None, None, "CasualUser"
                )
            else:
                student = self.students[int(len(self.students) * r() ** 1.7)]
        if country == "br":
            if student is not None and student.state is not None and r() < 0.85:
                region, city = student.state, student.city
            else:
                st = _weighted(rng, self.state_items, self.state_cum)
                region, city = st[0], rng.choice(st[3])
        elif country is None:
            region, city = None, None
        else:
            region, city = rng.choice(locs)
        spaced = r() < 0.3
        if client in ("Website", "Webapp"):
            platform, model = rng.choice(WEB_PLATFORMS)
            browser, os_ver, carrier = rng.choice(WEB_BROWSERS), "", rng.choice(CARRIERS)
        elif client == "Android":
            platform, model, browser = "Android", rng.choice(ANDROID_MODELS), "AndroidApp"
            os_ver, carrier = rng.choice(ANDROID_OS), rng.choice(MOBILE_CARRIERS)
        else:
            platform, model, browser = "iOS", rng.choice(IOS_MODELS), "iOSApp"
            os_ver, carrier = rng.choice(IOS_OS), rng.choice(MOBILE_CARRIERS)
        install = "%032x" % rng.getrandbits(128)
        install = f"{install[:8]}-{install[8:12]}-{install[12:16]}-{install[16:20]}-{install[20:]}"
        first_page = self._page()
        head: dict[str, Any] = {"browser": browser}
        if carrier and r() > 0.05:
            head["carrier"] = carrier
        head["city_name"] = city if r() > 0.02 else None
        head["clv_total"] = rng.randrange(0, 600)
        if country is not None or r() < 0.5:
            head["country"] = country
        if student is not None:
            if student.university is not None:
                head["custom_1"] = student.university
            if student.course is not None:
                head["custom_2"] = student.course
        x = r()
        if x < 0.3:
            head["custom_3"] = rng.choice(("free", "premium", "trial"))
        elif x < 0.5:
            head["custom_3"] = None
        if student is not None:
            head["custom_4"] = student.user_type
        elif r() < 0.3:
            head["custom_4"] = None
        head["device_new"] = r() < 0.1
        head["first-accessed-page"] = self.pages[first_page].category
        head["install_uuid"] = install
        head["language"] = "pt" if r() < 0.9 else rng.choice(("pt-BR", "en", "es"))
        head["library_ver"] = rng.choice(("1.8.0", "1.9.3")) if spaced else rng.choice(("2.1.0", "2.3.4"))
        x = r()
        if x < 0.2:
            camp, med, src = rng.choice(CAMPAIGNS)
            head.update(marketing_campaign=camp, marketing_medium=med, marketing_source=src)
        elif x < 0.8:
            head.update(marketing_campaign=None, marketing_medium=None, marketing_source=None)
        head["model"] = model
        head["name"] = "PageView"
        tail = {"os_ver": os_ver, "platform": platform, "region": region}
        suuid = "%032x" % rng.getrandbits(128)
        tail["session_uuid"] = f"{suuid[:8]}-{suuid[8:12]}-{suuid[12:16]}-{suuid[16:20]}-{suuid[20:]}"
        if student is not None:
            tail["studentId_clientType"] = f"{student.student_id}@{client}"
        elif r() < 0.5:
            tail["studentId_clientType"] = None
        tail["type"] = "e"
        tail["user_type"] = "anonymous" if student is None else "known"
        tail["uuid"] = install
        last_key = ',"Last Accessed Url":' if spaced else ',"LastAccessedUrl":'
        return _Session(
            at=start,
            remaining=length,
            head=_j(head)[1:-1] + ',"nth":',
            tail="," + _j(tail)[1:-1] + ",",
            spaced=spaced,
            last_url_key=last_key,
            nth=rng.randrange(1, 200),
            last_url='"/"',
            first_page=first_page,
            late=late,
            anonymous=anonymous,
            country=country,
        )

    def _page(self) -> int:
        return bisect_right(self.page_cum, self.rng.random() * self.page_total)

    def next_event(self) -> _Event:
        """The next page view of one of the active sessions."""
        rng = self.rng
        active = self.active
        while len(active) < self.POOL:
            active.append(self._session())
        r = rng.random
        i = int(r() * self.POOL)
        s = active[i]
        page = s.first_page
        if page < 0:
            page = self._page()
        else:
            s.first_page = -1
        t = s.at
        x = r()
        if self.first_format is not None:
            mode, self.first_format = self.first_format, None
        else:
            mode = 0 if x < 0.72 else 1 if x < 0.92 else 2 if x < 0.96 else 3
        at = _at(t, mode)
        p = self.pages[page]
        rest = s.head + str(s.nth) + s.tail + (p.spaced if s.spaced else p.glued) + s.last_url_key + s.last_url + "}"
        s.last_url = p.url
        s.nth += 1
        s.at = t + 5 + int(r() * 295)
        s.remaining -= 1
        if s.remaining <= 0:
            active[i] = active[-1]
            active.pop()
        return _Event(at, rest, s.late, s.anonymous, s.country, t)

    def fresh(self) -> str:
        event = self.next_event()
        if event.late:
            self.late += 1
        if event.anonymous:
            self.anonymous += 1
        key = event.country or ""
        self.countries[key] = self.countries.get(key, 0) + 1
        if _NOV_START <= event.epoch < _DEC_START:
            self.countries_november[key] = self.countries_november.get(key, 0) + 1
        return '{"at":"' + event.at + '",' + event.rest


_NOV_START = _epoch(datetime(2017, 11, 1))
_DEC_START = _epoch(datetime(2017, 12, 1))


def _build_pages(rng: random.Random, n: int = 400) -> list[_Page]:
    cats, cum = _table(PAGE_CATEGORIES)
    pages = []
    for i in range(n):
        cat = _weighted(rng, cats, cum)
        slug = "-".join(rng.sample(SLUG_WORDS, 2))
        num = rng.randrange(1000, 999999)
        if cat == "busca":
            url, c2 = f"/busca?disciplina={num}&tipo={rng.randrange(1, 6)}", "Undefined"
        elif cat == "arquivo":
            url, c2 = f"/arquivo/{num}/{slug}", rng.choice(("resumo", "exercicio", "prova", "Undefined"))
        elif cat == "disciplina":
            url, c2 = f"/disciplina/{slug}-{rng.choice(ROMAN).lower()}", "Undefined"
        elif cat == "home":
            url, c2 = "/" if i % 2 else "/home", "Undefined"
        else:
            url, c2 = f"/{cat}/{slug}", "Undefined"
        uj, cj, c2j, und = _j(url), _j(cat), _j(c2), _j("Undefined")
        camel = f'"PageName":{uj},"PageCategory":{cj},"PageCategory1":{cj},"PageCategory2":{c2j},"PageCategory3":{und}'
        spaced = (
            f'"Page Name":{uj},"Page Category":{cj},"Page Category 1":{cj},'
            f'"Page Category 2":{c2j},"Page Category 3":{und}'
        )
        weight = 1 + int(50 / (1 + i))
        pages.append(_Page(camel, spaced, uj, cat, weight))
    return pages


def _events_for_delivery(
    rng: random.Random, factory: _EventFactory, folder: Path, n_events: int, first: bool, global_pool: list[str]
) -> dict:
    parts = max(MIN_PARTS, math.ceil(n_events / MAX_LINES_PER_PART))
    base, extra = divmod(n_events, parts)
    fresh_per_part = [base + (1 if p < extra else 0) for p in range(parts)]

    malformed = {k: _n(n_events, 1 / 25_000) for k in MALFORMED_KINDS}
    blank = _n(n_events, 1 / 20_000)
    dups = {
        "within_file": _n(n_events, 1 / 500, 2),
        "cross_file": _n(n_events, 1 / 1000),
        "cross_delivery": 0 if first else _n(n_events, 1 / 1000),
    }
    plan: list[list[str]] = [[] for _ in range(parts)]
    kind: str | None
    for kind, count in list(malformed.items()) + [("blank", blank)] + list(dups.items()):
        for _ in range(count):
            lo = 1 if kind == "cross_file" else 0
            plan[rng.randrange(lo, parts)].append(kind)

    written = set()
    delivery_pool: list[str] = []
    lines_total = 0
    files = []
    counters = {
        "bad_at": 0,
        "not_json": 0,
        "json_array": 0,
        "json_scalar": 0,
        "missing_at": 0,
        "truncated_json": 0,
        "blank": 0,
    }
    for p in range(parts):
        name = f"part-{p:05d}.json"
        written.add(name)
        files.append(name)
        eol = "\r\n" if p == CRLF_PART else "\n"
        injections = plan[p]
        total = fresh_per_part[p] + len(injections)
        positions = sorted(rng.sample(range(1, total), len(injections)))
        rng.shuffle(injections)
        at_pos = dict(zip(positions, injections))
        recent: deque[str] = deque(maxlen=64)
        sample: list[str] = []
        seen = 0
        factory.first_format = p % 4
        path = folder / name
        tmp = folder / ("." + name + ".tmp")
        buf: list[str] = []
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            for i in range(total):
                kind = at_pos.get(i)
                if kind is None:
                    line = factory.fresh()
                    recent.append(line)
                    seen += 1
                    if len(sample) < 64:
                        sample.append(line)
                    else:
                        j = int(rng.random() * seen)
                        if j < 64:
                            sample[j] = line
                elif kind == "within_file":
                    line = recent[rng.randrange(len(recent))]
                elif kind == "cross_file":
                    line = delivery_pool[rng.randrange(len(delivery_pool))]
                elif kind == "cross_delivery":
                    line = global_pool[rng.randrange(len(global_pool))]
                else:
                    c = counters[kind]
                    counters[kind] = c + 1
                    if kind == "blank":
                        line = BLANKS[c % len(BLANKS)]
                    elif kind == "not_json":
                        line = NOT_JSON[c % len(NOT_JSON)]
                    elif kind == "json_scalar":
                        line = JSON_SCALARS[c % len(JSON_SCALARS)]
                    else:
                        event = factory.next_event()
                        at, rest = event.at, event.rest
                        if kind == "truncated_json":
                            full = '{"at":"' + at + '",' + rest
                            line = full[: rng.randrange(10, len(full) - 5)]
                        elif kind == "json_array":
                            line = "[" + '{"at":"' + at + '",' + rest + "]" if c % 2 == 0 else "[1,2,3]"
                        elif kind == "missing_at":
                            line = "{" + rest if c % 2 == 0 else '{"at":null,' + rest
                        else:  # bad_at
                            line = '{"at":' + _j(BAD_AT[c % len(BAD_AT)]) + "," + rest
                buf.append(line)
                if len(buf) >= 256:
                    f.write(eol.join(buf))
                    f.write(eol)
                    buf.clear()
            if buf:
                f.write(eol.join(buf))
                f.write(eol)
        os.replace(tmp, path)
        lines_total += total
        delivery_pool.extend(sample)
    for stale in sorted(folder.glob("part-*.json")):
        if stale.name not in written:
            stale.unlink()
    return {
        "files": files,
        "crlf_file": files[CRLF_PART],
        "lines": lines_total,
        "events": n_events,
        "duplicates": dups,
        "malformed": malformed,
        "blank_lines": blank,
        "_pool": delivery_pool,
    }


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def generate(out: Path, seed: int = 7, students: int = 2000, events: int = 100_000, deliveries: int = 3) -> dict:
    """Write a synthetic source in the documented source layout; same arguments, same bytes. Returns a summary dict of
    what was written and injected."""
    if students < 20:
        raise ValueError("students must be at least 20")
    if deliveries < 1:
        raise ValueError("deliveries must be at least 1")
    out = Path(out)
    names = delivery_names(deliveries)
    world = _World(random.Random(seed * 1_000_003 + 1), students)
    pages = _build_pages(random.Random(seed * 1_000_003 + 2))

    weights = [15] + [1] * (deliveries - 1)
    per_delivery = [max(MIN_EVENTS_PER_DELIVERY, events * w // sum(weights)) for w in weights]
    per_delivery[0] = max(MIN_EVENTS_PER_DELIVERY, events - sum(per_delivery[1:]))

    summary: dict[str, Any] = {
        "out": str(out),
        "seed": seed,
        "students": students,
        "events": events,
        "deliveries": names,
        "transactional": {},
        "transactional_duplicates": {},
        "changes": {},
        "events_by_delivery": {},
    }
    global_pool: list[str] = []
    returning: list[str] = []
    for k, name in enumerate(names):
        day = FIRST_DELIVERY + timedelta(days=k)
        ws = _midnight(FIRST_WINDOW_START if k == 0 else day - timedelta(days=1))
        we = _midnight(day)
        if k == 0:
            changes = world.initial(ws, we)
        else:
            changes = world.advance(k, deliveries, ws, we, returning)
            returning = changes["absent"]
        tdir = out / "transactional" / name
        tdir.mkdir(parents=True, exist_ok=True)
        exports, dups = world.export()
        for entity in ENTITIES:
            _write_atomic(tdir / f"{entity}.json", _dump_array(exports[entity]))
        summary["transactional"][name] = {e: len(exports[e]) for e in ENTITIES}
        summary["transactional_duplicates"][name] = dups
        summary["changes"][name] = changes

        edir = out / "events" / name
        edir.mkdir(parents=True, exist_ok=True)
        erng = random.Random(seed * 1_000_003 + 100 + k)
        factory = _EventFactory(erng, world, ws, we, pages)
        info = _events_for_delivery(erng, factory, edir, per_delivery[k], k == 0, global_pool)
        pool = info.pop("_pool")
        global_pool.extend(pool)
        if len(global_pool) > 512:
            global_pool = erng.sample(global_pool, 512)
        info.update(
            window=[ws.isoformat(sep=" "), we.isoformat(sep=" ")],
            late_events=factory.late,
            anonymous_events=factory.anonymous,
            countries=dict(sorted(factory.countries.items())),
            countries_november=dict(sorted(factory.countries_november.items())),
        )
        summary["events_by_delivery"][name] = info

    ev = summary["events_by_delivery"].values()
    summary["totals"] = {
        "event_lines": sum(i["lines"] for i in ev),
        "events": sum(i["events"] for i in ev),
        "malformed": {k: sum(i["malformed"][k] for i in ev) for k in MALFORMED_KINDS},
        "blank_lines": sum(i["blank_lines"] for i in ev),
        "duplicates": {k: sum(i["duplicates"][k] for i in ev) for k in DUPLICATE_KINDS},
        "late_events": sum(i["late_events"] for i in ev),
        "anonymous_events": sum(i["anonymous_events"] for i in ev),
    }
    summary["event_lines"] = summary["totals"]["event_lines"]
    return summary
