{#- The SCD type 2 load of one dimension, rendered per table from its load spec
    (LOADS in lakehouse/warehouse/loads.py, from the catalogue);
    `lakehouse warehouse sql dim_<entity>` prints the result.
    table: dw.<table> and its stage tables stage.<table>_history and stage.<table>_version
    key: the business key; attributes: the versioned columns
    key_collation: the collation the key is sorted and partitioned under, or empty for the database's -#}
{%- macro column_list(names, indent) -%}
{{ names | join(",\n" ~ " " * indent) }}
{%- endmacro -%}
{%- set sort_key = key ~ (' collate "' ~ key_collation ~ '"' if key_collation else "") -%}
{%- set state = attributes + ["is_deleted"] -%}
-- dw.{{ table }}: {{ grain }}.
-- Built by replaying the staged deliveries in as-of order. stage.{{ table }}_history holds every gold history row
-- of the deliveries being applied: those not applied yet, plus any already applied delivery with a later as-of
-- (a late delivery rewinds the history to its as-of).

-- rewound: drop the versions opened at or after the first delivery being replayed
with replay as (
    select min(as_of) as replay_from
    from stage.{{ table }}_history
)

delete from dw.{{ table }} as d
using replay
where d.valid_from >= replay.replay_from;

-- reopened: the versions that were current at that point are current again
with replay as (
    select min(as_of) as replay_from
    from stage.{{ table }}_history
)

update dw.{{ table }} as d
set valid_to = null, is_current = true
from replay
where d.valid_to >= replay.replay_from;

-- versions: staged states that differ from the key's previous state (all attributes compared at once,
-- as one row value) start a new version
insert into stage.{{ table }}_version (
    {{ column_list([key] + state + ["valid_from", "valid_to"], 4) }}
)
with staged as (
    select distinct on ({{ sort_key }}, as_of)
        {{ column_list([key] + attributes, 8) }},
        coalesce(is_deleted, false) as is_deleted,
        as_of
    from stage.{{ table }}_history
    where {{ key }} is not null and as_of is not null
    order by
        {{ column_list([sort_key, "as_of", "is_deleted", "delivery"] + attributes, 8) }}
),

current_versions as (
    select
        {{ column_list([key] + state, 8) }},
        valid_from as as_of
    from dw.{{ table }}
    where is_current
),

timeline as (
    select
        staged.*,
        false as is_stored
    from staged
    union all
    select
        current_versions.*,
        true as is_stored
    from current_versions
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

changes as (
    select *
    from compared
    where
        not is_stored
        and (
            previous_as_of is null
            or row(
                {{ column_list(state, 16) }}
            ) is distinct from previous_state
        )
)

select
    {{ column_list([key] + state, 4) }},
    as_of as valid_from,
    lead(as_of) over (partition by {{ sort_key }} order by as_of) as valid_to
from changes;

-- closed: a current version replaced by a new one ends where the first new one starts
with first_changes as (
    select
        {{ key }},
        min(valid_from) as closed_at
    from stage.{{ table }}_version
    group by {{ key }}
)

update dw.{{ table }} as d
set valid_to = c.closed_at, is_current = false
from first_changes as c
where d.{{ key }} = c.{{ key }} and d.is_current;

-- inserted: the new versions
insert into dw.{{ table }} (
    {{ column_list([key] + state + ["valid_from", "valid_to", "is_current"], 4) }}
)
with new_versions as (
    select *
    from stage.{{ table }}_version
)

select
    {{ column_list([key] + state + ["valid_from", "valid_to"], 4) }},
    valid_to is null as is_current
from new_versions
order by {{ key }}, valid_from;
