{#- The SCD type 2 load of one dimension, rendered per table from its load spec
    (LOADS in lakehouse/warehouse/loads.py, from the catalogue);
    `lakehouse warehouse sql dim_<entity>` prints the result.
    table: dw.<table> and its stage tables stage.<table>_history, _version and _changed
    key: the business key; attributes: the versioned columns
    key_collation: the collation the key is sorted and partitioned under, or empty for the database's -#}
{%- macro column_list(names, indent, prefix="") -%}
{{ prefix ~ names | join(",\n" ~ " " * indent ~ prefix) }}
{%- endmacro -%}
{%- macro same_version(a, b, indent) -%}
{%- set pad = " " * indent -%}
{{ a }}.{{ key }} = {{ b }}.{{ key }}
{{ pad }}and {{ a }}.valid_from = {{ b }}.valid_from
{{ pad }}and row(
{{ pad }}    {{ column_list(state, indent + 4, a ~ ".") }}
{{ pad }}) is not distinct from row(
{{ pad }}    {{ column_list(state, indent + 4, b ~ ".") }}
{{ pad }})
{%- endmacro -%}
{%- set sort_key = key ~ (' collate "' ~ key_collation ~ '"' if key_collation else "") -%}
{%- set state = attributes + ["is_deleted"] -%}
-- {{ ("dw." ~ table ~ ": " ~ grain ~ ".") | wordwrap(117, wrapstring="\n-- ") }}
-- Restated from the replay point (stage.load_replay): stage.{{ table }}_history holds every gold history row with an
-- as-of at or after it. The versions gold gives from there (stage.{{ table }}_version) are compared with the stored
-- versions that reach it: one with the same key, start and state stays, surrogate key included, and only its end
-- may move; the others are removed, and the missing ones inserted. The history therefore depends only on gold,
-- whatever the order deliveries arrived in or were corrected. Static members (surrogate key 0: the erased member)
-- are never versioned.

-- versions: each key's stored version valid just before the replay point (its start kept), then every staged state
-- that differs from the key's previous one (all attributes compared at once, as one row value) starts a version
insert into stage.{{ table }}_version (
    {{ column_list([key] + state + ["valid_from", "valid_to"], 4) }}
)
with replay as (
    select replay_from
    from stage.load_replay
    where table_name = '{{ table }}'
),

staged as (
    select distinct on ({{ sort_key }}, as_of)
        {{ column_list([key] + attributes, 8) }},
        coalesce(is_deleted, false) as is_deleted,
        as_of
    from stage.{{ table }}_history
    where {{ key }} is not null and as_of is not null
    order by
        {{ column_list([sort_key, "as_of", "is_deleted", "delivery"] + attributes, 8) }}
),

before_replay as (
    select
        {{ column_list([key] + state, 8, "d.") }},
        d.valid_from as as_of
    from dw.{{ table }} as d
    inner join replay
        on
            d.valid_from < replay.replay_from
            and (d.valid_to is null or d.valid_to >= replay.replay_from)
    where d.{{ surrogate_key }} > 0
),

timeline as (
    select *
    from staged
    union all
    select *
    from before_replay
),

compared as (
    select
        *,
        lag(as_of) over by_key as previous_as_of,
        lag(row(
            {{ column_list(state, 12) }}
        )) over by_key as previous_state
    from timeline
    window by_key as (partition by {{ sort_key }} order by as_of)
),

starts as (
    select *
    from compared
    where
        previous_as_of is null
        or row(
            {{ column_list(state, 12) }}
        ) is distinct from previous_state
)

select
    {{ column_list([key] + state, 4) }},
    as_of as valid_from,
    lead(as_of) over (partition by {{ sort_key }} order by as_of) as valid_to
from starts;

-- changed: the keys with a stored version that is no longer wanted or a wanted version not stored yet (their facts
-- are re-pointed)
insert into stage.{{ table }}_changed ({{ key }})
with replay as (
    select replay_from
    from stage.load_replay
    where table_name = '{{ table }}'
),

stored as (
    select d.*
    from dw.{{ table }} as d
    inner join replay on d.valid_to is null or d.valid_to >= replay.replay_from
    where d.{{ surrogate_key }} > 0
),

wanted as (
    select *
    from stage.{{ table }}_version
),

unwanted as (
    select s.{{ key }}
    from stored as s
    where not exists (
        select
        from wanted as w
        where
            {{ same_version("w", "s", 12) }}
    )
),

missing as (
    select w.{{ key }}
    from wanted as w
    where not exists (
        select
        from stored as s
        where
            {{ same_version("s", "w", 12) }}
    )
)

select {{ key }}
from unwanted
union
select {{ key }}
from missing;

-- removed: the stored versions reaching the replay point that gold no longer gives
with replay as (
    select replay_from
    from stage.load_replay
    where table_name = '{{ table }}'
)

delete from dw.{{ table }} as d
using replay
where
    d.{{ surrogate_key }} > 0
    and (d.valid_to is null or d.valid_to >= replay.replay_from)
    and not exists (
        select
        from stage.{{ table }}_version as w
        where
            {{ same_version("w", "d", 12) }}
    );

-- closed: a kept version whose end moved (closed by a new version, or reopened when a later one went)
update dw.{{ table }} as d
set valid_to = w.valid_to, is_current = w.valid_to is null
from stage.{{ table }}_version as w
where
    {{ same_version("w", "d", 4) }}
    and d.valid_to is distinct from w.valid_to;

-- inserted: the wanted versions not stored yet
insert into dw.{{ table }} (
    {{ column_list([key] + state + ["valid_from", "valid_to", "is_current"], 4) }}
)
with missing as (
    select w.*
    from stage.{{ table }}_version as w
    where not exists (
        select
        from dw.{{ table }} as d
        where
            {{ same_version("d", "w", 12) }}
    )
)

select
    {{ column_list([key] + state + ["valid_from", "valid_to"], 4) }},
    valid_to is null as is_current
from missing
order by {{ key }}, valid_from;
