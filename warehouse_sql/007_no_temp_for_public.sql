-- bi_reader may create nothing anywhere, temporary tables included: PUBLIC loses TEMP on the warehouse database.
-- The role that runs the migrations (the mirror's) keeps TEMP explicitly; the database owner keeps it anyway.
do $$
begin
    execute format('revoke temporary on database %I from public', current_database());
    execute format('grant temporary on database %I to %I', current_database(), current_user);
end
$$;
