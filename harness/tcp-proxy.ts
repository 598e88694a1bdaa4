import net from 'node:net';

/**
 * A TCP proxy in front of a real service that a test can cut: while blackholed it keeps every
 * connection open but delivers nothing, the way a network partition looks to a client (no error,
 * no answer), so timeouts and self-fencing happen for real. Like TCP, it loses nothing: what was
 * held back is delivered, late, when the partition heals.
 */
export interface TcpProxy {
  port: number;
  blackhole(on: boolean): void;
  /**
   * The service stopped, as a client sees it: open connections reset, new ones refused. The
   * opposite of a blackhole: errors at once, and whatever was in flight is gone.
   */
  stop(): Promise<void>;
  /** The service is back on the same port. */
  resume(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  let blackholed = false;
  const sockets = new Set<net.Socket>();
  const held: Array<() => void> = [];
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: targetHost, port: targetPort });
    sockets.add(client).add(upstream);
    const forward = (from: net.Socket, to: net.Socket) =>
      from.on('data', (chunk) => {
        if (blackholed) held.push(() => to.write(chunk));
        else to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  const closeListener = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      if (!server.listening) resolve();
      else server.close(() => resolve());
    });
  return {
    port: address.port,
    stop: closeListener,
    resume: () => new Promise<void>((resolve, reject) => server.once('error', reject).listen(address.port, '127.0.0.1', () => resolve())),
    blackhole(on) {
      blackholed = on;
      if (!on) for (const deliver of held.splice(0)) deliver();
    },
    close: closeListener,
  };
}
