/** nats.js connections from resolved settings (the client's and the worker's connection). */
import { connect as natsConnect } from "@nats-io/transport-node";
import { credsAuthenticator, nkeyAuthenticator, type ConnectionOptions, type NatsConnection } from "@nats-io/nats-core";
import { serverList, type Settings } from "../settings/mod.ts";
import { readTextFile } from "./system.ts";

/** Translates resolved settings into nats.js connection options. */
export function connectionOptions(settings: Settings): ConnectionOptions {
  const opts: ConnectionOptions = {
    servers: serverList(settings),
    timeout: settings.connectTimeout,
    maxReconnectAttempts: settings.reconnect.maxAttempts,
    reconnectTimeWait: settings.reconnect.waitMs,
    reconnectJitter: settings.reconnect.jitterMs,
    // Fail fast when no server answers at start (a clear error beats a silent wait); once
    // connected, reconnects follow the reconnect policy above.
    waitOnFirstConnect: false,
  };
  if (settings.name) opts.name = settings.name;
  if (settings.user !== undefined) opts.user = settings.user;
  if (settings.pass !== undefined) opts.pass = settings.pass;
  if (settings.token !== undefined) opts.token = settings.token;
  const seed = settings.nkeySeed ?? (settings.nkeyFile ? readTextFile(settings.nkeyFile).trim() : undefined);
  if (seed) opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
  if (settings.credsFile) opts.authenticator = credsAuthenticator(new TextEncoder().encode(readTextFile(settings.credsFile)));
  if (settings.tls) {
    const tls = settings.tls === true ? {} : settings.tls;
    opts.tls = {
      ...(tls.caFile ? { caFile: tls.caFile } : {}),
      ...(tls.certFile ? { certFile: tls.certFile } : {}),
      ...(tls.keyFile ? { keyFile: tls.keyFile } : {}),
      ...(tls.handshakeFirst ? { handshakeFirst: true } : {}),
    };
  }
  return opts;
}

/** Opens a NATS connection for the given settings. */
export function openConnection(settings: Settings): Promise<NatsConnection> {
  return natsConnect(connectionOptions(settings));
}
