-- dw.fact_session: one row per distinct session record, with the student version valid at the session start
-- (a session earlier than the student's first version gets that first version).
-- The fact is brought to exactly the resolved rows, touching only what differs: rows are matched on their whole
-- value as text (`row(...)::text`: null-safe and hashable), so a row whose surrogate key changed is replaced.

-- resolved: the staged rows with their surrogate keys, as the fact must be after this load
create temporary table fact_session_resolved on commit drop as
with sessions as (
    select distinct student_id, session_start_at, client_type
    from stage.fact_session
),

student_versions as (
    select student_sk, student_id, valid_from, valid_to
    from dw.dim_student
),

first_student_versions as (
    select distinct on (student_id) student_sk, student_id, valid_from
    from dw.dim_student
    order by student_id, valid_from
),

resolved as (
    select
        coalesce(v.student_sk, f.student_sk) as student_sk,
        s.student_id,
        s.session_start_at,
        s.client_type
    from sessions as s
    left join student_versions as v
        on v.student_id = s.student_id
        and v.valid_from <= s.session_start_at
        and (v.valid_to is null or s.session_start_at < v.valid_to)
    left join first_student_versions as f
        on f.student_id = s.student_id
        and s.session_start_at < f.valid_from
)

select
    student_sk, student_id, session_start_at, client_type,
    row(student_sk, student_id, session_start_at, client_type)::text as row_key
from resolved;

-- removed: rows that are no longer in gold, or whose values (surrogate keys included) changed
delete from dw.fact_session as f
where not exists (
    select
    from fact_session_resolved as r
    where r.row_key = row(f.student_sk, f.student_id, f.session_start_at, f.client_type)::text
);

-- inserted: rows that are new, or replace a removed one
insert into dw.fact_session (student_sk, student_id, session_start_at, client_type)
with missing as (
    select r.*
    from fact_session_resolved as r
    where not exists (
        select
        from dw.fact_session as f
        where row(f.student_sk, f.student_id, f.session_start_at, f.client_type)::text = r.row_key
    )
)

select student_sk, student_id, session_start_at, client_type
from missing;
