"""Explicit Spark schemas of the raw shapes the catalogue describes, and the reference data silver conforms to."""

from __future__ import annotations

from pyspark.sql.types import StringType, StructField, StructType

from lakehouse import tables


def _strings(*names: str) -> StructType:
    return StructType([StructField(n, StringType(), True) for n in names])


# Every raw field is read as text (Spark keeps numbers/booleans/objects as their JSON text), then cast in silver:
# ids that arrive as strings or numbers, and any malformed value, take the same path.
PAGE_VIEW_RAW = _strings(*tables.EVENT_FIELDS)
ENTITY_RAW = {e.entity: _strings(*e.fields) for e in tables.EXPORTS}

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
