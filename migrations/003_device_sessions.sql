-- Session snapshots: the durable copy of each device's Baileys auth state (creds and Signal
-- keys, serialised with Baileys' BufferJSON). Written behind by the device's lease holder and
-- fenced by epoch: a write carrying a lower epoch than the stored one changes nothing, so an old
-- owner's late snapshot can never overwrite the new owner's.

-- Whether the device_sessions row is a live session or a cleared one (logged out); a cleared row
-- stays as a tombstone that carries the epoch, so a stale save cannot bring the session back.
alter table device_sessions add column cleared boolean not null default false;

create function wafleet_save_session(p_device_id uuid, p_creds jsonb, p_keys jsonb, p_epoch bigint) returns boolean
language sql as $$
  with saved as (
    insert into device_sessions as s (device_id, creds, keys, epoch, cleared)
    select p_device_id, coalesce(p_creds, '{}'::jsonb), coalesce(p_keys, '{}'::jsonb), p_epoch, false
    where exists (select 1 from devices where id = p_device_id)
    on conflict (device_id) do update
      set creds = excluded.creds, keys = excluded.keys, epoch = excluded.epoch, cleared = false
      where s.epoch <= excluded.epoch
    returning 1
  )
  select exists (select 1 from saved);
$$;

create function wafleet_get_session(p_device_id uuid) returns setof device_sessions
language sql stable as $$
  select * from device_sessions where device_id = p_device_id;
$$;

create function wafleet_clear_session(p_device_id uuid, p_epoch bigint) returns boolean
language sql as $$
  with cleared as (
    insert into device_sessions as s (device_id, creds, keys, epoch, cleared)
    select p_device_id, '{}'::jsonb, '{}'::jsonb, p_epoch, true
    where exists (select 1 from devices where id = p_device_id)
    on conflict (device_id) do update
      set creds = '{}'::jsonb, keys = '{}'::jsonb, epoch = excluded.epoch, cleared = true
      where s.epoch <= excluded.epoch
    returning 1
  )
  select exists (select 1 from cleared);
$$;

do $$
declare
  f regprocedure;
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    for f in
      select p.oid::regprocedure
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'public'
        and p.proname in ('wafleet_save_session', 'wafleet_get_session', 'wafleet_clear_session')
    loop
      execute format('revoke all on function %s from public, anon, authenticated', f);
      execute format('grant execute on function %s to service_role', f);
    end loop;
  end if;
end;
$$;
