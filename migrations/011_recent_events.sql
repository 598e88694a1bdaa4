-- The restore after Redis lost its data (src/events/restore.ts) reads the recent events of many
-- devices in one call instead of one call per device: it runs before claims re-open, so each
-- round trip to the store is the whole fleet's recovery time.

-- For each of p_device_ids, up to p_per_device of its events created at or after p_since, oldest
-- first (sequence order is time order); by device, then sequence. A device with p_per_device of
-- them may have more: the caller pages through it with wafleet_list_events.
create function wafleet_list_recent_events(p_device_ids uuid[], p_since timestamptz, p_per_device integer)
returns setof inbound_events
language sql stable as $$
  select e.*
  from unnest(p_device_ids) as d(id)
  cross join lateral (
    select * from inbound_events x
    where x.device_id = d.id and x.created_at >= p_since
    order by x.sequence
    limit p_per_device
  ) e
  order by e.device_id, e.sequence;
$$;

select wafleet_restrict_to_service_role(array['wafleet_list_recent_events']);
