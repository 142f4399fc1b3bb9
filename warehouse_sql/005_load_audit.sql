-- what each load applied: gold version read, deliveries applied, row counts.

create sequence if not exists dw.load_id_seq;

create table if not exists dw.load_audit (
    load_id bigint not null,
    table_name text not null,
    gold_table text not null,
    gold_version bigint not null,
    deliveries text[] not null default '{}',
    rows_staged bigint not null default 0,
    rows_inserted bigint not null default 0,
    rows_closed bigint not null default 0,
    rows_removed bigint not null default 0,
    loaded_at timestamptz not null default now(),
    primary key (load_id, table_name)
);
comment on table dw.load_audit is 'one row per (load, target table) that a mirror applied';

create table if not exists dw.load_delivery (
    table_name text not null,
    delivery text not null,
    as_of timestamptz not null,
    load_id bigint not null,
    primary key (table_name, delivery, as_of)
);
comment on table dw.load_delivery is 'one row per (target table, delivery) applied to the dimension history';
