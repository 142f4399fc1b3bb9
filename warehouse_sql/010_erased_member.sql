-- The erased member of dim_student: facts whose student was erased (a learner's right to erasure) point to it,
-- so BI tells them apart from anonymous facts (no student ever, a null key). It has no attributes and is valid
-- forever; the dimension's load never stages its key, so never versions it.
insert into dw.dim_student (student_sk, student_id, is_deleted, valid_from, valid_to, is_current)
overriding system value
values (0, '(erased)', false, '-infinity', null, true)
on conflict do nothing;

comment on table dw.dim_student is
'one row per student version (SCD type 2); student_sk 0 is the erased member, student_id ''(erased)''';
