-- dw.fact_session: one row per distinct session record, with the student version valid at the session start
-- (a session earlier than the student's first version gets that first version).

-- removed: the table is rebuilt from the staged gold rows
delete from dw.fact_session;

-- inserted: the staged sessions with their student surrogate key
insert into dw.fact_session (student_sk, student_id, session_start_at, client_type)
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

select student_sk, student_id, session_start_at, client_type
from resolved;
