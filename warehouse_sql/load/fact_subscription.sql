-- dw.fact_subscription: one row per distinct payment, with the student version valid at the payment
-- (a payment earlier than the student's first version gets that first version).

-- removed: the table is rebuilt from the staged gold rows
delete from dw.fact_subscription;

-- inserted: the staged payments with their student surrogate key
insert into dw.fact_subscription (student_sk, student_id, payment_at, plan_type)
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

select student_sk, student_id, payment_at, plan_type
from resolved;
