-- Inbound events, durable (issue 17). Each device's events live in a Redis stream
-- (src/events/event-log.ts), numbered 1, 2, 3... without gaps; that stream is capped and Redis can
-- lose its data. So every accepted event is written behind to here with the same id and sequence,
-- the webhook's progress too, and after Redis lost its data the numbering, the undelivered events
-- and the dedup markers are put back from here (src/events/restore.ts). Receipts of sent
-- messages set when they were delivered and read.

create table inbound_events (
  device_id uuid not null references devices(id) on delete cascade,
  sequence bigint not null check (sequence > 0),
  id text not null,
  type text not null,
  data jsonb,
  -- When the event log accepted it (Redis's clock), not when the write-behind got here.
  created_at timestamptz not null,
  primary key (device_id, sequence)
);
-- The prune walks events by age across all devices.
create index inbound_events_created_idx on inbound_events (created_at);

-- Receipts of messages this wafleet sent; each time is the first one reported (a later or repeated
-- receipt changes nothing).
alter table outbound_messages add column delivered_at timestamptz, add column read_at timestamptz;

-- The last sequence the device's webhook delivery has handed on (delivered, or moved to a retry):
-- after Redis lost its data, only the events above it are put back into the stream for delivery.
create table event_cursors (
  device_id uuid primary key references devices(id) on delete cascade,
  webhook_sequence bigint not null default 0 check (webhook_sequence >= 0)
);

-- Up to p_limit of the device's events above p_after_sequence, in sequence order; with p_since,
-- only those created at or after it (the restore's dedup window: sequence order is time order).
create function wafleet_list_events(p_device_id uuid, p_after_sequence bigint, p_limit integer, p_since timestamptz)
returns setof inbound_events
language sql stable as $$
  select * from inbound_events
  where device_id = p_device_id and sequence > coalesce(p_after_sequence, 0)
    and (p_since is null or created_at >= p_since)
  order by sequence
  limit p_limit;
$$;

-- Per device with events or a webhook cursor: the last stored sequence and the webhook's, by
-- device id, p_limit after p_after (keyset paging, for the restore after Redis lost its data).
create function wafleet_list_event_cursors(p_after uuid, p_limit integer)
returns table (device_id uuid, last_sequence bigint, webhook_sequence bigint)
language sql stable as $$
  select d.id,
         coalesce((select max(e.sequence) from inbound_events e where e.device_id = d.id), 0),
         coalesce(c.webhook_sequence, 0)
  from devices d left join event_cursors c on c.device_id = d.id
  where (p_after is null or d.id > p_after)
    and (c.device_id is not null or exists (select 1 from inbound_events e where e.device_id = d.id))
  order by d.id
  limit p_limit;
$$;

-- Deletes up to p_limit events created before p_before, oldest first; returns how many. Each
-- device's newest event is kept whatever its age, so the store always knows where a device's
-- numbering stands and a restore never starts it again at 1.
create function wafleet_prune_events(p_before timestamptz, p_limit integer) returns integer
language plpgsql as $$
declare
  n integer;
begin
  with doomed as (
    select e.device_id, e.sequence from inbound_events e
    where e.created_at < p_before
      and exists (select 1 from inbound_events newer where newer.device_id = e.device_id and newer.sequence > e.sequence)
    order by e.created_at
    limit p_limit
  )
  delete from inbound_events e using doomed
  where e.device_id = doomed.device_id and e.sequence = doomed.sequence;
  get diagnostics n = row_count;
  return n;
end;
$$;

-- As in 008, with three more kinds:
-- - `inbound_event`: an event the log accepted. Its (device, sequence) is its identity, so a
--   replayed batch inserts nothing twice; the same sequence with another id is refused loudly
--   (the numbering went back somewhere), never overwritten.
-- - `message_receipt`: WhatsApp's receipt of a sent message. delivered sets delivered_at; read
--   and played set read_at, and delivered_at too when no delivered receipt came first (WhatsApp
--   may send only the read one). The first time reported stays.
-- - `webhook_progress`: the webhook's cursor, which only goes up.
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
  received timestamptz;
  held text;
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
        when 'inbound_event' then
          insert into inbound_events (device_id, sequence, id, type, data, created_at)
          values ((r->>'deviceId')::uuid, (r->>'sequence')::bigint, r->>'eventId', r->>'type', r->'data',
                  coalesce((r->>'createdAt')::timestamptz, happened))
          on conflict (device_id, sequence) do nothing;
          get diagnostics n = row_count;
          if n = 1 then
            applied := applied + 1;
          else
            select e.id into held from inbound_events e
            where e.device_id = (r->>'deviceId')::uuid and e.sequence = (r->>'sequence')::bigint;
            if held is distinct from r->>'eventId' then
              raise exception 'sequence % of device % already holds event %, not %',
                r->>'sequence', r->>'deviceId', held, r->>'eventId' using errcode = '23505';
            end if;
            duplicate := duplicate + 1;
          end if;
        when 'message_receipt' then
          if r->>'status' not in ('delivered', 'read', 'played') then
            raise exception 'a receipt says delivered, read or played, not %', coalesce(r->>'status', '(none)') using errcode = '22023';
          end if;
          received := coalesce((r->>'receivedAt')::timestamptz, happened);
          if r->>'status' = 'delivered' then
            update outbound_messages set delivered_at = received
            where id = (r->>'messageId')::uuid and device_id = (r->>'deviceId')::uuid and delivered_at is null;
          else
            update outbound_messages
            set read_at = coalesce(read_at, received), delivered_at = coalesce(delivered_at, received)
            where id = (r->>'messageId')::uuid and device_id = (r->>'deviceId')::uuid
              and (read_at is null or delivered_at is null);
          end if;
          get diagnostics n = row_count;
          if n = 1 then applied := applied + 1; else duplicate := duplicate + 1; end if;
        when 'webhook_progress' then
          insert into event_cursors as c (device_id, webhook_sequence)
          values ((r->>'deviceId')::uuid, (r->>'sequence')::bigint)
          on conflict (device_id) do update set webhook_sequence = excluded.webhook_sequence
            where c.webhook_sequence < excluded.webhook_sequence;
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
    alter table inbound_events enable row level security;
    create policy inbound_events_service_role_all on inbound_events for all to service_role using (true) with check (true);
    alter table event_cursors enable row level security;
    create policy event_cursors_service_role_all on event_cursors for all to service_role using (true) with check (true);
  end if;
end;
$$;

select wafleet_restrict_to_service_role(array['wafleet_list_events', 'wafleet_list_event_cursors', 'wafleet_prune_events', 'wafleet_apply_records']);
