-- Every fenced write of a device's state (assignment, status) that reaches the store, with the
-- epoch it carried, who sent it, when it happened and whether it counted. The write-behind makes
-- these writes arrive late and sometimes twice, and the fence (lease_epoch <= epoch) is what
-- keeps a stale owner's late write from counting; this table is the evidence that it did, for an
-- operator asking "who set this status" and for the chaos run's checker (every write that
-- counted carried the newest token of its moment).

create table device_state_writes (
  id bigint generated always as identity primary key,
  device_id uuid not null references devices(id) on delete cascade,
  server_id text,
  kind text not null check (kind in ('assignment', 'status')),
  epoch bigint not null,
  status text,
  -- false: refused by the fence, the device already had a newer epoch
  applied boolean not null,
  happened_at timestamptz not null,
  applied_at timestamptz not null default clock_timestamp()
);
create index device_state_writes_device_idx on device_state_writes (device_id, id);

-- As in 005, with each assignment and status write audited in the same subtransaction (a write
-- the database refuses leaves no audit row either). Status records now name their server.
create or replace function wafleet_apply_records(p_records jsonb) returns jsonb
language plpgsql as $$
declare
  r jsonb;
  i integer := 0;
  n integer;
  happened timestamptz;
  applied integer := 0;
  duplicate integer := 0;
  fenced integer := 0;
  rejected integer := 0;
  errors jsonb := '[]'::jsonb;
begin
  for r in select value from jsonb_array_elements(p_records) loop
    begin
      happened := coalesce((r->>'at')::timestamptz, now());
      case r->>'kind'
        when 'lease_event' then
          insert into device_lease_events (record_id, device_id, server_id, event_type, epoch, details, created_at)
          values ((r->>'id')::uuid, (r->>'deviceId')::uuid, r->>'serverId', r->>'eventType', (r->>'epoch')::bigint,
                  coalesce(r->'details', '{}'::jsonb), happened)
          on conflict (record_id) do nothing;
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else duplicate := duplicate + 1; end if;
        when 'connection_event' then
          insert into device_connection_logs (record_id, device_id, server_id, event_type, details, created_at)
          values ((r->>'id')::uuid, (r->>'deviceId')::uuid, r->>'serverId', r->>'eventType',
                  coalesce(r->'details', '{}'::jsonb), happened)
          on conflict (record_id) do nothing;
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else duplicate := duplicate + 1; end if;
        when 'server_log' then
          insert into server_logs (record_id, server_id, level, event, message, details, created_at)
          values ((r->>'id')::uuid, r->>'serverId', coalesce(r->>'level', 'info'), r->>'event', coalesce(r->>'message', ''),
                  coalesce(r->'details', '{}'::jsonb), happened)
          on conflict (record_id) do nothing;
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else duplicate := duplicate + 1; end if;
        when 'assignment' then
          update devices set assigned_server_id = r->>'serverId', lease_epoch = (r->>'epoch')::bigint
          where id = (r->>'deviceId')::uuid and lease_epoch <= (r->>'epoch')::bigint;
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else fenced := fenced + 1; end if;
          insert into device_state_writes (device_id, server_id, kind, epoch, applied, happened_at)
          select id, r->>'serverId', 'assignment', (r->>'epoch')::bigint, n = 1, happened
          from devices where id = (r->>'deviceId')::uuid;
        when 'status' then
          update devices
          set status = r->>'status',
              error_message = r->>'errorMessage',
              last_connected_at = case when r->>'status' = 'connected' then happened else last_connected_at end
          where id = (r->>'deviceId')::uuid and lease_epoch <= (r->>'epoch')::bigint;
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else fenced := fenced + 1; end if;
          insert into device_state_writes (device_id, server_id, kind, epoch, status, applied, happened_at)
          select id, r->>'serverId', 'status', (r->>'epoch')::bigint, r->>'status', n = 1, happened
          from devices where id = (r->>'deviceId')::uuid;
        else
          raise exception 'unknown record kind %', coalesce(r->>'kind', '(none)') using errcode = '22023';
      end case;
    exception when others then
      rejected := rejected + 1;
      if jsonb_array_length(errors) < 20 then
        errors := errors || jsonb_build_array(jsonb_build_object('index', i, 'message', sqlerrm));
      end if;
    end;
    i := i + 1;
  end loop;
  return jsonb_build_object('applied', applied, 'duplicate', duplicate, 'fenced', fenced, 'rejected', rejected, 'errors', errors);
end;
$$;

do $$
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    alter table device_state_writes enable row level security;
    create policy device_state_writes_service_role_all on device_state_writes for all to service_role using (true) with check (true);
  end if;
end;
$$;

-- create or replace keeps 005's grants; said again so this file stands on its own.
select wafleet_restrict_to_service_role(array['wafleet_apply_records']);
