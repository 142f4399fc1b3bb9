-- dw.dim_university: one row per university version (SCD type 2), built by replaying the staged deliveries in as-of order.
-- stage.dim_university_history holds every gold history row of the deliveries being applied: those not applied yet, plus
-- any already applied delivery with a later as-of (a late delivery rewinds the history to its as-of).

-- rewound: drop the versions opened at or after the first delivery being replayed
with replay as (
    select min(as_of) as replay_from
    from stage.dim_university_history
)

delete from dw.dim_university as d
using replay
where d.valid_from >= replay.replay_from;

-- reopened: the versions that were current at that point are current again
with replay as (
    select min(as_of) as replay_from
    from stage.dim_university_history
)

update dw.dim_university as d
set valid_to = null, is_current = true
from replay
where d.valid_to >= replay.replay_from;

-- versions: staged states that differ from the key's previous state (all attributes compared at once,
-- as one row value) start a new version
insert into stage.dim_university_version (
    university_id,
    university_name,
    is_deleted,
    valid_from,
    valid_to
)
with staged as (
    select distinct on (university_id, as_of)
        university_id,
        university_name,
        coalesce(is_deleted, false) as is_deleted,
        as_of
    from stage.dim_university_history
    where university_id is not null and as_of is not null
    order by university_id, as_of, is_deleted, delivery, university_name
),

current_versions as (
    select
        university_id,
        university_name,
        is_deleted,
        valid_from as as_of
    from dw.dim_university
    where is_current
),

timeline as (
    select staged.*, false as is_stored
    from staged
    union all
    select current_versions.*, true as is_stored
    from current_versions
),

compared as (
    select
        timeline.*,
        lag(as_of) over by_key as previous_as_of,
        lag(row(university_name, is_deleted)) over by_key as previous_state
    from timeline
    window by_key as (partition by university_id order by as_of)
),

changes as (
    select *
    from compared
    where
        not is_stored
        and (previous_as_of is null or row(university_name, is_deleted) is distinct from previous_state)
)

select
    university_id,
    university_name,
    is_deleted,
    as_of as valid_from,
    lead(as_of) over (partition by university_id order by as_of) as valid_to
from changes;

-- closed: a current version replaced by a new one ends where the first new one starts
with first_changes as (
    select university_id, min(valid_from) as closed_at
    from stage.dim_university_version
    group by university_id
)

update dw.dim_university as d
set valid_to = c.closed_at, is_current = false
from first_changes as c
where d.university_id = c.university_id and d.is_current;

-- inserted: the new versions
insert into dw.dim_university (
    university_id,
    university_name,
    is_deleted,
    valid_from,
    valid_to,
    is_current
)
with new_versions as (
    select *
    from stage.dim_university_version
)

select
    university_id,
    university_name,
    is_deleted,
    valid_from,
    valid_to,
    valid_to is null as is_current
from new_versions
order by university_id, valid_from;
