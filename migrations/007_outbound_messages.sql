-- Accepted outbound messages, durable. Redis holds the working copy (the record, the BullMQ job),
-- but Redis can lose its data (a restart without persistence, a failover to a replica that missed
-- the newest writes), and a message answered 202 must still be sent, once, in order. So a
-- message is recorded here before it is answered; its end (sent or failed) arrives written
-- behind; and after Redis lost its data every server re-creates the pending ones from here in
-- accept order (`seq`) before claims open again.

create table outbound_messages (
  id uuid primary key,
  -- Accept order: the order a device's messages are sent in, and the order they are restored in.
  seq bigint generated always as identity,
  device_id uuid not null references devices(id) on delete cascade,
  -- Null: accepted without an Idempotency-Key (nulls never collide in the unique constraint).
  idempotency_key text,
  recipient text not null,
  type text not null check (type in ('text', 'image', 'video', 'document')),
  body_text text,
  media_url text,
  caption text,
  file_name text,
  -- queued: accepted and not known to be finished (Redis may say `sending`; the store never sees
  -- that intent). sent / failed arrive through the write-behind.
  status text not null default 'queued' check (status in ('queued', 'sent', 'failed')),
  accepted_at timestamptz not null default clock_timestamp(),
  finished_at timestamptz,
  wa_message_id text,
  error text,
  constraint outbound_messages_idempotency unique (device_id, idempotency_key)
);
-- What the restore pages through: pending messages by device, in accept order.
create index outbound_messages_pending_idx on outbound_messages (device_id, seq) where status = 'queued';

-- Records a message once per idempotency key: two requests with the same key, on any servers and
-- at the same moment, get the first message (the unique constraint decides; the loser's insert
-- waits for the winner's commit and then does nothing). A key older than the window is free
-- again: the old message keeps its row, without the key.
create function wafleet_accept_message(
  p_id uuid,
  p_device_id uuid,
  p_idempotency_key text,
  p_idempotency_ms bigint,
  p_recipient text,
  p_type text,
  p_text text,
  p_media_url text,
  p_caption text,
  p_file_name text
) returns table (message_id uuid, created boolean, message_status text, message_accepted_at timestamptz)
language plpgsql as $$
declare
  inserted uuid;
begin
  if p_idempotency_key is not null then
    update outbound_messages m set idempotency_key = null
    where m.device_id = p_device_id and m.idempotency_key = p_idempotency_key
      and m.accepted_at < clock_timestamp() - make_interval(secs => p_idempotency_ms / 1000.0);
  end if;
  insert into outbound_messages (id, device_id, idempotency_key, recipient, type, body_text, media_url, caption, file_name)
  values (p_id, p_device_id, p_idempotency_key, p_recipient, p_type, p_text, p_media_url, p_caption, p_file_name)
  on conflict (device_id, idempotency_key) do nothing
  returning outbound_messages.id into inserted;
  if inserted is not null then
    return query select m.id, true, m.status, m.accepted_at from outbound_messages m where m.id = inserted;
  else
    return query select m.id, false, m.status, m.accepted_at from outbound_messages m
      where m.device_id = p_device_id and m.idempotency_key = p_idempotency_key;
  end if;
end;
$$;

create function wafleet_get_message(p_id uuid) returns setof outbound_messages
language sql stable as $$
  select * from outbound_messages where id = p_id;
$$;

-- Pending messages by (device, accept order), `p_limit` after (p_after_device, p_after_seq):
-- keyset paging, so a restore reads bounded batches however many are pending.
create function wafleet_list_pending_messages(p_after_device uuid, p_after_seq bigint, p_limit integer) returns setof outbound_messages
language sql stable as $$
  select * from outbound_messages
  where status = 'queued'
    and (p_after_device is null or (device_id, seq) > (p_after_device, coalesce(p_after_seq, 0)))
  order by device_id, seq
  limit p_limit;
$$;

-- As in 006, with one more kind: `message`, a message's end (sent with WhatsApp's id, or failed
-- with the reason), so the restore stops considering it pending. A sent message never turns
-- failed (as in Redis); a repeat changes nothing and counts as a duplicate.
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
    alter table outbound_messages enable row level security;
    create policy outbound_messages_service_role_all on outbound_messages for all to service_role using (true) with check (true);
  end if;
end;
$$;

select wafleet_restrict_to_service_role(array['wafleet_accept_message', 'wafleet_get_message', 'wafleet_list_pending_messages', 'wafleet_apply_records']);
