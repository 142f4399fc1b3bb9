{#- The load of one fact, or of any table mirrored row for row (the calendar, the marts: no dimensions), rendered
    per table from its load spec (LOADS in lakehouse/warehouse/loads.py, from the catalogue);
    `lakehouse warehouse sql fact_<name>` prints the result.
    table: dw.<table>, staged in stage.<table>
    columns: the staged columns that make the grain (staged rows are distinct per grain)
    measures: (column, aggregate) pairs that combine the staged rows of one grain
    fact_time: the column whose time picks each dimension's version
    dimensions: the dimensions whose surrogate keys the fact carries, as entity and business key
    keys: the columns of the grain (one row of dw.<table> per value)
    changes: true when stage.<table> holds only the rows of the grains whose gold rows changed, listed in the
        temporary table <table>_changed: the rows of other grains are then left as they are -#}
{%- macro column_list(names, indent, prefix="") -%}
{{ prefix ~ names | join(",\n" ~ " " * indent ~ prefix) }}
{%- endmacro -%}
{%- macro version_joins(d) %}
    left join {{ d.entity }}_versions as {{ d.entity }}_at
        on
            s.{{ d.key }} = {{ d.entity }}_at.{{ d.key }}
            and s.{{ fact_time }} >= {{ d.entity }}_at.valid_from
            and ({{ d.entity }}_at.valid_to is null or s.{{ fact_time }} < {{ d.entity }}_at.valid_to)
    left join first_{{ d.entity }}_versions as {{ d.entity }}_first
        on
            s.{{ d.key }} = {{ d.entity }}_first.{{ d.key }}
            and s.{{ fact_time }} < {{ d.entity }}_first.valid_from
{%- endmacro -%}
{%- set measure_columns, aggregates = [], [] -%}
{%- for column, aggregate in measures -%}
{%- do measure_columns.append(column) -%}{%- do aggregates.append(aggregate ~ "(" ~ column ~ ") as " ~ column) -%}
{%- endfor -%}
{%- set surrogate_keys = [] -%}
{%- for d in dimensions -%}{%- do surrogate_keys.append(d.entity ~ "_sk") -%}{%- endfor -%}
{%- set stored = surrogate_keys + columns + measure_columns -%}
-- {{ ("dw." ~ table ~ ": " ~ grain ~ ".") | wordwrap(117, wrapstring="\n-- ") }}
{%- if dimensions %}
-- Each row carries the {{ dimensions | map(attribute="entity") | join(" and ") }} version valid at its {{ fact_time }}
-- (a row earlier than a key's first version gets that first version).
{%- endif %}
-- The table is brought to exactly the resolved rows, touching only what differs: rows are matched on their whole
-- value as text (`row(...)::text`: null-safe and hashable), so a row whose surrogate key changed is replaced.

-- resolved: the staged rows with their surrogate keys, as the fact must be after this load
create temporary table {{ table }}_resolved on commit drop as
with staged as (
    select
        {{ column_list(columns + aggregates, 8) }}
    from stage.{{ table }}
    group by {{ columns | join(", ") }}
),
{%- for d in dimensions %}

{{ d.entity }}_versions as (
    select
        {{ d.entity }}_sk,
        {{ d.key }},
        valid_from,
        valid_to
    from dw.dim_{{ d.entity }}
),

first_{{ d.entity }}_versions as (
    select distinct on ({{ d.key }})
        {{ d.entity }}_sk,
        {{ d.key }},
        valid_from
    from dw.dim_{{ d.entity }}
    order by {{ d.key }}, valid_from
),
{%- endfor %}

resolved as (
    select
        {%- for d in dimensions %}
        coalesce({{ d.entity }}_at.{{ d.entity }}_sk, {{ d.entity }}_first.{{ d.entity }}_sk) as {{ d.entity }}_sk,
        {%- endfor %}
        {{ column_list(columns + measure_columns, 8, "s.") }}
    from staged as s{% for d in dimensions %}{{ version_joins(d) }}{% endfor %}
)

select
    {{ column_list(stored, 4) }},
    row(
        {{ column_list(stored, 8) }}
    )::text as row_key
from resolved;

-- removed: rows that are no longer in gold, or whose values (surrogate keys included) changed
{%- if changes %}
-- (among the rows of the grains whose gold rows changed)
{%- endif %}
delete from dw.{{ table }} as f
where
    not exists (
        select
        from {{ table }}_resolved as r
        where r.row_key = row(
            {{ column_list(stored, 12, "f.") }}
        )::text
    )
    {%- if changes %}
    and row(
        {{ column_list(keys, 8, "f.") }}
    )::text in (
        select
            row(
                {{ column_list(keys, 16, "k.") }}
            )::text
        from {{ table }}_changed as k
    )
{%- endif %};

-- inserted: rows that are new, or replace a removed one
insert into dw.{{ table }} (
    {{ column_list(stored, 4) }}
)
with missing as (
    select r.*
    from {{ table }}_resolved as r
    where not exists (
        select
        from dw.{{ table }} as f
        where row(
            {{ column_list(stored, 12, "f.") }}
        )::text = r.row_key
    )
)

select
    {{ column_list(stored, 4) }}
from missing;
