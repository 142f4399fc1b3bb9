-- dw.fact_page_view_daily: one row per (event_date, student, client type, country), with the student version
-- valid at the day's first page view (earlier than the student's first version: that first version);
-- anonymous page views have a null student.
-- The fact is brought to exactly the resolved rows, touching only what differs: rows are matched on their whole
-- value as text (`row(...)::text`: null-safe and hashable), so a row whose surrogate key changed is replaced.

-- resolved: the staged rows with their surrogate keys, as the fact must be after this load
create temporary table fact_page_view_daily_resolved on commit drop as
with page_views as (
    select event_date, student_id, client_type, country, page_views, first_event_at, last_event_at
    from stage.fact_page_view_daily
),

daily as (
    select
        event_date,
        student_id,
        client_type,
        country,
        sum(page_views) as page_views,
        min(first_event_at) as first_event_at,
        max(last_event_at) as last_event_at
    from page_views
    group by event_date, student_id, client_type, country
),

student_versions as (
    select student_sk, student_id, valid_from, valid_to
    from dw.dim_student
),

first_student_versions as (
    select distinct on (student_id) student_sk, student_id, valid_from
    from dw.dim_student
    order by student_id, valid_from
),

resolved as (
    select
        d.event_date,
        coalesce(v.student_sk, f.student_sk) as student_sk,
        d.student_id,
        d.client_type,
        d.country,
        d.page_views,
        d.first_event_at,
        d.last_event_at
    from daily as d
    left join student_versions as v
        on v.student_id = d.student_id
        and v.valid_from <= d.first_event_at
        and (v.valid_to is null or d.first_event_at < v.valid_to)
    left join first_student_versions as f
        on f.student_id = d.student_id
        and d.first_event_at < f.valid_from
)

select
    event_date, student_sk, student_id, client_type, country, page_views, first_event_at, last_event_at,
    row(
        event_date, student_sk, student_id, client_type, country, page_views, first_event_at, last_event_at
    )::text as row_key
from resolved;

-- removed: rows that are no longer in gold, or whose values (surrogate keys included) changed
delete from dw.fact_page_view_daily as f
where not exists (
    select
    from fact_page_view_daily_resolved as r
    where r.row_key = row(
        f.event_date, f.student_sk, f.student_id, f.client_type, f.country, f.page_views, f.first_event_at,
        f.last_event_at
    )::text
);

-- inserted: rows that are new, or replace a removed one
insert into dw.fact_page_view_daily (
    event_date, student_sk, student_id, client_type, country, page_views, first_event_at, last_event_at
)
with missing as (
    select r.*
    from fact_page_view_daily_resolved as r
    where not exists (
        select
        from dw.fact_page_view_daily as f
        where row(
            f.event_date, f.student_sk, f.student_id, f.client_type, f.country, f.page_views, f.first_event_at,
            f.last_event_at
        )::text = r.row_key
    )
)

select event_date, student_sk, student_id, client_type, country, page_views, first_event_at, last_event_at
from missing;
