/**
 * The settings schema: every key, its type, its default and the environment variable that sets it.
 * One valibot schema serves twice: every key is optional on input, so it checks each layer (file,
 * environment, code) on its own, and its defaults complete the merged result.
 */
import * as v from "valibot";

/** Default values, named once so the schema, the docs and the tests agree. */
export const SETTINGS_DEFAULTS = {
  namespace: "celerity",
  resultExpires: 86_400,
  connectTimeout: 10_000,
  reconnect: { maxAttempts: -1, waitMs: 2_000, jitterMs: 100 },
  requestTimeout: 5_000,
  concurrency: 1,
  ackWait: 30,
  maxDeliver: 10,
  timezone: "UTC",
  maxPriority: 9,
  events: true,
  eventsMaxAge: 86_400,
  eventsMaxBytes: 1_073_741_824,
  replicas: 1,
  storage: "file",
  dlqMaxAge: 30 * 86_400,
  dedupeWindow: 120,
  revokeExpires: 86_400,
} as const;

/** Setting key (dotted for nested keys) → the environment variable that sets it. */
export const SETTINGS_ENV = {
  servers: "CELERITY_SERVERS",
  name: "CELERITY_NAME",
  user: "CELERITY_USER",
  pass: "CELERITY_PASS",
  token: "CELERITY_TOKEN",
  nkeySeed: "CELERITY_NKEY_SEED",
  nkeyFile: "CELERITY_NKEY_FILE",
  credsFile: "CELERITY_CREDS",
  "tls.caFile": "CELERITY_TLS_CA",
  "tls.certFile": "CELERITY_TLS_CERT",
  "tls.keyFile": "CELERITY_TLS_KEY",
  namespace: "CELERITY_NAMESPACE",
  resultExpires: "CELERITY_RESULT_EXPIRES",
  connectTimeout: "CELERITY_CONNECT_TIMEOUT",
  requestTimeout: "CELERITY_REQUEST_TIMEOUT",
  softTimeLimit: "CELERITY_SOFT_TIME_LIMIT",
  timeLimit: "CELERITY_TIME_LIMIT",
  concurrency: "CELERITY_CONCURRENCY",
  prefetch: "CELERITY_PREFETCH",
  ackWait: "CELERITY_ACK_WAIT",
  maxDeliver: "CELERITY_MAX_DELIVER",
  timezone: "CELERITY_TIMEZONE",
  maxPriority: "CELERITY_MAX_PRIORITY",
  events: "CELERITY_EVENTS",
  replicas: "CELERITY_REPLICAS",
  storage: "CELERITY_STORAGE",
} as const;

/** The NATS tools' own variables, read only when the Celerity one is unset, so an existing NATS setup just works. */
export const SETTINGS_ENV_FALLBACKS = {
  servers: "NATS_URL",
  credsFile: "NATS_CREDS",
} as const satisfies Partial<Record<keyof typeof SETTINGS_ENV, string>>;

/** The environment variable naming the settings file (YAML or JSON). */
export const SETTINGS_FILE_ENV = "CELERITY_SETTINGS";

// Messages are completions of `setting "key" = value in source: …`, so they read as one sentence.
const text = () => v.string("must be a string");
const path = () => v.pipe(v.string("must be a file path"), v.minLength(1, "must be a file path"));
const positive = () =>
  v.pipe(v.number("must be a number"), v.finite("must be a finite number"), v.gtValue(0, "must be > 0"));
const nonNegative = () =>
  v.pipe(v.number("must be a number"), v.finite("must be a finite number"), v.minValue(0, "must be >= 0"));
const int = (min: number, max?: number) => {
  const range = max === undefined ? `must be >= ${min}` : `must be between ${min} and ${max}`;
  return v.pipe(
    v.number("must be a number"),
    v.integer("must be an integer"),
    v.minValue(min, range),
    v.maxValue(max ?? Number.MAX_SAFE_INTEGER, range),
  );
};

const URL_MESSAGE = 'must be a NATS URL such as "nats://127.0.0.1:4222", or a list of them';
const serverUrl = v.pipe(v.string(URL_MESSAGE), v.trim(), v.regex(/^[^\s,]+$/, URL_MESSAGE));
const AT_LEAST_ONE = "must name at least one server (leave it out to use an embedded local server)";
// A lazy schema picks the branch by shape, so errors come from the branch the user meant
// (a union would only say "expected string or array").
const servers = v.lazy((input) =>
  Array.isArray(input)
    ? v.pipe(v.array(serverUrl, URL_MESSAGE), v.minLength(1, AT_LEAST_ONE))
    : v.pipe(
      v.string(URL_MESSAGE),
      // "a,b" is how the environment spells a list; accept it everywhere so the forms agree.
      v.transform((s) => s.split(",").map((part) => part.trim()).filter((part) => part !== "")),
      v.minLength(1, AT_LEAST_ONE),
      v.array(serverUrl),
    )
);

const tlsObject = v.strictObject(
  {
    caFile: v.optional(path()),
    certFile: v.optional(path()),
    keyFile: v.optional(path()),
    handshakeFirst: v.optional(v.boolean("must be true or false")),
  },
  "must be true or an object with caFile, certFile, keyFile, handshakeFirst",
);
const tls = v.lazy((input) => input === true ? v.literal(true) : tlsObject);

const clip = (shown: string) => shown.length > 80 ? `${shown.slice(0, 80)}…` : shown;

const TIMEZONE_MESSAGE = 'must be an IANA time zone such as "UTC" or "Europe/Paris"';
function isTimeZone(timeZone: string): boolean {
  // The default needs no check, and checking loads ICU: 26–34 ms of every one-shot process here.
  if (timeZone === "UTC") return true;
  try {
    new Intl.DateTimeFormat(undefined, { timeZone });
    return true;
  } catch (error) {
    if (error instanceof RangeError) return false;
    throw error;
  }
}

const D = SETTINGS_DEFAULTS;

const QUEUE_TOKEN = /^[A-Za-z0-9_-]+$/;
const queueName = v.pipe(text(), v.regex(QUEUE_TOKEN, "must be a queue name: letters, digits, _ and -"));

/** Options of one queue, for the workers that serve it (`queues.<name>` in settings). */
const queueOptions = v.strictObject(
  {
    /** One task at a time across ALL workers: the server holds one unacknowledged message. */
    serial: v.optional(v.boolean("must be true or false")),
    /** Tasks of this queue one worker runs at once (within the worker's concurrency). */
    concurrency: v.optional(int(1)),
    /** Messages of this queue one worker holds at once. */
    prefetch: v.optional(int(1)),
    /** Seconds without an ack or progress before the server redelivers a task of this queue. */
    ackWait: v.optional(positive()),
    /** Highest priority first: the queue is served by one consumer per priority level. */
    priorities: v.optional(v.boolean("must be true or false")),
  },
  "must be an object with serial, concurrency, prefetch, ackWait, priorities",
);

/** The full settings schema; every key is optional on input and defaults fill the output. */
export const settingsSchema = v.strictObject(
  {
    /** NATS server URLs; absent means none is configured (the caller may start an embedded server). */
    servers: v.optional(servers),
    /** Connection name shown by `nats server report connections`. */
    name: v.optional(text()),
    user: v.optional(text()),
    pass: v.optional(text()),
    token: v.optional(text()),
    nkeySeed: v.optional(v.pipe(text(), v.startsWith("SU", 'must be an nkey user seed (it starts with "SU")'))),
    nkeyFile: v.optional(path()),
    credsFile: v.optional(path()),
    tls: v.optional(tls),
    namespace: v.optional(
      v.pipe(
        text(),
        v.check(
          (s) => /^[A-Za-z0-9_-]+$/.test(s),
          // The same sentence as the protocol's token check, so the SDK speaks with one voice.
          (issue) => `namespace ${clip(JSON.stringify(issue.input))} is not a valid subject token: use letters, digits, _ and -`,
        ),
      ),
      D.namespace,
    ),
    resultExpires: v.optional(positive(), D.resultExpires),
    connectTimeout: v.optional(positive(), D.connectTimeout),
    reconnect: v.optional(
      v.strictObject(
        {
          maxAttempts: v.optional(int(-1), D.reconnect.maxAttempts),
          waitMs: v.optional(nonNegative(), D.reconnect.waitMs),
          jitterMs: v.optional(nonNegative(), D.reconnect.jitterMs),
        },
        "must be an object with maxAttempts, waitMs, jitterMs",
      ),
      {},
    ),
    requestTimeout: v.optional(positive(), D.requestTimeout),
    softTimeLimit: v.optional(positive()),
    timeLimit: v.optional(positive()),
    concurrency: v.optional(int(1), D.concurrency),
    prefetch: v.optional(int(1)),
    ackWait: v.optional(positive(), D.ackWait),
    maxDeliver: v.optional(int(1), D.maxDeliver),
    timezone: v.optional(v.pipe(text(), v.check(isTimeZone, TIMEZONE_MESSAGE)), D.timezone),
    maxPriority: v.optional(int(0, 9), D.maxPriority),
    events: v.optional(v.boolean("must be true or false"), D.events),
    eventsMaxAge: v.optional(positive(), D.eventsMaxAge),
    eventsMaxBytes: v.optional(int(1), D.eventsMaxBytes),
    replicas: v.optional(int(1, 5), D.replicas),
    storage: v.optional(v.picklist(["file", "memory"], 'must be "file" or "memory"'), D.storage),
    dlqMaxAge: v.optional(positive(), D.dlqMaxAge),
    dedupeWindow: v.optional(positive(), D.dedupeWindow),
    /** Task name or glob (`images.*`) → queue. Exact names win over globs; longer globs over shorter. */
    routes: v.optional(v.record(v.pipe(v.string(), v.minLength(1, "must not be empty")), queueName, "must map task names or globs to queue names")),
    /** Route a task with no queue by the first segment of its name (`images.resize` → `images`), Cadasta-style. */
    routeByFirstSegment: v.optional(v.boolean("must be true or false"), false),
    /** Declared queues and their options; a declared queue may be sent to before any worker serves it. */
    queues: v.optional(v.record(v.pipe(v.string(), v.regex(QUEUE_TOKEN, "must be a queue name: letters, digits, _ and -")), queueOptions, "must map queue names to queue options")),
    revokeExpires: v.optional(positive(), D.revokeExpires),
  },
  "must be an object of settings",
);

/** Fully-resolved settings: every default applied, `servers` always a list when present. */
export type Settings = v.InferOutput<typeof settingsSchema>;

/** Where a client connects when no server is configured: NATS's default port on this machine. */
export const DEFAULT_SERVERS: readonly string[] = ["nats://127.0.0.1:4222"];

/** The servers to try, in order: the configured ones, else {@link DEFAULT_SERVERS}. */
export function serverList(settings: Pick<Settings, "servers">): string[] {
  return [...(settings.servers?.length ? settings.servers : DEFAULT_SERVERS)];
}

/** Settings as a file, the environment or code may give them: every key optional. */
export type SettingsInput = v.InferInput<typeof settingsSchema>;

/** Known keys of each object level ("" is the top), for "unknown setting" messages. */
export const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  "": Object.keys(settingsSchema.entries),
  reconnect: Object.keys(SETTINGS_DEFAULTS.reconnect),
  tls: Object.keys(tlsObject.entries),
};

/** Keys whose values are secrets: messages and errors never repeat them. */
export const SECRET_KEYS: ReadonlySet<string> = new Set(["pass", "token", "nkeySeed"]);
