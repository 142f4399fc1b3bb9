{#- The re-pointing of one fact's surrogate keys after its dimensions changed and its gold rows did not, rendered per
    table from its load spec (LOADS in lakehouse/warehouse/loads.py, from the catalogue); one statement per
    dimension, run when that dimension's load changed versions; `lakehouse warehouse sql fact_<name>` prints it.
    table: dw.<table>
    fact_time: the column whose time picks each dimension's version
    dimensions: the dimensions whose surrogate keys the fact carries, as entity and business key -#}
{%- for d in dimensions %}
{%- if not loop.first %}

{% endif -%}
-- repointed_{{ d.entity }}: dw.{{ table }}'s rows of the keys whose dw.dim_{{ d.entity }} versions changed
-- (stage.dim_{{ d.entity }}_changed) get the version valid at their {{ fact_time }} (a row earlier than a key's
-- first version gets that first version; a key with no version left, a null)
with changed as (
    select distinct {{ d.key }}
    from stage.dim_{{ d.entity }}_changed
),

versions as (
    select
        v.{{ d.entity }}_sk,
        v.{{ d.key }},
        v.valid_from,
        v.valid_to
    from dw.dim_{{ d.entity }} as v
    inner join changed as c on v.{{ d.key }} = c.{{ d.key }}
),

first_versions as (
    select distinct on ({{ d.key }})
        {{ d.entity }}_sk,
        {{ d.key }},
        valid_from
    from versions
    order by {{ d.key }}, valid_from
),

resolved as (
    select
        f.ctid as row_id,
        coalesce({{ d.entity }}_at.{{ d.entity }}_sk, {{ d.entity }}_first.{{ d.entity }}_sk) as {{ d.entity }}_sk
    from dw.{{ table }} as f
    inner join changed as c on f.{{ d.key }} = c.{{ d.key }}
    left join versions as {{ d.entity }}_at
        on
            f.{{ d.key }} = {{ d.entity }}_at.{{ d.key }}
            and f.{{ fact_time }} >= {{ d.entity }}_at.valid_from
            and ({{ d.entity }}_at.valid_to is null or f.{{ fact_time }} < {{ d.entity }}_at.valid_to)
    left join first_versions as {{ d.entity }}_first
        on
            f.{{ d.key }} = {{ d.entity }}_first.{{ d.key }}
            and f.{{ fact_time }} < {{ d.entity }}_first.valid_from
)

update dw.{{ table }} as f
set {{ d.entity }}_sk = r.{{ d.entity }}_sk
from resolved as r
where f.ctid = r.row_id and f.{{ d.entity }}_sk is distinct from r.{{ d.entity }}_sk;
{%- endfor %}
