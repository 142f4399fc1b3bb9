-- facts for BI, each carrying the dimension surrogate keys valid at the fact's time.

create table if not exists dw.fact_session (
    student_sk bigint references dw.dim_student (student_sk) deferrable initially deferred,
    student_id text,
    session_start_at timestamptz,
    client_type text
);
create unique index if not exists fact_session_grain
    on dw.fact_session (student_id, session_start_at, client_type) nulls not distinct;
comment on table dw.fact_session is 'one row per distinct session record';

create table if not exists dw.fact_subscription (
    student_sk bigint references dw.dim_student (student_sk) deferrable initially deferred,
    student_id text,
    payment_at timestamptz,
    plan_type text
);
create unique index if not exists fact_subscription_grain
    on dw.fact_subscription (student_id, payment_at, plan_type) nulls not distinct;
comment on table dw.fact_subscription is 'one row per distinct payment';

create table if not exists dw.fact_subject_follow (
    student_sk bigint references dw.dim_student (student_sk) deferrable initially deferred,
    subject_sk bigint references dw.dim_subject (subject_sk) deferrable initially deferred,
    student_id text,
    subject_id integer,
    followed_at timestamptz
);
create unique index if not exists fact_subject_follow_grain
    on dw.fact_subject_follow (student_id, subject_id, followed_at) nulls not distinct;
comment on table dw.fact_subject_follow is 'one row per distinct follow of a subject by a student';

create table if not exists dw.fact_page_view_daily (
    event_date date not null,
    student_sk bigint references dw.dim_student (student_sk) deferrable initially deferred,
    student_id text,
    client_type text,
    country text,
    page_views bigint not null,
    first_event_at timestamptz not null,
    last_event_at timestamptz not null
);
create unique index if not exists fact_page_view_daily_grain
    on dw.fact_page_view_daily (event_date, student_id, client_type, country) nulls not distinct;
comment on table dw.fact_page_view_daily is 'one row per (day, student, client type, country); student null when anonymous';
