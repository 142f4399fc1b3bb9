-- schemas, extensions and the read-only BI role; safe to re-apply.
create extension if not exists btree_gist;

create schema if not exists stage;
create schema if not exists dw;

do $$
begin
    if not exists (select from pg_roles where rolname = 'bi_reader') then
        create role bi_reader nologin;
    end if;
exception
    when duplicate_object or unique_violation then null;  -- created meanwhile by another database's migration
end
$$;

revoke all on schema stage from public;
revoke create on schema public from public;
grant usage on schema dw to bi_reader;
grant select on all tables in schema dw to bi_reader;
alter default privileges in schema dw grant select on tables to bi_reader;
