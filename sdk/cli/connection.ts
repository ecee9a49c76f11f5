/** Connecting for a command: the connection options, a shorter connect timeout, and clear failures. */
import { connect, type Client, type ConnectOptions } from "../client/mod.ts";
import { loadSettingsAsync, SETTINGS_DEFAULTS, SettingsError, type Settings } from "../settings/mod.ts";
import { connectionOptions, environment, readTextFile } from "../transport/mod.ts";
import type { ConnectionFlags } from "./args.ts";
import { CliError, EXIT } from "./io.ts";

/** A command line waits this long for a server unless the settings say otherwise (the library waits 10 s). */
export const CLI_CONNECT_TIMEOUT_MS = 5_000;

/** connect() options from `--servers`, `--namespace` and `--settings`; undefined flags are left out. */
export function connectInput(flags: ConnectionFlags): ConnectOptions {
  const input: ConnectOptions = {};
  if (flags.servers !== undefined) input.servers = flags.servers;
  if (flags.namespace !== undefined) input.namespace = flags.namespace;
  if (flags.settings !== undefined) input.file = flags.settings;
  return input;
}

/** Resolves the settings the command will use; throws SettingsError (exit 2) when they are invalid. */
export function resolveSettings(input: ConnectOptions): Promise<Settings> {
  const { connection: _c, ...settingsInput } = input;
  return loadSettingsAsync(settingsInput, { env: environment(), readTextFile });
}

/** The servers a connection will try, for messages. */
export function serverList(settings: Settings): string {
  try {
    return [connectionOptions(settings).servers].flat().join(",");
  } catch {
    return settings.servers?.join(",") ?? "the default server";
  }
}

/** True for a SettingsError, also one from another copy of the settings module. */
export function isSettingsError(err: unknown): err is SettingsError {
  return err instanceof SettingsError || (err instanceof Error && err.name === "SettingsError");
}

/**
 * Connects with the command's connection options. Invalid settings throw SettingsError (exit 2);
 * an unreachable server throws `cannot connect to <servers>: <reason>` (exit 1).
 */
export async function openClient(flags: ConnectionFlags): Promise<Client> {
  const input = connectInput(flags);
  const settings = await resolveSettings(input);
  if (settings.connectTimeout === SETTINGS_DEFAULTS.connectTimeout) input.connectTimeout = CLI_CONNECT_TIMEOUT_MS;
  try {
    return await connect(input);
  } catch (err) {
    if (isSettingsError(err)) throw err;
    throw new CliError(`cannot connect to ${serverList(settings)}: ${reason(err)}`, EXIT.failed);
  }
}

function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  const message = err.message || err.name;
  return typeof code === "string" && !message.includes(code) ? `${message} (${code})` : message;
}
