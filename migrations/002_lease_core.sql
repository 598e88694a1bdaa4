-- Store operations the lease core needs: what reconcile should run, the fence floors to re-seed
-- Redis with after it lost its data, the wanted state, and fenced status writes.

-- Reconcile pages through the devices that should run (desired_state = 'running'), by id.
create function wafleet_list_wanted_devices(p_after uuid, p_limit integer)
returns table (device_id uuid)
language sql stable as $$
  select id from devices
  where desired_state = 'running' and (p_after is null or id > p_after)
  order by id
  limit p_limit;
$$;

-- After Redis lost its data, fence counters are lifted to these epochs before anyone claims.
create function wafleet_list_lease_epochs(p_after uuid, p_limit integer)
returns table (device_id uuid, lease_epoch bigint)
language sql stable as $$
  select id, lease_epoch from devices
  where lease_epoch > 0 and (p_after is null or id > p_after)
  order by id
  limit p_limit;
$$;

create function wafleet_set_desired_state(p_device_id uuid, p_desired_state text) returns setof devices
language sql as $$
  update devices set desired_state = p_desired_state where id = p_device_id returning *;
$$;

-- Fenced like record_assignment: the observed status only changes under the current epoch or a
-- newer one, so a paused old owner cannot overwrite what the new owner reported.
create function wafleet_update_device_status(
  p_device_id uuid,
  p_status text,
  p_epoch bigint,
  p_error_message text
) returns boolean
language sql as $$
  with updated as (
    update devices
    set status = p_status,
        error_message = p_error_message,
        last_connected_at = case when p_status = 'connected' then now() else last_connected_at end
    where id = p_device_id and lease_epoch <= p_epoch
    returning 1
  )
  select exists (select 1 from updated);
$$;

-- Supabase: the new functions are the runtime's own, like those of 001.
do $$
declare
  f regprocedure;
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    for f in
      select p.oid::regprocedure
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'public'
        and p.proname in ('wafleet_list_wanted_devices', 'wafleet_list_lease_epochs',
                          'wafleet_set_desired_state', 'wafleet_update_device_status')
    loop
      execute format('revoke all on function %s from public, anon, authenticated', f);
      execute format('grant execute on function %s to service_role', f);
    end loop;
  end if;
end;
$$;
