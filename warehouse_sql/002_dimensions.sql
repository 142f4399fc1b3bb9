-- SCD type 2 dimensions: one row per version of a business key; the database enforces the history's shape.

create table if not exists dw.dim_student (
    student_sk bigint generated always as identity primary key,
    student_id text not null,
    registered_at timestamptz,
    state text,
    city text,
    university_id integer,
    university_name text,
    course_id integer,
    course_name text,
    signup_source text,
    is_deleted boolean not null,
    valid_from timestamptz not null,
    valid_to timestamptz,
    is_current boolean not null,
    constraint dim_student_window check (valid_to is null or valid_from < valid_to),
    constraint dim_student_current check (is_current = (valid_to is null)),
    constraint dim_student_no_overlap exclude using gist (student_id with =, tstzrange(valid_from, valid_to) with &&)
);
create unique index if not exists dim_student_current_key on dw.dim_student (student_id) where is_current;
comment on table dw.dim_student is 'one row per student version (SCD type 2)';

create table if not exists dw.dim_course (
    course_sk bigint generated always as identity primary key,
    course_id integer not null,
    course_name text,
    is_deleted boolean not null,
    valid_from timestamptz not null,
    valid_to timestamptz,
    is_current boolean not null,
    constraint dim_course_window check (valid_to is null or valid_from < valid_to),
    constraint dim_course_current check (is_current = (valid_to is null)),
    constraint dim_course_no_overlap exclude using gist (course_id with =, tstzrange(valid_from, valid_to) with &&)
);
create unique index if not exists dim_course_current_key on dw.dim_course (course_id) where is_current;
comment on table dw.dim_course is 'one row per course version (SCD type 2)';

create table if not exists dw.dim_university (
    university_sk bigint generated always as identity primary key,
    university_id integer not null,
    university_name text,
    is_deleted boolean not null,
    valid_from timestamptz not null,
    valid_to timestamptz,
    is_current boolean not null,
    constraint dim_university_window check (valid_to is null or valid_from < valid_to),
    constraint dim_university_current check (is_current = (valid_to is null)),
    constraint dim_university_no_overlap exclude using gist (university_id with =, tstzrange(valid_from, valid_to) with &&)
);
create unique index if not exists dim_university_current_key on dw.dim_university (university_id) where is_current;
comment on table dw.dim_university is 'one row per university version (SCD type 2)';

create table if not exists dw.dim_subject (
    subject_sk bigint generated always as identity primary key,
    subject_id integer not null,
    subject_name text,
    is_deleted boolean not null,
    valid_from timestamptz not null,
    valid_to timestamptz,
    is_current boolean not null,
    constraint dim_subject_window check (valid_to is null or valid_from < valid_to),
    constraint dim_subject_current check (is_current = (valid_to is null)),
    constraint dim_subject_no_overlap exclude using gist (subject_id with =, tstzrange(valid_from, valid_to) with &&)
);
create unique index if not exists dim_subject_current_key on dw.dim_subject (subject_id) where is_current;
comment on table dw.dim_subject is 'one row per subject version (SCD type 2)';
