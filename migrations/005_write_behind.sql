-- Write-behind: the runtime's records (lease events, connection events, server logs, assignments,
-- observed status) reach the store through a BullMQ queue, in batches, possibly long after they
-- happened and possibly twice (a worker that dies after the commit but before BullMQ hears of it
-- leaves the batch to be applied again). So every appended record carries its own id, which makes
-- a second insert a no-op, and the time it happened, which becomes its created_at.

alter table server_logs add column record_id uuid;
alter table device_lease_events add column record_id uuid;
alter table device_connection_logs add column record_id uuid;
-- Rows written before this migration (or by hand) have no id; unique indexes allow many nulls.
create unique index server_logs_record_id_key on server_logs (record_id);
create unique index device_lease_events_record_id_key on device_lease_events (record_id);
create unique index device_connection_logs_record_id_key on device_connection_logs (record_id);

-- Applies one batch in order. A record the database refuses (a device deleted meanwhile, a value
-- a check constraint rejects) is counted and reported, never allowed to fail the batch: the queue
-- keeps a device's records in order, so a batch that can never apply would hold up every record
-- behind it. Assignments and status are fenced like wafleet_record_assignment: a record carrying
-- an older epoch than the device's changes nothing (counted as fenced).
--
-- p_records: a JSON array of objects with `kind` and, per kind:
--   lease_event       id, at, deviceId, serverId, eventType, epoch, details
--   connection_event  id, at, deviceId, serverId, eventType, details
--   server_log        id, at, serverId, level, event, message, details
--   assignment        at, deviceId, serverId, epoch
--   status            at, deviceId, status, epoch, errorMessage
-- Returns {applied, duplicate, fenced, rejected, errors: [{index, message}] (first 20)}.
create function wafleet_apply_records(p_records jsonb) returns jsonb
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
        when 'status' then
          update devices
          set status = r->>'status',
              error_message = r->>'errorMessage',
              last_connected_at = case when r->>'status' = 'connected' then happened else last_connected_at end
          where id = (r->>'deviceId')::uuid and lease_epoch <= (r->>'epoch')::bigint;
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else fenced := fenced + 1; end if;
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

-- Supabase: the runtime's own operations are for the service role only (as in 001-004). The
-- helper does it for any list of names, so later migrations call it instead of repeating this.
create function wafleet_restrict_to_service_role(p_names text[]) returns void
language plpgsql as $$
declare
  f regprocedure;
begin
  if not exists (select 1 from pg_namespace where nspname = 'auth') then
    return;
  end if;
  for f in
    select p.oid::regprocedure
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' and p.proname = any (p_names)
  loop
    execute format('revoke all on function %s from public, anon, authenticated', f);
    execute format('grant execute on function %s to service_role', f);
  end loop;
end;
$$;

select wafleet_restrict_to_service_role(array['wafleet_apply_records', 'wafleet_restrict_to_service_role']);
