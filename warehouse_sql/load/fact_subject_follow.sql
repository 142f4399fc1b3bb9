-- dw.fact_subject_follow: one row per distinct follow, with the student and subject versions valid when it
-- happened (a follow earlier than a key's first version gets that first version).
-- The fact is brought to exactly the resolved rows, touching only what differs: rows are matched on their whole
-- value as text (`row(...)::text`: null-safe and hashable), so a row whose surrogate key changed is replaced.

-- resolved: the staged rows with their surrogate keys, as the fact must be after this load
create temporary table fact_subject_follow_resolved on commit drop as
with follows as (
    select distinct student_id, subject_id, followed_at
    from stage.fact_subject_follow
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

subject_versions as (
    select subject_sk, subject_id, valid_from, valid_to
    from dw.dim_subject
),

first_subject_versions as (
    select distinct on (subject_id) subject_sk, subject_id, valid_from
    from dw.dim_subject
    order by subject_id, valid_from
),

resolved as (
    select
        coalesce(sv.student_sk, sf.student_sk) as student_sk,
        coalesce(jv.subject_sk, jf.subject_sk) as subject_sk,
        f.student_id,
        f.subject_id,
        f.followed_at
    from follows as f
    left join student_versions as sv
        on sv.student_id = f.student_id
        and sv.valid_from <= f.followed_at
        and (sv.valid_to is null or f.followed_at < sv.valid_to)
    left join first_student_versions as sf
        on sf.student_id = f.student_id
        and f.followed_at < sf.valid_from
    left join subject_versions as jv
        on jv.subject_id = f.subject_id
        and jv.valid_from <= f.followed_at
        and (jv.valid_to is null or f.followed_at < jv.valid_to)
    left join first_subject_versions as jf
        on jf.subject_id = f.subject_id
        and f.followed_at < jf.valid_from
)

select
    student_sk, subject_sk, student_id, subject_id, followed_at,
    row(student_sk, subject_sk, student_id, subject_id, followed_at)::text as row_key
from resolved;

-- removed: rows that are no longer in gold, or whose values (surrogate keys included) changed
delete from dw.fact_subject_follow as f
where not exists (
    select
    from fact_subject_follow_resolved as r
    where r.row_key = row(f.student_sk, f.subject_sk, f.student_id, f.subject_id, f.followed_at)::text
);

-- inserted: rows that are new, or replace a removed one
insert into dw.fact_subject_follow (student_sk, subject_sk, student_id, subject_id, followed_at)
with missing as (
    select r.*
    from fact_subject_follow_resolved as r
    where not exists (
        select
        from dw.fact_subject_follow as f
        where row(f.student_sk, f.subject_sk, f.student_id, f.subject_id, f.followed_at)::text = r.row_key
    )
)

select student_sk, subject_sk, student_id, subject_id, followed_at
from missing;
