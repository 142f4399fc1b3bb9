-- stage: unlogged tables for one load, filled with copy and emptied at the start of the next load.

create unlogged table if not exists stage.dim_student_history (
    student_id text,
    registered_at timestamptz,
    state text,
    city text,
    university_id integer,
    university_name text,
    course_id integer,
    course_name text,
    signup_source text,
    is_deleted boolean,
    as_of timestamptz,
    delivery text
);
create unlogged table if not exists stage.dim_student_version (
    student_id text,
    registered_at timestamptz,
    state text,
    city text,
    university_id integer,
    university_name text,
    course_id integer,
    course_name text,
    signup_source text,
    is_deleted boolean,
    valid_from timestamptz,
    valid_to timestamptz
);

create unlogged table if not exists stage.dim_course_history (
    course_id integer, course_name text, is_deleted boolean, as_of timestamptz, delivery text
);
create unlogged table if not exists stage.dim_course_version (
    course_id integer, course_name text, is_deleted boolean, valid_from timestamptz, valid_to timestamptz
);

create unlogged table if not exists stage.dim_university_history (
    university_id integer, university_name text, is_deleted boolean, as_of timestamptz, delivery text
);
create unlogged table if not exists stage.dim_university_version (
    university_id integer, university_name text, is_deleted boolean, valid_from timestamptz, valid_to timestamptz
);

create unlogged table if not exists stage.dim_subject_history (
    subject_id integer, subject_name text, is_deleted boolean, as_of timestamptz, delivery text
);
create unlogged table if not exists stage.dim_subject_version (
    subject_id integer, subject_name text, is_deleted boolean, valid_from timestamptz, valid_to timestamptz
);

create unlogged table if not exists stage.fact_session (
    student_id text, session_start_at timestamptz, client_type text
);
create unlogged table if not exists stage.fact_subscription (
    student_id text, payment_at timestamptz, plan_type text
);
create unlogged table if not exists stage.fact_subject_follow (
    student_id text, subject_id integer, followed_at timestamptz
);
create unlogged table if not exists stage.fact_page_view_daily (
    event_date date, student_id text, client_type text, country text,
    page_views bigint, first_event_at timestamptz, last_event_at timestamptz
);
