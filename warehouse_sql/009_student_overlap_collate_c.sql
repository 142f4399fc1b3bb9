-- dim_student's no-overlap constraint compares student_id with collate "C": the same rule (text equality is
-- bytewise under any deterministic collation), cheaper to maintain than comparisons under the database's collation.
alter table dw.dim_student drop constraint if exists dim_student_no_overlap;
alter table dw.dim_student add constraint dim_student_no_overlap exclude using gist (
    hashtextextended(student_id, 0) with =,
    (student_id collate "C") with =,
    tstzrange(valid_from, valid_to) with &&
);
