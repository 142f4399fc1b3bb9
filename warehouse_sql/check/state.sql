{#- The current state of one dw table as the drift check compares it with gold's (lakehouse/warehouse/drift.py
    computes gold's the same way in DuckDB): its rows, and the sum of a 60-bit hash of each row's text.
    table: dw.<table>
    state_columns: the columns compared, each with its PostgreSQL type
    surrogate_key: for an SCD2 dimension, its surrogate key (its current versions are compared, static members left
    out); empty for a table compared row for row -#}
{%- macro column_list(names, indent) -%}
{{ names | join(",\n" ~ " " * indent) }}
{%- endmacro -%}
{%- macro as_text(c) -%}
{%- if c.type == "timestamptz" -%}
to_char({{ c.name }} at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
{%- elif c.type == "date" -%}
to_char({{ c.name }}, 'YYYY-MM-DD')
{%- else -%}
{{ c.name }}::text
{%- endif -%}
{%- endmacro -%}
{%- set texts, names = [], [] -%}
{%- for c in state_columns -%}
{%- do texts.append("coalesce(" ~ as_text(c) ~ ", chr(30)) as " ~ c.name) -%}{%- do names.append(c.name) -%}
{%- endfor -%}
-- dw.{{ table }}: its rows and the hash of its state{{ " (its current versions)" if surrogate_key else "" }}
with current_rows as (
    select
        {{ column_list(texts, 8) }}
    from dw.{{ table }}
    {%- if surrogate_key %}
    where is_current and {{ surrogate_key }} > 0
    {%- endif %}
),

hashed as (
    select
        ('x' || left(md5(concat_ws(
            chr(31),
            {{ column_list(names, 12) }}
        )), 15))::bit(60)::bigint as row_hash
    from current_rows
)

select
    count(*) as row_count,
    coalesce(sum(row_hash), 0)::text as state_hash
from hashed
