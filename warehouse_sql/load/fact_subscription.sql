-- dw.fact_subscription: one row per distinct payment, with the student version valid at the payment
-- (a payment earlier than the student's first version gets that first version).
-- The fact is brought to exactly the resolved rows, touching only what differs: rows are matched on their whole
-- value as text (`row(...)::text`: null-safe and hashable), so a row whose surrogate key changed is replaced.

-- resolved: the staged rows with their surrogate keys, as the fact must be after this load
create temporary table fact_subscription_resolved on commit drop as
with payments as (
    select distinct student_id, payment_at, plan_type
    from stage.fact_subscription
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
        s.payment_at,
        s.plan_type
    from payments as s
    left join student_versions as v
        on v.student_id = s.student_id
        and v.valid_from <= s.payment_at
        and (v.valid_to is null or s.payment_at < v.valid_to)
    left join first_student_versions as f
        on f.student_id = s.student_id
        and s.payment_at < f.valid_from
)

select
    student_sk, student_id, payment_at, plan_type,
    row(student_sk, student_id, payment_at, plan_type)::text as row_key
from resolved;

-- removed: rows that are no longer in gold, or whose values (surrogate keys included) changed
delete from dw.fact_subscription as f
where not exists (
    select
    from fact_subscription_resolved as r
    where r.row_key = row(f.student_sk, f.student_id, f.payment_at, f.plan_type)::text
);

-- inserted: rows that are new, or replace a removed one
insert into dw.fact_subscription (student_sk, student_id, payment_at, plan_type)
with missing as (
    select r.*
    from fact_subscription_resolved as r
    where not exists (
        select
        from dw.fact_subscription as f
        where row(f.student_sk, f.student_id, f.payment_at, f.plan_type)::text = r.row_key
    )
)

select student_sk, student_id, payment_at, plan_type
from missing;
