/**
 * Locating the nats-server binary. Tests run real servers, so a missing binary must fail loudly with
 * the one command that fixes it rather than with a spawn ENOENT deep inside a test.
 * @module
 */
import { accessSync, constants, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import process from "node:process";

const INSTALL_HINT =
  "nats-server was not found: run `sudo apt-get install -y nats-server` (Debian/Ubuntu) or set NATS_SERVER=/path/to/nats-server";

/** Thrown by {@link findNatsServer} when no runnable nats-server exists; the message says how to install one. */
export class NatsServerNotFoundError extends Error {
  override name = "NatsServerNotFoundError";
  constructor(detail?: string) {
    super(detail ? `${INSTALL_HINT} (${detail})` : INSTALL_HINT);
  }
}

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Returns the path of nats-server: NATS_SERVER, then PATH, then /usr/sbin and /usr/bin; throws {@link NatsServerNotFoundError}. */
export function findNatsServer(): string {
  const fromEnv = process.env.NATS_SERVER;
  if (fromEnv) {
    // An explicit choice that is wrong must not silently fall back to some other version on PATH.
    if (isExecutableFile(fromEnv)) return fromEnv;
    throw new NatsServerNotFoundError(`NATS_SERVER=${fromEnv} is not an executable file`);
  }
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, "nats-server");
    if (isExecutableFile(candidate)) return candidate;
  }
  // Debian installs into /usr/sbin, which is not on a non-root user's PATH.
  for (const candidate of ["/usr/sbin/nats-server", "/usr/bin/nats-server"]) {
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new NatsServerNotFoundError();
}
