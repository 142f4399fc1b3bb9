-- dw.dim_course: one row per course version (SCD type 2), built by replaying the staged deliveries in as-of order.
-- stage.dim_course_history holds every gold history row of the deliveries being applied: those not applied yet, plus
-- any already applied delivery with a later as-of (a late delivery rewinds the history to its as-of).

-- rewound: drop the versions opened at or after the first delivery being replayed
with replay as (
    select min(as_of) as replay_from
    from stage.dim_course_history
)

delete from dw.dim_course as d
using replay
where d.valid_from >= replay.replay_from;

-- reopened: the versions that were current at that point are current again
with replay as (
    select min(as_of) as replay_from
    from stage.dim_course_history
)

update dw.dim_course as d
set valid_to = null, is_current = true
from replay
where d.valid_to >= replay.replay_from;

-- versions: staged states that differ from the key's previous state (all attributes compared at once,
-- as one row value) start a new version
insert into stage.dim_course_version (
    course_id,
    course_name,
    is_deleted,
    valid_from,
    valid_to
)
with staged as (
    select distinct on (course_id, as_of)
        course_id,
        course_name,
        coalesce(is_deleted, false) as is_deleted,
        as_of
    from stage.dim_course_history
    where course_id is not null and as_of is not null
    order by course_id, as_of, is_deleted, delivery, course_name
),

current_versions as (
    select
        course_id,
        course_name,
        is_deleted,
        valid_from as as_of
    from dw.dim_course
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
        lag(row(course_name, is_deleted)) over by_key as previous_state
    from timeline
    window by_key as (partition by course_id order by as_of)
),

changes as (
    select *
    from compared
    where
        not is_stored
        and (previous_as_of is null or row(course_name, is_deleted) is distinct from previous_state)
)

select
    course_id,
    course_name,
    is_deleted,
    as_of as valid_from,
    lead(as_of) over (partition by course_id order by as_of) as valid_to
from changes;

-- closed: a current version replaced by a new one ends where the first new one starts
with first_changes as (
    select course_id, min(valid_from) as closed_at
    from stage.dim_course_version
    group by course_id
)

update dw.dim_course as d
set valid_to = c.closed_at, is_current = false
from first_changes as c
where d.course_id = c.course_id and d.is_current;

-- inserted: the new versions
insert into dw.dim_course (
    course_id,
    course_name,
    is_deleted,
    valid_from,
    valid_to,
    is_current
)
with new_versions as (
    select *
    from stage.dim_course_version
)

select
    course_id,
    course_name,
    is_deleted,
    valid_from,
    valid_to,
    valid_to is null as is_current
from new_versions
order by course_id, valid_from;
