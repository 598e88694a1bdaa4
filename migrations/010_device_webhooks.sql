-- Each device's own webhook (issue 17): where its inbound events are POSTed, which event types
-- it wants, and the secret its deliveries are signed with. The secret is shown to the user once
-- and kept here only encrypted (AES-256-GCM, a key from WEBHOOK_SECRET_KEY or derived from
-- INTERNAL_API_KEY, src/webhooks/secrets.ts), because the servers must sign with it again on
-- every delivery: a hash would not do. The database never sees the key.
--
-- devices.webhook_url (001) is the older way to name a receiver, without a secret of its own; a
-- row here replaces it, so putting or deleting a webhook clears that column, and a device has at
-- most one receiver.

create table device_webhooks (
  device_id uuid primary key references devices(id) on delete cascade,
  url text not null,
  -- Null: every event type.
  events text[],
  -- `v1.<iv>.<tag>.<ciphertext>`, base64url parts; the device id is the associated data, so a
  -- value copied to another device's row does not decrypt.
  secret_ciphertext text not null,
  created_at timestamptz not null default clock_timestamp(),
  updated_at timestamptz not null default clock_timestamp()
);

-- Registers or replaces the device's webhook (a rotation is a put with a new secret). No row when
-- the device does not exist.
create function wafleet_put_webhook(p_device_id uuid, p_url text, p_events text[], p_secret_ciphertext text)
returns table (device_id uuid, url text, events text[], secret_ciphertext text, updated_at timestamptz)
language plpgsql as $$
begin
  if not exists (select 1 from devices d where d.id = p_device_id) then
    return;
  end if;
  update devices d set webhook_url = null, updated_at = now() where d.id = p_device_id and d.webhook_url is not null;
  return query
    insert into device_webhooks as w (device_id, url, events, secret_ciphertext)
    values (p_device_id, p_url, p_events, p_secret_ciphertext)
    on conflict on constraint device_webhooks_pkey do update
      set url = excluded.url, events = excluded.events, secret_ciphertext = excluded.secret_ciphertext, updated_at = clock_timestamp()
    returning w.device_id, w.url, w.events, w.secret_ciphertext, w.updated_at;
end;
$$;

create function wafleet_get_webhook(p_device_id uuid)
returns table (device_id uuid, url text, events text[], secret_ciphertext text, updated_at timestamptz)
language sql stable as $$
  select w.device_id, w.url, w.events, w.secret_ciphertext, w.updated_at from device_webhooks w where w.device_id = p_device_id;
$$;

-- True when the device had a receiver (its own webhook, or the older webhook_url) and now has none.
create function wafleet_delete_webhook(p_device_id uuid) returns boolean
language plpgsql as $$
declare
  removed integer;
  cleared integer;
begin
  delete from device_webhooks w where w.device_id = p_device_id;
  get diagnostics removed = row_count;
  update devices d set webhook_url = null, updated_at = now() where d.id = p_device_id and d.webhook_url is not null;
  get diagnostics cleared = row_count;
  return removed + cleared > 0;
end;
$$;

do $$
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    alter table device_webhooks enable row level security;
    create policy device_webhooks_service_role_all on device_webhooks for all to service_role using (true) with check (true);
  end if;
end;
$$;

select wafleet_restrict_to_service_role(array['wafleet_put_webhook', 'wafleet_get_webhook', 'wafleet_delete_webhook']);
