-- What the HTTP API needs: per-user API keys (stored only as SHA-256 hashes), device listing and
-- deletion, admin edits of servers, recorded health checks, and the cluster overview.

create table api_keys (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  name text,
  -- Hex SHA-256 of the key; the key itself is shown once, at creation, and never stored.
  key_hash text not null unique constraint api_keys_key_hash check (key_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  revoked_at timestamptz
);

create index api_keys_user_id_idx on api_keys (user_id);

create function wafleet_create_api_key(p_user_id uuid, p_name text, p_key_hash text) returns setof api_keys
language sql as $$
  insert into api_keys (user_id, name, key_hash) values (p_user_id, p_name, p_key_hash) returning *;
$$;

-- Only live keys are found; a revoked key authenticates nobody.
create function wafleet_find_api_key(p_key_hash text) returns setof api_keys
language sql stable as $$
  select * from api_keys where key_hash = p_key_hash and revoked_at is null;
$$;

create function wafleet_revoke_api_key(p_id uuid) returns boolean
language sql as $$
  with revoked as (
    update api_keys set revoked_at = now() where id = p_id and revoked_at is null returning 1
  )
  select exists (select 1 from revoked);
$$;

-- One user's devices (or everyone's when p_user_id is null), by creation, paged by id.
create function wafleet_list_devices(p_user_id uuid, p_limit integer) returns setof devices
language sql stable as $$
  select * from devices where p_user_id is null or user_id = p_user_id
  order by created_at, id
  limit p_limit;
$$;

create function wafleet_delete_device(p_device_id uuid) returns boolean
language sql as $$
  with deleted as (delete from devices where id = p_device_id returning 1)
  select exists (select 1 from deleted);
$$;

-- Admin edits of a server's configuration. Null leaves a field as it is, so PATCH sends only
-- what changes; a server not yet known is created (PUT), inactive until it heartbeats.
create function wafleet_configure_server(
  p_id text,
  p_server_name text,
  p_server_url text,
  p_server_type text,
  p_region text,
  p_max_capacity integer,
  p_priority integer
) returns setof backend_servers
language sql as $$
  insert into backend_servers as s (id, server_name, server_url, server_type, region, max_capacity, priority, is_active)
  values (p_id, coalesce(p_server_name, p_id), coalesce(p_server_url, ''), coalesce(p_server_type, 'vps'),
          coalesce(p_region, 'default'), coalesce(p_max_capacity, 100), coalesce(p_priority, 0), false)
  on conflict (id) do update set
    server_name = coalesce(p_server_name, s.server_name),
    server_url = coalesce(p_server_url, s.server_url),
    server_type = coalesce(p_server_type, s.server_type),
    region = coalesce(p_region, s.region),
    max_capacity = coalesce(p_max_capacity, s.max_capacity),
    priority = coalesce(p_priority, s.priority)
  returning *;
$$;

create function wafleet_delete_server(p_id text) returns boolean
language sql as $$
  with deleted as (delete from backend_servers where id = p_id returning 1)
  select exists (select 1 from deleted);
$$;

-- A health check triggered through the API: healthy resets the failure count, a failure adds one.
create function wafleet_record_health_check(p_id text, p_healthy boolean, p_response_time integer) returns setof backend_servers
language sql as $$
  update backend_servers set
    is_healthy = p_healthy,
    response_time = coalesce(p_response_time, response_time),
    last_health_check = now(),
    health_check_failures = case when p_healthy then 0 else health_check_failures + 1 end
  where id = p_id
  returning *;
$$;

create function wafleet_device_status_counts() returns table (status text, devices bigint)
language sql stable as $$
  select status, count(*) from devices group by status order by status;
$$;

create function wafleet_recent_lease_events(p_limit integer) returns setof device_lease_events
language sql stable as $$
  select * from device_lease_events order by id desc limit p_limit;
$$;

do $$
declare
  f regprocedure;
begin
  if exists (select 1 from pg_namespace where nspname = 'auth') then
    alter table api_keys enable row level security;
    create policy api_keys_service_role_all on api_keys for all to service_role using (true) with check (true);
    for f in
      select p.oid::regprocedure
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'public'
        and p.proname in ('wafleet_create_api_key', 'wafleet_find_api_key', 'wafleet_revoke_api_key',
                          'wafleet_list_devices', 'wafleet_delete_device', 'wafleet_configure_server',
                          'wafleet_delete_server', 'wafleet_record_health_check',
                          'wafleet_device_status_counts', 'wafleet_recent_lease_events')
    loop
      execute format('revoke all on function %s from public, anon, authenticated', f);
      execute format('grant execute on function %s to service_role', f);
    end loop;
  end if;
end;
$$;
