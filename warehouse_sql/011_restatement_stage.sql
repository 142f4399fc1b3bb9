-- what a dimension's restatement needs in stage: the as-of its versions are restated from, and the keys whose
-- versions it removed or inserted (the facts of those keys are re-pointed).
create unlogged table if not exists stage.load_replay (
    table_name text primary key,
    replay_from timestamptz not null
);

create unlogged table if not exists stage.dim_student_changed (student_id text);
create unlogged table if not exists stage.dim_course_changed (course_id integer);
create unlogged table if not exists stage.dim_university_changed (university_id integer);
create unlogged table if not exists stage.dim_subject_changed (subject_id integer);
