/**
 * Loading settings: defaults < file < environment < code. Pure: the file reader and the environment
 * are handed in by the runtime edge (sdk/transport), so this runs unchanged on Node, Deno and Bun.
 */
import * as v from "valibot";
import {
  KNOWN_KEYS,
  SECRET_KEYS,
  SETTINGS_ENV,
  SETTINGS_ENV_FALLBACKS,
  SETTINGS_FILE_ENV,
  type Settings,
  type SettingsInput,
  settingsSchema,
} from "./schema.ts";

/** A setting that cannot be read or is invalid; says which key, which value and where it came from. */
export class SettingsError extends Error {
  override name = "SettingsError";
  /** Dotted key at fault (`reconnect.waitMs`); empty when the whole document is. */
  readonly key: string;
  /** The offending value (secrets are replaced by "<redacted>"). */
  readonly value: unknown;
  /** A file path, "environment" or "code". */
  readonly source: string;
  /** valibot's issues, when validation found the fault. */
  readonly issues?: unknown[];

  constructor(
    message: string,
    details: { key: string; value: unknown; source: string; issues?: unknown[]; cause?: unknown },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.key = details.key;
    this.value = details.value;
    this.source = details.source;
    if (details.issues) this.issues = details.issues;
  }
}

/** What the runtime edge supplies; both optional so tests and browsers can pass plain data. */
export interface SettingsSources {
  /** Environment variables; absent means none (this module never reads the process environment itself). */
  env?: Record<string, string | undefined>;
  /** Reads a UTF-8 file synchronously; needed only when a settings file is named. */
  readTextFile?: (path: string) => string;
}

/** Where a key's value came from: a source, and for the environment the variable that set it. */
interface Origin {
  source: string;
  envVar?: string;
}
type OriginOf = (key: string) => Origin;

const REDACTED = "<redacted>";

function show(key: string, value: unknown): string {
  if (SECRET_KEYS.has(key.split(".")[0] ?? "")) return REDACTED;
  let shown: string;
  try {
    shown = JSON.stringify(value) ?? String(value);
  } catch {
    shown = String(value);
  }
  return shown.length > 80 ? `${shown.slice(0, 80)}…` : shown;
}

function safeValue(key: string, value: unknown): unknown {
  return SECRET_KEYS.has(key.split(".")[0] ?? "") ? REDACTED : value;
}

function where({ source, envVar }: Origin): string {
  if (source === "code") return "in code";
  if (source === "environment") return envVar ? `in the environment (${envVar})` : "in the environment";
  return `in ${source}`;
}

/** Looks a dotted key up, then its parents, so `servers.1` finds where `servers` came from. */
function lookup<T>(map: ReadonlyMap<string, T>, key: string): T | undefined {
  for (let k = key; k !== ""; k = k.slice(0, Math.max(0, k.lastIndexOf(".")))) {
    const hit = map.get(k);
    if (hit !== undefined) return hit;
  }
  return undefined;
}

/** Suggests the camelCase key a snake_case or mis-cased one meant (Celery users write `result_expires`). */
function suggestion(key: string, known: readonly string[]): string | undefined {
  const squash = (s: string) => s.toLowerCase().replace(/[_-]/g, "");
  return known.find((k) => squash(k) === squash(key));
}

function issueToError(issues: [v.BaseIssue<unknown>, ...v.BaseIssue<unknown>[]], originOf: OriginOf): SettingsError {
  const issue = issues[0];
  const key = issue.path?.map((item) => String(item.key)).join(".") ?? "";
  const origin = originOf(key);
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : "";
  if (issue.type === "strict_object" && issue.expected === "never" && issue.path?.length) {
    // An unknown key: valibot's input is the key itself; the value sits in the path.
    const last = issue.path[issue.path.length - 1];
    const value = last && "value" in last ? last.value : undefined;
    const parent = key.includes(".") ? key.slice(0, key.lastIndexOf(".")) : "";
    const known = KNOWN_KEYS[parent] ?? [];
    const name = key.slice(key.lastIndexOf(".") + 1);
    const meant = suggestion(name, known);
    const advice = meant ? `did you mean "${meant}"?` : "remove it or check its spelling";
    return new SettingsError(
      `unknown setting "${key}" = ${show(key, value)} ${where(origin)}: ${advice} (known keys: ${known.join(", ")})${more}`,
      { key, value: safeValue(key, value), source: origin.source, issues },
    );
  }
  const subject = key === "" ? "settings" : `setting "${key}"`;
  return new SettingsError(
    `${subject} = ${show(key, issue.input)} ${where(origin)}: ${issue.message}${more}`,
    { key, value: safeValue(key, issue.input), source: origin.source, issues },
  );
}

/** Checks one layer against the schema; returns it unchanged (merging works on inputs, defaults come last). */
function checkLayer(input: unknown, originOf: OriginOf): SettingsInput {
  const result = v.safeParse(settingsSchema, input);
  if (!result.success) throw issueToError(result.issues, originOf);
  return input as SettingsInput;
}

/** Rules spanning several keys, checked after merging so a later layer can fix an earlier one. */
function checkAcrossKeys(settings: Settings, originOf: OriginOf): void {
  const fail = (key: keyof Settings, value: unknown, why: string): never => {
    const origin = originOf(key);
    throw new SettingsError(`setting "${key}" = ${show(key, value)} ${where(origin)}: ${why}`, {
      key,
      value: safeValue(key, value),
      source: origin.source,
    });
  };
  const from = (key: string) => where(originOf(key));

  const { softTimeLimit, timeLimit } = settings;
  if (softTimeLimit !== undefined && timeLimit !== undefined && timeLimit < softTimeLimit) {
    fail(
      "timeLimit",
      timeLimit,
      `must be >= softTimeLimit, which is ${softTimeLimit} ${from("softTimeLimit")}: the soft limit warns the task before the hard one ends it`,
    );
  }

  if (settings.pass !== undefined && settings.user === undefined) {
    fail("pass", settings.pass, `needs "user" too`);
  }
  if (settings.nkeySeed !== undefined && settings.nkeyFile !== undefined) {
    fail("nkeyFile", settings.nkeyFile, `conflicts with "nkeySeed", set ${from("nkeySeed")}: give the seed or a file holding it, not both`);
  }
  // NATS authenticates a connection one way; silently preferring one would hide a misconfiguration.
  const methods = [
    ["user", "user/pass"],
    ["token", "token"],
    ["nkeySeed", "nkeySeed/nkeyFile"],
    ["nkeyFile", "nkeySeed/nkeyFile"],
    ["credsFile", "credsFile"],
  ] as const;
  const used = methods.filter(([key]) => settings[key] !== undefined);
  const first = used[0];
  const clash = used.find(([, method]) => first && method !== first[1]);
  if (first && clash) {
    fail(
      clash[0],
      settings[clash[0]],
      `conflicts with "${first[0]}", set ${from(first[0])}: authenticate with one of user/pass, token, nkeySeed/nkeyFile or credsFile, not several`,
    );
  }
}

function resolve(input: unknown, originOf: OriginOf): Settings {
  const result = v.safeParse(settingsSchema, input);
  if (!result.success) throw issueToError(result.issues, originOf);
  checkAcrossKeys(result.output, originOf);
  return result.output;
}

/** Validates `input` (from one `source`: a path, "environment" or "code") and applies the defaults. */
export function validateSettings(input: unknown, source: string): Settings {
  return resolve(input, () => ({ source }));
}

function syntaxError(path: string, kind: string, detail: string, line: number | undefined, cause: unknown): SettingsError {
  const at = line === undefined ? "" : ` at line ${line}`;
  return new SettingsError(`settings file ${path} has a ${kind} syntax error${at}: ${detail}`, {
    key: "",
    value: undefined,
    source: path,
    cause,
  });
}

function readJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    // Runtimes word this differently: V8 gives a position (newer: a line), Bun neither.
    const lineMatch = /line (\d+)/.exec(message);
    const posMatch = /position (\d+)/.exec(message);
    const line = lineMatch
      ? Number(lineMatch[1])
      : posMatch
      ? text.slice(0, Number(posMatch[1])).split("\n").length
      : undefined;
    throw syntaxError(path, "JSON", message, line, error);
  }
}

/** What this module uses of the `yaml` package. */
interface YamlParser {
  parse(text: string): unknown;
  YAMLParseError: abstract new (...args: never[]) => Error & { linePos?: [{ line: number }, ...unknown[]] };
}

/**
 * The `yaml` package, once loaded. It is loaded on demand: evaluating it cost a one-task script
 * 12 ms bundled and ~40 ms unbundled (docs/benchmarks.md), and most processes read JSON settings
 * or none at all.
 */
let yaml: YamlParser | undefined;

/**
 * Loads the YAML parser for settings files. {@link loadSettingsAsync} (and so `connect()`) calls it
 * when the settings file may be YAML; call it yourself before the synchronous
 * {@link loadSettings} reads a YAML file.
 */
export async function loadYamlParser(): Promise<void> {
  if (yaml) return;
  const m = await import("yaml");
  yaml = { parse: (text) => m.parse(text), YAMLParseError: m.YAMLParseError };
}

function readYaml(text: string, path: string): unknown {
  if (!yaml) {
    throw new SettingsError(
      `the settings file ${path} is read as YAML, and the YAML parser is loaded on demand: use \`await loadSettingsAsync(…)\` (connect() does), or \`await loadYamlParser()\` before loadSettings()`,
      { key: "file", value: path, source: path },
    );
  }
  try {
    return yaml.parse(text);
  } catch (error) {
    if (!(error instanceof yaml.YAMLParseError)) throw error;
    // yaml's message ends with " at line N, column M:" and a code frame; keep the sentence.
    const detail = (error.message.split("\n")[0] ?? "").replace(/ at line \d+, column \d+:?$/, "");
    throw syntaxError(path, "YAML", detail, error.linePos?.[0].line, error);
  }
}

/** Parses a settings file's text by its extension (.yaml/.yml, .json; otherwise JSON, then YAML) and checks it. */
export function parseSettingsText(text: string, path: string): SettingsInput {
  const body = text.replace(/^\uFEFF/, "");
  const ext = /\.([^./\\]+)$/.exec(path)?.[1]?.toLowerCase();
  let data: unknown;
  if (ext === "json") data = readJson(body, path);
  else if (ext === "yaml" || ext === "yml") data = readYaml(body, path);
  else {
    try {
      data = JSON.parse(body);
    } catch {
      data = readYaml(body, path);
    }
  }
  // An empty or comment-only YAML file is null: treat it as "no settings", not as an error.
  if (data === null || data === undefined) return {};
  if (typeof data !== "object" || Array.isArray(data)) {
    throw new SettingsError(
      `settings file ${path} must hold a mapping of settings (key: value), not ${show("", data)}`,
      { key: "", value: data, source: path },
    );
  }
  return checkLayer(data, () => ({ source: path }));
}

type EnvKey = keyof typeof SETTINGS_ENV;
const NUMBER_KEYS: ReadonlySet<EnvKey> = new Set<EnvKey>([
  "resultExpires", "connectTimeout", "requestTimeout", "softTimeLimit", "timeLimit", "concurrency",
  "prefetch", "ackWait", "maxDeliver", "maxPriority", "replicas",
]);
const BOOLEAN_KEYS: ReadonlySet<EnvKey> = new Set<EnvKey>(["events"]);
// Number("") is 0 and Number("0x1f") is 31: accept plain decimal notation only.
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Reads the environment into a layer, remembering which variable set each key (for messages). */
function readEnv(env: Record<string, string | undefined>): { input: Record<string, unknown>; vars: Map<string, string> } {
  const input: Record<string, unknown> = {};
  const vars = new Map<string, string>();
  for (const [key, primary] of Object.entries(SETTINGS_ENV) as [EnvKey, string][]) {
    const fallback = (SETTINGS_ENV_FALLBACKS as Partial<Record<EnvKey, string>>)[key];
    // An empty variable (`CELERITY_SERVERS=`) reads as unset, as shells and compose files intend.
    const name = [primary, fallback].find((n) => n !== undefined && (env[n] ?? "").trim() !== "");
    if (name === undefined) continue;
    const raw = (env[name] ?? "").trim();
    let value: unknown = raw;
    if (NUMBER_KEYS.has(key)) {
      if (!DECIMAL.test(raw)) {
        throw new SettingsError(`${name}=${JSON.stringify(raw)} is not a number (from the environment)`, {
          key,
          value: raw,
          source: "environment",
        });
      }
      value = Number(raw);
    } else if (BOOLEAN_KEYS.has(key)) {
      const lower = raw.toLowerCase();
      if (lower !== "true" && lower !== "false" && lower !== "1" && lower !== "0") {
        throw new SettingsError(
          `${name}=${JSON.stringify(raw)} is not a boolean (from the environment): use true, false, 1 or 0`,
          { key, value: raw, source: "environment" },
        );
      }
      value = lower === "true" || lower === "1";
    }
    const [top, sub] = key.split(".") as [string, string | undefined];
    if (sub === undefined) input[top] = value;
    else input[top] = { ...(input[top] as Record<string, unknown> | undefined), [sub]: value };
    vars.set(key, name);
  }
  return { input, vars };
}

function envOrigin(vars: ReadonlyMap<string, string>): OriginOf {
  return (key) => {
    const envVar = lookup(vars, key);
    return envVar === undefined ? { source: "environment" } : { source: "environment", envVar };
  };
}

/** Reads the CELERITY_* variables (and NATS_URL, NATS_CREDS) into a checked layer of settings. */
export function settingsFromEnv(env: Record<string, string | undefined>): SettingsInput {
  const { input, vars } = readEnv(env);
  return checkLayer(input, envOrigin(vars));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Lays `layer` over `target`: nested objects (tls, reconnect) merge key by key, anything else
 * (arrays included) replaces; `undefined` means "not set here". Records each key's source.
 */
function mergeLayer(target: Record<string, unknown>, layer: object, origin: OriginOf, origins: Map<string, Origin>): void {
  for (const [key, value] of Object.entries(layer)) {
    if (value === undefined) continue;
    const prev = target[key];
    // `tls: true` only says "TLS on"; over an object of files it must not erase them.
    if (value === true && isPlainObject(prev)) continue;
    if (isPlainObject(value)) {
      const merged: Record<string, unknown> = isPlainObject(prev) ? { ...prev } : {};
      for (const [sub, subValue] of Object.entries(value)) {
        if (subValue === undefined) continue;
        merged[sub] = subValue;
        origins.set(`${key}.${sub}`, origin(`${key}.${sub}`));
      }
      target[key] = merged;
    } else {
      target[key] = value;
    }
    origins.set(key, origin(key));
  }
}

/** The settings file to read: `file` in code, else the one CELERITY_SETTINGS names, else none. */
function settingsFilePath(file: string | undefined, env: Record<string, string | undefined>): string | undefined {
  return file ?? (env[SETTINGS_FILE_ENV]?.trim() || undefined);
}

/**
 * As {@link loadSettings}, loading the YAML parser first when the settings file is not `.json`
 * (so a process without a YAML file never evaluates it). `connect()` uses this.
 */
export async function loadSettingsAsync(code: SettingsInput & { file?: string } = {}, sources: SettingsSources = {}): Promise<Settings> {
  const path = settingsFilePath(code.file, sources.env ?? {});
  if (path !== undefined && !/\.json$/i.test(path)) await loadYamlParser();
  return loadSettings(code, sources);
}

/**
 * Resolves settings. Precedence: defaults < file named by env CELERITY_SETTINGS (or `file` in code)
 * < environment < code. Each layer is checked on its own, so an error names the layer at fault.
 */
export function loadSettings(code: SettingsInput & { file?: string } = {}, sources: SettingsSources = {}): Settings {
  const env = sources.env ?? {};
  const { file, ...codeInput } = code;
  const merged: Record<string, unknown> = {};
  const origins = new Map<string, Origin>();

  const namedBy = file !== undefined ? "`file` in code" : SETTINGS_FILE_ENV;
  const path = settingsFilePath(file, env);
  if (path !== undefined) {
    const origin: Origin = file !== undefined ? { source: "code" } : { source: "environment", envVar: SETTINGS_FILE_ENV };
    if (!sources.readTextFile) {
      throw new SettingsError(
        `the settings file ${path} named by ${namedBy} cannot be read: no readTextFile was supplied (the runtime edge passes one)`,
        { key: "file", value: path, source: origin.source },
      );
    }
    let text: string;
    try {
      text = sources.readTextFile(path);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new SettingsError(`the settings file ${path} named by ${namedBy} could not be read: ${reason}`, {
        key: "file",
        value: path,
        source: origin.source,
        cause: error,
      });
    }
    mergeLayer(merged, parseSettingsText(text, path), () => ({ source: path }), origins);
  }

  const fromEnv = readEnv(env);
  const envOriginOf = envOrigin(fromEnv.vars);
  mergeLayer(merged, checkLayer(fromEnv.input, envOriginOf), envOriginOf, origins);

  const codeOrigin: OriginOf = () => ({ source: "code" });
  mergeLayer(merged, checkLayer(codeInput, codeOrigin), codeOrigin, origins);

  return resolve(merged, (key) => lookup(origins, key) ?? { source: "defaults" });
}
