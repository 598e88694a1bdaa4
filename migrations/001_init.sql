-- wafleet durable store, version 1.
--
-- Applied by src/store/migrate.ts inside one transaction, which also records it in
-- wafleet_migrations. Must apply cleanly on PGlite, PostgreSQL 15+ and Supabase: Supabase-only
-- pieces (RLS, grants to its roles) sit in a block that runs only where the `auth` schema exists.
--
-- Every operation the runtime performs is a SQL function below, so the postgres/pglite adapters
-- (SQL over the wire) and the supabase adapter (PostgREST RPC) run exactly the same statements.
-- The catalogue in src/store/operations.ts names each function and its parameters.

-- Shared by every table with an updated_at column.
create function wafleet_touch_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end;
$$;

create table backend_servers (
  -- The server identity rules from config (3-128 chars of a-z A-Z 0-9 _ - ., no "..", no "//",
  -- not a reserved word), enforced here too so a hand-written row cannot break key building.
  id text primary key
    constraint backend_servers_id_format check (
      id ~ '^[A-Za-z0-9_.-]{3,128}$'
      and position('..' in id) = 0
      and position('//' in id) = 0
      and lower(id) not in ('null', 'admin', 'root', 'system')
    ),
  server_name text not null,
  server_url text not null,
  server_type text not null default 'vps'
    constraint backend_servers_server_type check (server_type in ('railway', 'vps', 'cloud', 'dedicated')),
  region text not null default 'default',
  description text,
  max_capacity integer not null default 100 constraint backend_servers_max_capacity check (max_capacity > 0),
  current_load integer not null default 0 constraint backend_servers_current_load check (current_load >= 0),
  is_active boolean not null default true,
  is_healthy boolean not null default true,
  -- Higher is preferred, as in the seed.
  priority integer not null default 0,
  last_health_check timestamptz,
  health_check_failures integer not null default 0,
  -- Milliseconds.
  response_time integer,
  metadata jsonb not null default '{}'::jsonb,
  draining boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create trigger backend_servers_touch_updated_at before update on backend_servers
  for each row execute function wafleet_touch_updated_at();

create table devices (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  device_name text not null,
  phone_number text,
  -- Observed state, written by the owning server.
  status text not null default 'disconnected'
    constraint devices_status check (
      status in ('disconnected', 'connecting', 'qr', 'pairing', 'connected', 'conflict', 'logged_out', 'error')
    ),
  -- Wanted state, written by the API; reconcile places every 'running' device that runs nowhere.
  desired_state text not null default 'stopped'
    constraint devices_desired_state check (desired_state in ('running', 'stopped')),
  connection_method text not null default 'qr'
    constraint devices_connection_method check (connection_method in ('qr', 'pairing')),
  phone_for_pairing text,
  assigned_server_id text references backend_servers (id) on delete set null,
  -- Highest fencing token that has written here. After Redis loses its data, fence counters are
  -- re-seeded from this column, and fenced writes are refused unless they carry at least it.
  lease_epoch bigint not null default 0 constraint devices_lease_epoch check (lease_epoch >= 0),
  webhook_url text,
  error_message text,
  last_connected_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- A pairing code is requested for a phone number; without one the device can never link.
  constraint devices_pairing_needs_phone check (connection_method <> 'pairing' or phone_for_pairing is not null)
);

create index devices_user_id_idx on devices (user_id);
create index devices_assigned_server_id_idx on devices (assigned_server_id);
-- Reconcile reads the wanted devices every few seconds.
create index devices_running_idx on devices (id) where desired_state = 'running';

create trigger devices_touch_updated_at before update on devices
  for each row execute function wafleet_touch_updated_at();

-- Session snapshots are large and written often; keeping them out of `devices` keeps device
-- reads cheap and lets RLS hide credentials while users still see their devices.
create table device_sessions (
  device_id uuid primary key references devices (id) on delete cascade,
  creds jsonb not null default '{}'::jsonb,
  keys jsonb not null default '{}'::jsonb,
  -- Fencing token of the last write; a write carrying a lower token is refused.
  epoch bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create trigger device_sessions_touch_updated_at before update on device_sessions
  for each row execute function wafleet_touch_updated_at();

-- The audit tables carry no foreign keys: the trail must outlive the server or device it talks
-- about, and a write-behind job for a row deleted meanwhile must not fail forever.
create table server_logs (
  id bigserial primary key,
  server_id text not null,
  level text not null default 'info' constraint server_logs_level check (level in ('debug', 'info', 'warn', 'error')),
  event text not null,
  message text not null default '',
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);

create index server_logs_server_id_created_at_idx on server_logs (server_id, created_at desc);
create index server_logs_created_at_idx on server_logs (created_at desc);

create table device_connection_logs (
  id bigserial primary key,
  device_id uuid not null,
  server_id text,
  -- Keep in step with CONNECTION_LOG_EVENT_TYPES in src/store/connection-events.ts (a test checks).
  event_type text not null
    constraint device_connection_logs_event_type check (
      event_type in (
        'connecting', 'connected', 'disconnected', 'reconnecting', 'qr', 'pairing_code', 'conflict',
        'logged_out', 'error', 'session_restored', 'session_cleared', 'restart_required', 'stopped'
      )
    ),
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);

create index device_connection_logs_device_id_created_at_idx on device_connection_logs (device_id, created_at desc);

create table device_lease_events (
  id bigserial primary key,
  device_id uuid not null,
  server_id text,
  event_type text not null
    constraint device_lease_events_event_type check (
      event_type in ('claim', 'release', 'expire', 'drain', 'rebalance', 'lost')
    ),
  epoch bigint not null,
  details jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);

-- The cluster page lists recent failovers.
create index device_lease_events_created_at_idx on device_lease_events (created_at desc);
create index device_lease_events_device_id_created_at_idx on device_lease_events (device_id, created_at desc);

-- ---------------------------------------------------------------------------------------------
-- Operations. One function per Store method; parameters are named p_* because PostgREST passes
-- RPC arguments by name.
-- ---------------------------------------------------------------------------------------------

-- A (re)starting server comes back active, healthy, empty and not draining: whatever it held
-- before was handed over or has expired by the time it registers again.
create function wafleet_register_server(
  p_id text,
  p_server_name text,
  p_server_url text,
  p_server_type text,
  p_region text,
  p_max_capacity integer,
  p_priority integer,
  p_description text,
  p_metadata jsonb
) returns setof backend_servers
language sql as $$
  insert into backend_servers as s (
    id, server_name, server_url, server_type, region, max_capacity, priority, description, metadata,
    current_load, is_active, is_healthy, draining, health_check_failures, last_health_check
  ) values (
    p_id, p_server_name, p_server_url, p_server_type, p_region, p_max_capacity, p_priority, p_description,
    coalesce(p_metadata, '{}'::jsonb), 0, true, true, false, 0, now()
  )
  on conflict (id) do update set
    server_name = excluded.server_name,
    server_url = excluded.server_url,
    server_type = excluded.server_type,
    region = excluded.region,
    max_capacity = excluded.max_capacity,
    priority = excluded.priority,
    description = excluded.description,
    metadata = excluded.metadata,
    current_load = 0,
    is_active = true,
    is_healthy = true,
    draining = false,
    health_check_failures = 0,
    last_health_check = now()
  returning *;
$$;

-- A heartbeat is proof of life, so it also undoes a mark-inactive made while this server was
-- partitioned away. A missing response time keeps the last measured one.
create function wafleet_record_server_health(p_server_id text, p_current_load integer, p_response_time integer)
returns void
language sql as $$
  update backend_servers set
    current_load = p_current_load,
    response_time = coalesce(p_response_time, response_time),
    last_health_check = now(),
    is_active = true,
    is_healthy = true,
    health_check_failures = 0
  where id = p_server_id;
$$;

create function wafleet_mark_server_inactive(p_server_id text) returns void
language sql as $$
  update backend_servers set is_active = false, draining = false, current_load = 0 where id = p_server_id;
$$;

create function wafleet_get_server(p_server_id text) returns setof backend_servers
language sql stable as $$
  select * from backend_servers where id = p_server_id;
$$;

create function wafleet_list_servers() returns setof backend_servers
language sql stable as $$
  select * from backend_servers order by priority desc, id;
$$;

-- The seed's name and order, kept so existing dashboards and scripts keep working. Only
-- servers that reported health within p_max_age_seconds count: a crashed server never marks
-- itself inactive.
create function get_best_available_server(p_max_age_seconds integer default 60) returns text
language sql stable as $$
  select id
  from backend_servers
  where is_active
    and is_healthy
    and not draining
    and current_load < max_capacity
    and last_health_check > now() - make_interval(secs => p_max_age_seconds)
  order by priority desc,
           current_load::numeric / max_capacity asc,
           response_time asc nulls last,
           id
  limit 1;
$$;

create function wafleet_create_device(
  p_user_id uuid,
  p_device_name text,
  p_connection_method text,
  p_phone_for_pairing text,
  p_webhook_url text
) returns setof devices
language sql as $$
  insert into devices (user_id, device_name, connection_method, phone_for_pairing, webhook_url)
  values (p_user_id, p_device_name, p_connection_method, p_phone_for_pairing, p_webhook_url)
  returning *;
$$;

create function wafleet_get_device(p_device_id uuid) returns setof devices
language sql stable as $$
  select * from devices where id = p_device_id;
$$;

-- Fenced: a server that lost its lease while paused carries an older token and changes nothing.
-- Equal tokens are accepted so a retried write-behind job is idempotent.
create function wafleet_record_assignment(p_device_id uuid, p_server_id text, p_epoch bigint) returns boolean
language sql as $$
  with updated as (
    update devices set assigned_server_id = p_server_id, lease_epoch = p_epoch
    where id = p_device_id and lease_epoch <= p_epoch
    returning 1
  )
  select exists (select 1 from updated);
$$;

create function wafleet_append_server_log(
  p_server_id text,
  p_level text,
  p_event text,
  p_message text,
  p_details jsonb
) returns void
language sql as $$
  insert into server_logs (server_id, level, event, message, details)
  values (p_server_id, p_level, p_event, coalesce(p_message, ''), coalesce(p_details, '{}'::jsonb));
$$;

create function wafleet_append_lease_event(
  p_device_id uuid,
  p_server_id text,
  p_event_type text,
  p_epoch bigint,
  p_details jsonb
) returns void
language sql as $$
  insert into device_lease_events (device_id, server_id, event_type, epoch, details)
  values (p_device_id, p_server_id, p_event_type, p_epoch, coalesce(p_details, '{}'::jsonb));
$$;

create function wafleet_append_connection_log(
  p_device_id uuid,
  p_server_id text,
  p_event_type text,
  p_details jsonb
) returns void
language sql as $$
  insert into device_connection_logs (device_id, server_id, event_type, details)
  values (p_device_id, p_server_id, p_event_type, coalesce(p_details, '{}'::jsonb));
$$;

-- plpgsql, not sql: its body is not checked at creation, so this file also applies by hand
-- (Supabase SQL editor) where the runner's wafleet_migrations table does not exist yet.
create function wafleet_schema_version() returns integer
language plpgsql stable as $$
begin
  if to_regclass('wafleet_migrations') is null then
    return 0;
  end if;
  return coalesce((select max(version) from wafleet_migrations), 0);
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- Supabase: PostgREST exposes every table and function in `public` to the anon key, so lock
-- them down to the service role, and let signed-in users read only their own devices.
-- ---------------------------------------------------------------------------------------------
do $$
declare
  t text;
  f regprocedure;
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    foreach t in array array[
      'backend_servers', 'devices', 'device_sessions', 'server_logs', 'device_connection_logs', 'device_lease_events'
    ] loop
      execute format('alter table %I enable row level security', t);
      execute format('create policy %I on %I for all to service_role using (true) with check (true)',
                     t || '_service_role_all', t);
    end loop;

    create policy devices_owner_select on devices
      for select to authenticated using (auth.uid() = user_id);
    create policy device_connection_logs_owner_select on device_connection_logs
      for select to authenticated
      using (exists (select 1 from devices d where d.id = device_id and d.user_id = auth.uid()));

    -- Functions are executable by PUBLIC by default, and Supabase grants anon and authenticated
    -- on new functions; these are the runtime's own operations, for the service role only.
    for f in
      select p.oid::regprocedure
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'public'
        and (p.proname like 'wafleet\_%' or p.proname = 'get_best_available_server')
    loop
      execute format('revoke all on function %s from public, anon, authenticated', f);
      execute format('grant execute on function %s to service_role', f);
    end loop;
  end if;
end;
$$;
