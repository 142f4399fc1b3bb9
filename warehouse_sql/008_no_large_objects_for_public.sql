-- Large objects are the one thing any role may create without a privilege: PUBLIC loses the functions that create
-- or write them, in this database. Only a superuser may change these built-in functions' grants; run by another
-- role, this migration leaves them and says so (a superuser can apply the same revokes by hand).
do $$
begin
    if (select rolsuper from pg_roles where rolname = current_user) then
        revoke execute on function
            pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer), pg_catalog.lo_from_bytea(oid, bytea),
            pg_catalog.lowrite(integer, bytea), pg_catalog.lo_put(oid, bigint, bytea),
            pg_catalog.lo_truncate(integer, integer), pg_catalog.lo_truncate64(integer, bigint),
            pg_catalog.lo_unlink(oid)
        from public;
    else
        raise notice 'not a superuser: PUBLIC keeps the large-object functions (lo_create, lowrite, ...)';
    end if;
end
$$;
