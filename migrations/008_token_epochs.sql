-- Fencing tokens unique across Redis incarnations (issue 15, item 8). The store's lease_epoch
-- advances only through write-behind records, and those wait in a queue in the same Redis, so
-- when Redis loses its data the newest tokens may never have reached the store. The fences are
-- then re-seeded below a token already handed out, the next claim gets that same token again, and
-- a paused old owner's buffered records carrying it passed the store's fence (lease_epoch <=
-- token) as if they were the new owner's. Two defences:
--
-- 1. Each re-seed takes a new incarnation epoch E from here, and Redis hands out no token below
--    E * 2^32 + 1 afterwards, so a token of one incarnation is never reused in a later one.
-- 2. Should a token still be granted twice (tokens from before this migration, a re-seed that
--    could not reach the store), the fence refuses an equal token from a server other than the
--    one that recorded it: the first of the two to reach the store keeps the token.

-- Incarnation epochs: never reused and never going down (nextval is not rolled back; a number a
-- failed call burnt is only a gap, and tokens jumping higher is harmless). The maximum keeps
-- E * 2^32 + (2^32 - 1) below 2^53, where Lua's and JavaScript's doubles stop counting exactly:
-- past it the call fails loudly instead of handing out tokens that could collide.
create sequence token_epoch_seq as bigint minvalue 1 maxvalue 2097151 start with 1 no cycle;

-- One row per epoch handed out, so an operator can see which Redis run and which server asked.
-- Several servers noticing the same reset each take one; only the highest matters.
create table token_epochs (
  epoch bigint primary key,
  redis_run_id text,
  server_id text,
  created_at timestamptz not null default clock_timestamp()
);

create function wafleet_next_token_epoch(p_redis_run_id text, p_server_id text) returns bigint
language sql as $$
  insert into token_epochs (epoch, redis_run_id, server_id)
  values (nextval('token_epoch_seq'), p_redis_run_id, p_server_id)
  returning epoch;
$$;

-- Which server recorded lease_epoch: with it the fence can tell a repeat of the owner's own
-- write (counts, so a replayed batch stays harmless) from another server's write with the same
-- token (refused). Not assigned_server_id: that one names whom the device is assigned to, and a
-- deleted server's row clears it. No foreign key for the same reason. Null: not known (written
-- before this migration without an assignment, or by an assignment to nobody); an equal token
-- then counts from anyone, as before.
alter table devices add column lease_epoch_server_id text;
update devices set lease_epoch_server_id = assigned_server_id where lease_epoch > 0;

-- The runtime writes assignments through wafleet_apply_records; this direct form is kept for the
-- Store API and fenced the same way, so both keep lease_epoch_server_id in step.
create or replace function wafleet_record_assignment(p_device_id uuid, p_server_id text, p_epoch bigint) returns boolean
language sql as $$
  with updated as (
    update devices set assigned_server_id = p_server_id, lease_epoch = p_epoch, lease_epoch_server_id = p_server_id
    where id = p_device_id
      and (lease_epoch < p_epoch
           or (lease_epoch = p_epoch and (lease_epoch_server_id is null or lease_epoch_server_id = p_server_id)))
    returning 1
  )
  select exists (select 1 from updated);
$$;

-- As in 007, with the fence of assignment and status: a write counts when its token is newer
-- than lease_epoch, or equal and sent by the server that recorded lease_epoch (or nobody knows
-- who did). Status writes still never move lease_epoch: only the owner's assignment does, so a
-- stale status arriving before the new owner's assignment cannot lock the new owner out.
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
          update devices
          set assigned_server_id = r->>'serverId', lease_epoch = (r->>'epoch')::bigint, lease_epoch_server_id = r->>'serverId'
          where id = (r->>'deviceId')::uuid
            and (lease_epoch < (r->>'epoch')::bigint
                 or (lease_epoch = (r->>'epoch')::bigint
                     and (lease_epoch_server_id is null or lease_epoch_server_id = r->>'serverId')));
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
          where id = (r->>'deviceId')::uuid
            and (lease_epoch < (r->>'epoch')::bigint
                 or (lease_epoch = (r->>'epoch')::bigint
                     and (lease_epoch_server_id is null or lease_epoch_server_id = r->>'serverId')));
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else fenced := fenced + 1; end if;
          insert into device_state_writes (device_id, server_id, kind, epoch, status, applied, happened_at)
          select id, r->>'serverId', 'status', (r->>'epoch')::bigint, r->>'status', n = 1, happened
          from devices where id = (r->>'deviceId')::uuid;
        when 'message' then
          if r->>'status' not in ('sent', 'failed') then
            raise exception 'a message record ends sent or failed, not %', coalesce(r->>'status', '(none)') using errcode = '22023';
          end if;
          update outbound_messages
          set status = r->>'status',
              finished_at = happened,
              wa_message_id = case when r->>'status' = 'sent' then r->>'waMessageId' else wa_message_id end,
              error = case when r->>'status' = 'failed' then r->>'error' else null end
          where id = (r->>'messageId')::uuid
            and (status = 'queued' or (status = 'failed' and r->>'status' = 'sent'));
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else duplicate := duplicate + 1; end if;
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
    alter table token_epochs enable row level security;
    create policy token_epochs_service_role_all on token_epochs for all to service_role using (true) with check (true);
    -- Supabase's default privileges hand new sequences to anon and authenticated too; only the
    -- runtime may spend epochs, of which there are 2^21.
    revoke all on sequence token_epoch_seq from public, anon, authenticated;
  end if;
end;
$$;

select wafleet_restrict_to_service_role(array['wafleet_next_token_epoch', 'wafleet_record_assignment', 'wafleet_apply_records']);
