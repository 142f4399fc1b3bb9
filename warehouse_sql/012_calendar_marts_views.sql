-- What BI tools read beside the SCD2 dimensions and the facts: a calendar the facts join on their day, the case
-- study's marts as gold keeps them, and one view per dimension holding its current versions; safe to re-apply.

create table if not exists dw.dim_date (
    date date primary key,
    year integer not null,
    quarter integer not null,
    month integer not null,
    month_name text not null,
    week integer not null,
    weekday integer not null,
    weekday_name text not null,
    is_weekend boolean not null
);

-- each fact's day, referencing the calendar (checked at commit: the mirror loads both in one transaction)
alter table dw.fact_session add column if not exists session_date date;
alter table dw.fact_subscription add column if not exists payment_date date;
alter table dw.fact_subject_follow add column if not exists followed_date date;
alter table dw.fact_session drop constraint if exists fact_session_date_fkey;
alter table dw.fact_session add constraint fact_session_date_fkey
foreign key (session_date) references dw.dim_date (date) deferrable initially deferred;
alter table dw.fact_subscription drop constraint if exists fact_subscription_date_fkey;
alter table dw.fact_subscription add constraint fact_subscription_date_fkey
foreign key (payment_date) references dw.dim_date (date) deferrable initially deferred;
alter table dw.fact_subject_follow drop constraint if exists fact_subject_follow_date_fkey;
alter table dw.fact_subject_follow add constraint fact_subject_follow_date_fkey
foreign key (followed_date) references dw.dim_date (date) deferrable initially deferred;
alter table dw.fact_page_view_daily drop constraint if exists fact_page_view_daily_date_fkey;
alter table dw.fact_page_view_daily add constraint fact_page_view_daily_date_fkey
foreign key (event_date) references dw.dim_date (date) deferrable initially deferred;
create index if not exists fact_session_date on dw.fact_session (session_date);
create index if not exists fact_subscription_date on dw.fact_subscription (payment_date);
create index if not exists fact_subject_follow_date on dw.fact_subject_follow (followed_date);

-- the marts, row for row as gold keeps them
create table if not exists dw.mart_country_access (
    country text,
    month date,
    page_views bigint,
    students bigint
);
create unique index if not exists mart_country_access_grain
on dw.mart_country_access (country, month) nulls not distinct;

create table if not exists dw.mart_users_by_type (
    user_type text,
    page_views bigint,
    students bigint
);
create unique index if not exists mart_users_by_type_grain on dw.mart_users_by_type (user_type) nulls not distinct;

create table if not exists dw.mart_state_activity (
    state text,
    page_views bigint,
    students bigint
);
create unique index if not exists mart_state_activity_grain on dw.mart_state_activity (state) nulls not distinct;

create table if not exists dw.mart_daily_activity (
    event_date date references dw.dim_date (date) deferrable initially deferred,
    client_type text,
    page_views bigint,
    students bigint,
    sessions bigint
);
create unique index if not exists mart_daily_activity_grain
on dw.mart_daily_activity (event_date, client_type) nulls not distinct;

-- their stage tables
alter table stage.fact_session add column if not exists session_date date;
alter table stage.fact_subscription add column if not exists payment_date date;
alter table stage.fact_subject_follow add column if not exists followed_date date;
create unlogged table if not exists stage.dim_date (
    date date, year integer, quarter integer, month integer, month_name text, week integer, weekday integer,
    weekday_name text, is_weekend boolean
);
create unlogged table if not exists stage.mart_country_access (
    country text, month date, page_views bigint, students bigint
);
create unlogged table if not exists stage.mart_users_by_type (user_type text, page_views bigint, students bigint);
create unlogged table if not exists stage.mart_state_activity (state text, page_views bigint, students bigint);
create unlogged table if not exists stage.mart_daily_activity (
    event_date date, client_type text, page_views bigint, students bigint, sessions bigint
);

-- each dimension's current versions, under the name a person looks for
create or replace view dw.students as
select
    student_sk,
    student_id,
    registered_at,
    state,
    city,
    university_id,
    university_name,
    course_id,
    course_name,
    signup_source,
    is_deleted,
    valid_from as current_since
from dw.dim_student
where is_current;

create or replace view dw.courses as
select
    course_sk,
    course_id,
    course_name,
    is_deleted,
    valid_from as current_since
from dw.dim_course
where is_current;

create or replace view dw.universities as
select
    university_sk,
    university_id,
    university_name,
    is_deleted,
    valid_from as current_since
from dw.dim_university
where is_current;

create or replace view dw.subjects as
select
    subject_sk,
    subject_id,
    subject_name,
    is_deleted,
    valid_from as current_since
from dw.dim_subject
where is_current;

grant select on all tables in schema dw to bi_reader;
