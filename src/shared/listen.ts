import { createServer, type RequestListener, type Server } from 'node:http';

// The HTTP listener of both entry points (the server's API, the monitoring port).

export interface Listening {
  /**
   * Stops taking connections and resolves when the last one ends. Idle keep-alive connections
   * are dropped at once; with `abortActive`, requests still running are cut too.
   */
  close(options?: { abortActive?: boolean }): Promise<void>;
}

/** Serves `handler` on `port`; resolves once listening, rejects when the port is taken. */
export async function listenHttp(handler: RequestListener, port: number): Promise<Listening> {
  const server = await new Promise<Server>((resolve, reject) => {
    const listening = createServer(handler);
    listening.once('error', reject);
    listening.listen(port, () => resolve(listening));
  });
  return {
    close: ({ abortActive = false } = {}) =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        if (abortActive) server.closeAllConnections();
        else server.closeIdleConnections();
      }),
  };
}
