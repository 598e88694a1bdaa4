import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, redisAnswers, redisServerInstalled, RedisServerMissingError } from './local-redis.js';

// Real multi-node Redis topologies (Cluster, Sentinel) on loopback, so that failover behaviour is proven
// against redis-server itself rather than against our idea of it. Every process is a child of this one.

export interface RedisNodeAddress { host: string; port: number }

const HOST = '127.0.0.1';
const addr = (port: number): RedisNodeAddress => ({ host: HOST, port });
const label = (node: RedisNodeAddress): string => `${node.host}:${node.port}`;

// A test run that crashes must not leave redis-servers holding ports (nor their temp dirs); one hook covers all.
const running = new Set<ChildProcess>();
const tempDirs = new Set<string>();
function track(child: ChildProcess): void {
  if (!process.listeners('exit').includes(lastResort)) process.once('exit', lastResort);
  running.add(child);
  child.once('exit', () => running.delete(child));
}
function lastResort(): void {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of tempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort: the process is exiting anyway
    }
  }
}

/** Ends a wait at once: retrying cannot help (the process died, or someone else owns the port). */
class Fatal extends Error {}
/** Another process took a port between freePort() and redis-server binding it; fresh ports fix that. */
class PortInUseError extends Fatal {}

function ensure(condition: unknown, reason: string): asserts condition {
  if (!condition) throw new Error(reason);
}

/** Polls `probe` until it resolves; a rejection means "not yet", and the last one explains a timeout. */
async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await probe();
    } catch (error) {
      if (error instanceof Fatal) throw error;
      const last = error instanceof Error ? error.message : String(error);
      if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    }
    await new Promise((done) => setTimeout(done, 150));
  }
}

const alive = (child: ChildProcess | undefined) => child !== undefined && child.exitCode === null && child.signalCode === null;

/** True once `child` has exited, false if it still runs after `timeoutMs`. */
function exited(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (!alive(child)) return Promise.resolve(true);
  return once(child, 'exit', { signal: AbortSignal.timeout(timeoutMs) }).then(() => true, () => false);
}

/** One command on a short-lived connection: a probe must fail fast, not queue behind a reconnect loop. */
async function ask(node: RedisNodeAddress, command: string, ...args: Array<string | number>): Promise<unknown> {
  const client = new Redis({
    host: node.host, port: node.port, lazyConnect: true, connectTimeout: 1000, commandTimeout: 2000,
    maxRetriesPerRequest: 0, retryStrategy: () => null, enableReadyCheck: false, enableOfflineQueue: false,
  });
  client.on('error', () => {}); // the rejected command carries the error
  try {
    await client.connect();
    return await client.call(command, args);
  } finally {
    client.disconnect();
  }
}

function parseFields(text: string, separator: string, lineBreak: RegExp): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split(lineBreak)) {
    const at = line.indexOf(separator);
    if (at > 0) fields.set(line.slice(0, at).trim(), line.slice(at + 1).trim());
  }
  return fields;
}
const info = async (node: RedisNodeAddress, section: string) => parseFields(String(await ask(node, 'INFO', section)), ':', /\r?\n/);
/** ROLE's reply: a master's is [kind, offset, replicas], a replica's [kind, host, port, state, offset]. */
const role = async (node: RedisNodeAddress) => (await ask(node, 'ROLE')) as [string, string | number | undefined, number | undefined, string | undefined, ...unknown[]];

/** Replicas that INFO replication on `master` reports as state=online, i.e. synced and streaming. */
async function onlineReplicas(master: RedisNodeAddress): Promise<RedisNodeAddress[]> {
  const fields = await info(master, 'replication');
  ensure(fields.get('role') === 'master', `${label(master)} reports role:${fields.get('role')}`);
  return [...fields].filter(([key]) => /^slave\d+$/.test(key)).map(([, value]) => parseFields(value, '=', /,/))
    .filter((replica) => replica.get('state') === 'online').map((replica) => addr(Number(replica.get('port'))));
}

class ProcessGroup {
  private readonly procs = new Map<number, { args: string[]; child: ChildProcess }>();
  private readonly handedOut = new Set<number>();
  private stopping: Promise<void> | undefined;
  private constructor(readonly dir: string) {}

  static async create(): Promise<ProcessGroup> {
    if (!redisServerInstalled()) throw new RedisServerMissingError();
    const dir = await mkdtemp(join(tmpdir(), 'wafleet-redis-'));
    tempDirs.add(dir);
    return new ProcessGroup(dir);
  }

  /** freePort() closes its probe socket, so two calls may return the same port; this never does. */
  async port(): Promise<number> {
    let port = await freePort();
    while (this.handedOut.has(port)) port = await freePort();
    this.handedOut.add(port);
    return port;
  }

  /** Per-port file names: replicas sharing a dir would otherwise load each other's RDB after a full sync. */
  dataNodeArgs(port: number): string[] {
    return [
      '--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', this.dir,
      '--dbfilename', `dump-${port}.rdb`, '--logfile', join(this.dir, `redis-${port}.log`),
      // No 5 s wait for more replicas before a full sync; no 10 s wait for lagging replicas on SIGTERM.
      '--repl-diskless-sync-delay', '0', '--shutdown-timeout', '0',
    ];
  }

  isLive(port: number): boolean {
    return alive(this.procs.get(port)?.child);
  }

  async start(port: number, args: string[]): Promise<void> {
    const child = spawn('redis-server', args, { stdio: 'ignore' });
    child.on('error', () => {}); // a failed spawn shows up as the exit below
    track(child);
    this.procs.set(port, { args, child });
    await waitFor(`redis-server (pid ${child.pid}) to answer on port ${port}`, 15_000, async () => {
      if (!this.isLive(port)) {
        const log = await readFile(join(this.dir, `redis-${port}.log`), 'utf8').catch(() => '(no log)');
        const Failure = /address already in use/i.test(log) ? PortInUseError : Fatal;
        const tail = log.trim().split('\n').slice(-5).join(' | ');
        throw new Failure(`redis-server on port ${port} exited (${child.exitCode ?? child.signalCode}) before answering: ${tail}`);
      }
      ensure(await redisAnswers(HOST, port, 500), 'no PONG yet');
      const pid = (await info(addr(port), 'server')).get('process_id');
      if (pid !== String(child.pid)) throw new PortInUseError(`port ${port} is answered by another redis-server (pid ${pid})`);
    });
  }

  async kill(port: number): Promise<void> {
    const child = this.procs.get(port)?.child;
    ensure(child, `no redis-server was started on port ${port}`);
    child.kill('SIGKILL');
    ensure(await exited(child, 5000), `redis-server on port ${port} survived SIGKILL for 5 s`);
  }

  /** Same port and files as before (a cluster node's nodes.conf, a sentinel's rewritten config). */
  async restart(port: number, args?: string[]): Promise<void> {
    const proc = this.procs.get(port);
    ensure(proc && !this.isLive(port), `no stopped redis-server on port ${port} to restart`);
    await this.start(port, args ?? proc.args);
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all([...this.procs.values()].map(async ({ child }) => {
        if (!alive(child)) return;
        child.kill('SIGTERM');
        if (!(await exited(child, 3000))) child.kill('SIGKILL');
        await exited(child, 5000);
      }));
      await rm(this.dir, { recursive: true, force: true, maxRetries: 3 });
      tempDirs.delete(this.dir);
    })();
    return this.stopping;
  }
}

/** Builds a topology in a fresh group; a half-built one is stopped, and a port race is retried on new ports. */
async function inFreshGroup<T>(build: (group: ProcessGroup) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const group = await ProcessGroup.create();
    try {
      return await build(group);
    } catch (error) {
      await group.stop();
      if (!(error instanceof PortInUseError) || attempt >= 3) throw error;
    }
  }
}

export interface LocalRedisCluster {
  /** Every node, masters and replicas, as started. */
  readonly nodes: readonly RedisNodeAddress[];
  /** "127.0.0.1:p1,127.0.0.1:p2,..." of the masters at creation: what REDIS_CLUSTER_NODES would hold. */
  readonly seeds: string;
  /** The node currently serving `key`'s slot as master, as every live node's CLUSTER SLOTS agrees. */
  masterOf(key: string): Promise<RedisNodeAddress>;
  /**
   * Fails over the master serving `key`'s slot: 'manual' runs CLUSTER FAILOVER on one of its replicas (graceful, no
   * data loss); 'kill' SIGKILLs the master and waits for the replica's promotion (cluster-node-timeout). Resolves with
   * the new master once it serves the slot and every live node reports cluster_state:ok. A killed node stays down.
   */
  failover(key: string, mode: 'manual' | 'kill'): Promise<RedisNodeAddress>;
  /** Restarts a node killed by failover('kill') with its nodes.conf, so it rejoins (as a replica). */
  restartNode(node: RedisNodeAddress): Promise<void>;
  /** SIGTERM (SIGKILL after 3 s) to every node, then removes the temp dir; safe to call twice. */
  stop(): Promise<void>;
}

export function startRedisCluster(
  options: { masters?: number; replicasPerMaster?: number; nodeTimeoutMs?: number } = {},
): Promise<LocalRedisCluster> {
  const { masters = 3, replicasPerMaster = 1, nodeTimeoutMs = 1000 } = options;
  if (masters < 3) return Promise.reject(new Error('redis-cli --cluster create needs at least 3 masters'));
  // Generous: a loaded 2-core CI box gossips slowly, and a timeout should mean something is really wrong.
  const settleMs = nodeTimeoutMs * 10 + 30_000;
  return inFreshGroup(async (group) => {
    const nodes: RedisNodeAddress[] = [];
    const busPorts: number[] = [];
    for (let i = 0; i < masters * (1 + replicasPerMaster); i++) {
      nodes.push(addr(await group.port()));
      // Explicit bus ports: the default port + 10000 overflows for the ports freePort() hands out above 55535.
      busPorts.push(await group.port());
    }
    await Promise.all(nodes.map(({ port }, i) => group.start(port, [
      ...group.dataNodeArgs(port), '--cluster-enabled', 'yes', '--cluster-port', String(busPorts[i]),
      '--cluster-config-file', join(group.dir, `nodes-${port}.conf`), '--cluster-node-timeout', String(nodeTimeoutMs),
      // A replica whose link flapped on a slow machine must still take over, or the slot stays uncovered.
      '--cluster-replica-validity-factor', '0',
    ])));
    const create = ['--cluster', 'create', ...nodes.map(label), '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'];
    await promisify(execFile)('redis-cli', create, { timeout: 60_000 }).catch((error: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`redis-cli ${create.join(' ')} failed: ${error.stderr || error.stdout || error.message}`);
    });
    const live = () => nodes.filter((node) => group.isLive(node.port));
    /** Every live node knows every node, sees all 16384 slots served, and says cluster_state:ok. */
    const healthy = async () => {
      for (const node of live()) {
        const fields = parseFields(String(await ask(node, 'CLUSTER', 'INFO')), ':', /\r?\n/);
        const [state, slotsOk, known] = ['cluster_state', 'cluster_slots_ok', 'cluster_known_nodes'].map((key) => fields.get(key));
        ensure(state === 'ok' && slotsOk === '16384' && known === String(nodes.length),
          `${label(node)} reports cluster_state:${state} cluster_slots_ok:${slotsOk} cluster_known_nodes:${known}`);
      }
    };
    const ownerOf = async (slot: number): Promise<RedisNodeAddress> => {
      const views = await Promise.all(live().map(async (node) => {
        const ranges = (await ask(node, 'CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
        const range = ranges.find(([from, to]) => slot >= from && slot <= to);
        ensure(range, `${label(node)} knows no master for slot ${slot}`);
        return `${range[2][0]}:${range[2][1]}`;
      }));
      ensure(new Set(views).size === 1, `nodes disagree on the master of slot ${slot}: ${views.join(', ')}`);
      const owner = live().find((node) => label(node) === views[0]);
      ensure(owner, `slot ${slot} is still assigned to ${views[0]}, which is down`);
      ensure((await role(owner))[0] === 'master', `${label(owner)} owns slot ${slot} but does not answer ROLE master`);
      return owner;
    };
    const agreedOwner = async (key: string) => {
      const slot = Number(await ask(live()[0] ?? nodes[0]!, 'CLUSTER', 'KEYSLOT', key));
      return { slot, owner: await waitFor(`live nodes to agree on the master of slot ${slot}`, settleMs, () => ownerOf(slot)) };
    };

    const seeds = await waitFor(`cluster_state:ok on all ${nodes.length} nodes and ${replicasPerMaster} replica(s) online per master`, settleMs, async () => {
      await healthy();
      const found: RedisNodeAddress[] = [];
      for (const node of nodes) if ((await role(node))[0] === 'master') found.push(node);
      ensure(found.length === masters, `${found.length} of ${masters} masters`);
      for (const master of found) {
        const online = (await onlineReplicas(master)).length;
        ensure(online >= replicasPerMaster, `${label(master)} has ${online} replica(s) online`);
      }
      return found.map(label).join(',');
    });

    return {
      nodes: Object.freeze([...nodes]),
      seeds,
      masterOf: async (key) => (await agreedOwner(key)).owner,
      async failover(key, mode) {
        const { slot, owner: old } = await agreedOwner(key);
        const replica = await waitFor(`a live replica of ${label(old)} online in INFO replication`, settleMs, async () => {
          const online = (await onlineReplicas(old)).find((node) => group.isLive(node.port));
          ensure(online, `${label(old)} has no replica online`);
          return online;
        });
        if (mode === 'kill') await group.kill(old.port);
        let askedAt = 0;
        return waitFor(`slot ${slot} to move from ${label(old)} to a replica, cluster_state:ok everywhere (${mode})`, settleMs, async () => {
          // A manual failover that did not complete (CLUSTER_MF_TIMEOUT is 5 s) simply did nothing: ask again.
          if (mode === 'manual' && Date.now() - askedAt > 6000 && (await role(replica))[0] === 'slave') {
            askedAt = Date.now();
            await ask(replica, 'CLUSTER', 'FAILOVER');
          }
          const owner = await ownerOf(slot);
          ensure(label(owner) !== label(old), `${label(old)} still serves slot ${slot}`);
          await healthy();
          return owner;
        });
      },
      async restartNode(node) {
        await group.restart(node.port);
        await waitFor(`${label(node)} to rejoin as a replica with its link up, cluster_state:ok everywhere`, settleMs, async () => {
          const replication = await info(node, 'replication');
          const [kind, link] = [replication.get('role'), replication.get('master_link_status')];
          ensure(kind === 'slave' && link === 'up', `${label(node)} reports role:${kind} master_link_status:${link}`);
          await healthy();
        });
      },
      stop: () => group.stop(),
    };
  });
}

export interface LocalRedisSentinel {
  /** The master name the sentinels monitor: what REDIS_SENTINEL_MASTER would hold. */
  readonly masterName: string;
  /** "127.0.0.1:s1,127.0.0.1:s2,127.0.0.1:s3": what REDIS_SENTINELS would hold. */
  readonly sentinels: string;
  readonly dataNodes: readonly RedisNodeAddress[];
  /** The master as the sentinels currently report it (SENTINEL GET-MASTER-ADDR-BY-NAME, agreed by a majority). */
  master(): Promise<RedisNodeAddress>;
  /**
   * 'manual': SENTINEL FAILOVER; 'kill': SIGKILL the master's process. Resolves with the new master once every live
   * sentinel reports it and it answers ROLE as master (and, for 'manual', the old master is its replica again).
   */
  failover(mode: 'manual' | 'kill'): Promise<RedisNodeAddress>;
  /** Restarts a killed data node as a replica of the current master (or a killed sentinel with its config). */
  restartNode(node: RedisNodeAddress): Promise<void>;
  /** SIGTERM (SIGKILL after 3 s) to every process, then removes the temp dir; safe to call twice. */
  stop(): Promise<void>;
}

export function startRedisSentinel(
  options: { replicas?: number; sentinels?: number; downAfterMs?: number; failoverTimeoutMs?: number } = {},
): Promise<LocalRedisSentinel> {
  const { replicas = 1, sentinels: sentinelCount = 3, downAfterMs = 1000, failoverTimeoutMs = 5000 } = options;
  const masterName = 'wafleet';
  const majority = Math.floor(sentinelCount / 2) + 1;
  // Sentinel re-points a returning old master only after ~8 s plus an INFO period (10 s), and refuses a second
  // failover of the same master within 2 × failover-timeout: waits must cover both, on a slow machine.
  const settleMs = downAfterMs + 2 * failoverTimeoutMs + 60_000;
  return inFreshGroup(async (group) => {
    const dataNodes: RedisNodeAddress[] = [];
    for (let i = 0; i <= replicas; i++) dataNodes.push(addr(await group.port()));
    const sentinelNodes: RedisNodeAddress[] = [];
    for (let i = 0; i < sentinelCount; i++) sentinelNodes.push(addr(await group.port()));
    const first = dataNodes[0]!;
    await Promise.all(dataNodes.map(({ port }) =>
      group.start(port, [...group.dataNodeArgs(port), ...(port === first.port ? [] : ['--replicaof', HOST, String(first.port)])])));
    // Replicas first: a sentinel learns them from the master's INFO, which it asks only every 10 s after the first.
    await waitFor(`${replicas} replica(s) of ${label(first)} online in INFO replication`, 60_000, async () => {
      ensure((await onlineReplicas(first)).length >= replicas, 'not all replicas are online');
    });
    await Promise.all(sentinelNodes.map(async ({ port }) => {
      const file = join(group.dir, `sentinel-${port}.conf`);
      await writeFile(file, [
        `port ${port}`, `bind ${HOST}`, `dir ${group.dir}`, `logfile ${join(group.dir, `redis-${port}.log`)}`,
        `sentinel monitor ${masterName} ${HOST} ${first.port} ${majority}`,
        `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
        `sentinel failover-timeout ${masterName} ${failoverTimeoutMs}`, '',
      ].join('\n'));
      await group.start(port, [file, '--sentinel']);
    }));

    const liveSentinels = () => sentinelNodes.filter((node) => group.isLive(node.port));
    const list = async (sentinel: RedisNodeAddress, what: 'REPLICAS' | 'SENTINELS') =>
      ((await ask(sentinel, 'SENTINEL', what, masterName)) as string[][]).map((flat) =>
        new Map(flat.flatMap((key, i) => (i % 2 === 0 ? [[key, flat[i + 1] ?? ''] as const] : []))));
    // Sentinels only promote a replica they see as up and linked; their view lags the replica by an INFO period.
    const healthyReplica = (entry: Map<string, string>, node?: RedisNodeAddress) =>
      entry.get('flags') === 'slave' && entry.get('master-link-status') === 'ok' && (!node || entry.get('port') === String(node.port));
    const everySentinelLists = (what: string, node?: RedisNodeAddress) => waitFor(what, settleMs, async () => {
      for (const sentinel of liveSentinels()) {
        ensure((await list(sentinel, 'REPLICAS')).some((entry) => healthyReplica(entry, node)), `${label(sentinel)} does not list it yet`);
      }
    });
    const reported = async (sentinel: RedisNodeAddress) =>
      ((await ask(sentinel, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as [string, string]).join(':');
    const dataNode = (view: string | undefined) => {
      const node = dataNodes.find((candidate) => label(candidate) === view);
      ensure(node, `sentinels report ${view}, which is not one of this topology's data nodes`);
      return node;
    };
    const master = () => waitFor(`${majority} sentinels to agree on the master of ${masterName}`, settleMs, async () => {
      const views = await Promise.all(liveSentinels().map((sentinel) => reported(sentinel).catch(() => 'no answer')));
      const top = views.find((view) => views.filter((v) => v === view).length >= majority);
      ensure(top, `sentinels report ${views.join(', ')}`);
      return dataNode(top);
    });

    await waitFor(`every sentinel to know ${replicas} healthy replica(s) and ${sentinelCount - 1} other sentinel(s)`, 60_000, async () => {
      for (const sentinel of sentinelNodes) {
        const known = (await list(sentinel, 'REPLICAS')).filter((entry) => healthyReplica(entry)).length;
        const peers = (await list(sentinel, 'SENTINELS')).length;
        ensure(known >= replicas && peers >= sentinelCount - 1, `${label(sentinel)} knows ${known} replica(s), ${peers} sentinel(s)`);
      }
    });

    return {
      masterName,
      sentinels: sentinelNodes.map(label).join(','),
      dataNodes: Object.freeze([...dataNodes]),
      master,
      async failover(mode) {
        const old = await master();
        await everySentinelLists(`every live sentinel to list a healthy replica of ${label(old)}`);
        if (mode === 'kill') await group.kill(old.port);
        let asked = mode === 'kill';
        const awaited = `every live sentinel to report a new master instead of ${label(old)}, answering ROLE master` +
          (mode === 'manual' ? ', with the old master as its connected replica' : '');
        return waitFor(awaited, settleMs, async () => {
          if (!asked) {
            // NOGOODSLAVE (a sentinel's view is stale) is worth retrying; INPROG means it is already under way.
            await ask(liveSentinels()[0]!, 'SENTINEL', 'FAILOVER', masterName).catch((error: Error) => {
              if (!/INPROG/.test(error.message)) throw error;
            });
            asked = true;
          }
          const views = await Promise.all(liveSentinels().map(reported));
          ensure(new Set(views).size === 1 && views[0] !== label(old), `sentinels report ${views.join(', ')}`);
          const next = dataNode(views[0]);
          ensure((await role(next))[0] === 'master', `${label(next)} does not answer ROLE master yet`);
          if (mode === 'manual') {
            const [kind, host, port, state] = await role(old);
            ensure(kind === 'slave' && `${host}:${port}` === label(next) && state === 'connected',
              `old master ${label(old)} answers ROLE ${kind} ${host ?? ''}:${port ?? ''} ${state ?? ''}`);
          }
          return next;
        });
      },
      async restartNode(node) {
        if (sentinelNodes.some((sentinel) => sentinel.port === node.port)) return group.restart(node.port);
        const current = await master();
        // Started as a replica, so an old master never takes writes while the sentinels re-point it.
        await group.restart(node.port, [...group.dataNodeArgs(node.port), '--replicaof', HOST, String(current.port)]);
        await waitFor(`${label(node)} to be a connected replica of ${label(current)}`, settleMs, async () => {
          const [kind, , , state] = await role(node);
          ensure(kind === 'slave' && state === 'connected', `${label(node)} answers ROLE ${kind} ${state ?? ''}`);
        });
        await everySentinelLists(`every live sentinel to list ${label(node)} as a healthy replica`, node);
      },
      stop: () => group.stop(),
    };
  });
}
