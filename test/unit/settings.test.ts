import { test } from "node:test";
import { spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import {
  loadSettings,
  loadSettingsAsync,
  loadYamlParser,
  parseSettingsText,
  SETTINGS_DEFAULTS,
  SETTINGS_ENV,
  SETTINGS_ENV_FALLBACKS,
  SETTINGS_FILE_ENV,
  settingsFromEnv,
  SettingsError,
  settingsSchema,
  validateSettings,
} from "../../sdk/settings/mod.ts";

// Inline inputs: a map of file contents stands in for the disk the runtime edge would read.
function files(contents: Record<string, string>): (path: string) => string {
  return (path) => {
    const text = contents[path];
    if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`);
    return text;
  };
}

/** Runs `fn`, expects a SettingsError and returns it for closer checks. */
function settingsError(fn: () => unknown): SettingsError {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof SettingsError, `expected a SettingsError, got ${String(error)}`);
    assert.equal(error.name, "SettingsError");
    return error;
  }
  assert.fail("expected a SettingsError, nothing was thrown");
}

const YAML_FILE = `
# Blue Sky style: one file, named by CELERITY_SETTINGS
servers:
  - nats://n1.example:4222
  - nats://n2.example:4222
namespace: images
concurrency: 4
reconnect:
  waitMs: 500
tls:
  caFile: /etc/ssl/ca.pem
`;

// First in this file, while the YAML parser is not loaded yet (tests of a file run in order).
test("settings - the YAML parser loads on demand: loadSettingsAsync() loads it, sync loadSettings() says how", async () => {
  const readTextFile = files({ "/etc/celerity.yaml": YAML_FILE, "/etc/celerity.json": '{"namespace": "j"}' });
  // JSON needs no parser, sync or not.
  assert.equal(loadSettings({ file: "/etc/celerity.json" }, { readTextFile }).namespace, "j");
  assert.equal((await loadSettingsAsync({ file: "/etc/celerity.json" }, { readTextFile })).namespace, "j");
  const err = settingsError(() => loadSettings({}, { env: { CELERITY_SETTINGS: "/etc/celerity.yaml" }, readTextFile }));
  assert.match(err.message, /\/etc\/celerity\.yaml is read as YAML, and the YAML parser is loaded on demand: use `await loadSettingsAsync\(…\)`/);
  const s = await loadSettingsAsync({}, { env: { CELERITY_SETTINGS: "/etc/celerity.yaml" }, readTextFile });
  assert.equal(s.namespace, "images");
  // Loaded once, the synchronous reader has it too.
  assert.equal(loadSettings({ file: "/etc/celerity.yaml" }, { readTextFile }).concurrency, 4);
});

test("settings - importing the client evaluates no YAML parser until a YAML file is read", () => {
  // test/fixtures/trace_yaml.mjs reports every resolution of "yaml" on stderr.
  const hook = new URL("../fixtures/trace_yaml.mjs", import.meta.url).href;
  const script = `
    const { loadSettingsAsync } = await import("./sdk/client/mod.ts").then(() => import("./sdk/settings/mod.ts"));
    const readTextFile = (p) => (p.endsWith(".json") ? '{"namespace":"j"}' : "namespace: y\\n");
    await loadSettingsAsync({}, { env: {}, readTextFile });
    await loadSettingsAsync({ file: "s.json" }, { env: {}, readTextFile });
    process.stderr.write("JSON DONE\\n");
    const s = await loadSettingsAsync({ file: "s.yaml" }, { env: {}, readTextFile });
    process.stderr.write("YAML " + s.namespace + "\\n");`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--import", hook, "--input-type=module", "-e", script], { cwd: new URL("../..", import.meta.url), encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stderr.split("\n").filter((l) => /RESOLVED|DONE|YAML/.test(l));
  assert.deepEqual(lines, ["JSON DONE", "RESOLVED yaml", "YAML y"]);
});

test("settings - (the remaining tests read YAML synchronously: the parser is loaded here)", async () => {
  await loadYamlParser();
});

test("settings - with no file, environment or code every default applies", () => {
  const settings = loadSettings();
  assert.deepEqual(settings, {
    namespace: "celerity",
    resultExpires: 86400,
    connectTimeout: 10000,
    reconnect: { maxAttempts: -1, waitMs: 2000, jitterMs: 100 },
    requestTimeout: 5000,
    concurrency: 1,
    ackWait: 30,
    maxDeliver: 10,
    timezone: "UTC",
    maxPriority: 9,
    events: true,
    eventsMaxAge: 86400,
    eventsMaxBytes: 1073741824,
    replicas: 1,
    storage: "file",
    dlqMaxAge: 2592000,
    dedupeWindow: 120,
    revokeExpires: 86400,
    routeByFirstSegment: false,
  });
  // No server configured is meaningful (the caller may start an embedded one): it stays undefined.
  assert.equal(settings.servers, undefined);
  assert.equal(settings.prefetch, undefined);
  assert.equal(settings.softTimeLimit, undefined);
});

test("settings - the YAML file named by CELERITY_SETTINGS is read, nested objects completed by defaults", () => {
  const settings = loadSettings({}, {
    env: { CELERITY_SETTINGS: "/etc/celerity.yaml" },
    readTextFile: files({ "/etc/celerity.yaml": YAML_FILE }),
  });
  assert.deepEqual(settings.servers, ["nats://n1.example:4222", "nats://n2.example:4222"]);
  assert.equal(settings.namespace, "images");
  assert.equal(settings.concurrency, 4);
  assert.deepEqual(settings.reconnect, { maxAttempts: -1, waitMs: 500, jitterMs: 100 });
  assert.deepEqual(settings.tls, { caFile: "/etc/ssl/ca.pem" });
  assert.equal(settings.resultExpires, 86400);
});

test("settings - a JSON file is read, and `file` in code names it", () => {
  const settings = loadSettings({ file: "/srv/celerity.json" }, {
    readTextFile: files({ "/srv/celerity.json": '{ "servers": "nats://one:4222", "storage": "memory", "events": false }' }),
  });
  assert.deepEqual(settings.servers, ["nats://one:4222"]);
  assert.equal(settings.storage, "memory");
  assert.equal(settings.events, false);
});

test("settings - `file` in code wins over CELERITY_SETTINGS", () => {
  const settings = loadSettings({ file: "/b.json" }, {
    env: { CELERITY_SETTINGS: "/a.json" },
    readTextFile: files({ "/a.json": '{"namespace":"a"}', "/b.json": '{"namespace":"b"}' }),
  });
  assert.equal(settings.namespace, "b");
});

test("settings - a file without a known extension is tried as JSON, then as YAML", () => {
  assert.deepEqual(parseSettingsText('{"replicas": 3}', "/etc/celerity.conf"), { replicas: 3 });
  assert.deepEqual(parseSettingsText("replicas: 3\n", "/etc/celerity.conf"), { replicas: 3 });
});

test("settings - an empty YAML file means no settings", () => {
  assert.deepEqual(parseSettingsText("# nothing yet\n", "/etc/celerity.yaml"), {});
});

test("settings - the environment overrides the file", () => {
  const settings = loadSettings({}, {
    env: {
      CELERITY_SETTINGS: "/etc/celerity.yaml",
      CELERITY_NAMESPACE: "from-env",
      CELERITY_CONCURRENCY: "8",
      CELERITY_EVENTS: "0",
    },
    readTextFile: files({ "/etc/celerity.yaml": YAML_FILE }),
  });
  assert.equal(settings.namespace, "from-env");
  assert.equal(settings.concurrency, 8);
  assert.equal(settings.events, false);
  // Keys the environment leaves alone keep the file's value.
  assert.deepEqual(settings.servers, ["nats://n1.example:4222", "nats://n2.example:4222"]);
});

test("settings - code overrides the environment, nested objects merging key by key", () => {
  const settings = loadSettings(
    { namespace: "from-code", reconnect: { maxAttempts: 5 }, tls: { certFile: "/c.pem", keyFile: "/k.pem" } },
    {
      env: { CELERITY_SETTINGS: "/etc/celerity.yaml", CELERITY_NAMESPACE: "from-env", CELERITY_TLS_CA: "/env-ca.pem" },
      readTextFile: files({ "/etc/celerity.yaml": YAML_FILE }),
    },
  );
  assert.equal(settings.namespace, "from-code");
  assert.deepEqual(settings.reconnect, { maxAttempts: 5, waitMs: 500, jitterMs: 100 });
  assert.deepEqual(settings.tls, { caFile: "/env-ca.pem", certFile: "/c.pem", keyFile: "/k.pem" });
});

test("settings - arrays replace rather than merge, and `undefined` in code changes nothing", () => {
  const settings = loadSettings({ servers: ["nats://code:4222"], name: undefined }, {
    env: { CELERITY_SERVERS: "nats://env1:4222,nats://env2:4222", CELERITY_NAME: "env-name" },
  });
  assert.deepEqual(settings.servers, ["nats://code:4222"]);
  assert.equal(settings.name, "env-name");
});

test("settings - `tls: true` over an object of files keeps the files", () => {
  const settings = loadSettings({ tls: true }, { env: { CELERITY_TLS_CA: "/ca.pem" } });
  assert.deepEqual(settings.tls, { caFile: "/ca.pem" });
  assert.equal(loadSettings({ tls: true }).tls, true);
});

test("settings - servers from the environment are a comma-separated list", () => {
  const layer = settingsFromEnv({ CELERITY_SERVERS: " nats://a:4222, nats://b:4222 ,," });
  assert.equal(layer.servers, "nats://a:4222, nats://b:4222 ,,");
  const settings = loadSettings({}, { env: { CELERITY_SERVERS: " nats://a:4222, nats://b:4222 ,," } });
  assert.deepEqual(settings.servers, ["nats://a:4222", "nats://b:4222"]);
});

test("settings - NATS_URL and NATS_CREDS are read when the CELERITY_* variable is unset", () => {
  assert.deepEqual(loadSettings({}, { env: { NATS_URL: "nats://nats:4222", NATS_CREDS: "/u.creds" } }).servers, [
    "nats://nats:4222",
  ]);
  assert.equal(loadSettings({}, { env: { NATS_CREDS: "/u.creds" } }).credsFile, "/u.creds");
  const both = loadSettings({}, { env: { NATS_URL: "nats://nats:4222", CELERITY_SERVERS: "nats://mine:4222" } });
  assert.deepEqual(both.servers, ["nats://mine:4222"]);
});

test("settings - an empty environment variable reads as unset", () => {
  const settings = loadSettings({}, { env: { CELERITY_SERVERS: "", CELERITY_CONCURRENCY: "  ", CELERITY_SETTINGS: "" } });
  assert.equal(settings.servers, undefined);
  assert.equal(settings.concurrency, 1);
});

test("settings - TZ is not read: the timezone comes from CELERITY_TIMEZONE only", () => {
  assert.equal(loadSettings({}, { env: { TZ: "Europe/Paris" } }).timezone, "UTC");
  assert.equal(loadSettings({}, { env: { CELERITY_TIMEZONE: "Europe/Paris" } }).timezone, "Europe/Paris");
});

test("settings - every numeric environment variable is coerced to a number", () => {
  const layer = settingsFromEnv({
    CELERITY_RESULT_EXPIRES: "60",
    CELERITY_CONNECT_TIMEOUT: "2500",
    CELERITY_REQUEST_TIMEOUT: "1500.5",
    CELERITY_SOFT_TIME_LIMIT: "10",
    CELERITY_TIME_LIMIT: "20",
    CELERITY_CONCURRENCY: "3",
    CELERITY_PREFETCH: "6",
    CELERITY_ACK_WAIT: "45",
    CELERITY_MAX_DELIVER: "4",
    CELERITY_MAX_PRIORITY: "0",
    CELERITY_REPLICAS: "3",
  });
  assert.deepEqual(layer, {
    resultExpires: 60,
    connectTimeout: 2500,
    requestTimeout: 1500.5,
    softTimeLimit: 10,
    timeLimit: 20,
    concurrency: 3,
    prefetch: 6,
    ackWait: 45,
    maxDeliver: 4,
    maxPriority: 0,
    replicas: 3,
  });
});

test("settings - an unknown key in the file names the key, the value and the file", () => {
  const error = settingsError(() =>
    loadSettings({}, {
      env: { CELERITY_SETTINGS: "/etc/celerity.yaml" },
      readTextFile: files({ "/etc/celerity.yaml": "brokerUrl: amqp://x\n" }),
    })
  );
  assert.match(
    error.message,
    /^unknown setting "brokerUrl" = "amqp:\/\/x" in \/etc\/celerity\.yaml: remove it or check its spelling \(known keys: servers, name, user, /,
  );
  assert.equal(error.key, "brokerUrl");
  assert.equal(error.value, "amqp://x");
  assert.equal(error.source, "/etc/celerity.yaml");
  assert.ok(Array.isArray(error.issues) && error.issues.length === 1);
});

test("settings - a snake_case key is pointed to its camelCase name", () => {
  const error = settingsError(() => parseSettingsText("result_expires: 60\n", "/etc/celerity.yaml"));
  assert.match(error.message, /^unknown setting "result_expires" = 60 in \/etc\/celerity\.yaml: did you mean "resultExpires"\?/);
});

test("settings - an unknown nested key is named by its dotted path", () => {
  const error = settingsError(() => loadSettings({ reconnect: { wait: 5 } } as never));
  assert.match(error.message, /^unknown setting "reconnect\.wait" = 5 in code: .*\(known keys: maxAttempts, waitMs, jitterMs\)$/);
  assert.equal(error.key, "reconnect.wait");
});

test("settings - an invalid value in code names the key, the value and valibot's message", () => {
  const error = settingsError(() => loadSettings({ resultExpires: -5 }));
  assert.equal(error.message, 'setting "resultExpires" = -5 in code: must be > 0');
  assert.equal(error.key, "resultExpires");
  assert.equal(error.value, -5);
  assert.equal(error.source, "code");
});

test("settings - an invalid nested value names its dotted path and the file", () => {
  const error = settingsError(() => parseSettingsText('{"reconnect": {"waitMs": "soon"}}', "/etc/c.json"));
  assert.equal(error.message, 'setting "reconnect.waitMs" = "soon" in /etc/c.json: must be a number');
  assert.equal(error.key, "reconnect.waitMs");
});

test("settings - an invalid value in the environment names the variable", () => {
  const notNumber = settingsError(() => loadSettings({}, { env: { CELERITY_RESULT_EXPIRES: "abc" } }));
  assert.equal(notNumber.message, 'CELERITY_RESULT_EXPIRES="abc" is not a number (from the environment)');
  assert.equal(notNumber.key, "resultExpires");
  assert.equal(notNumber.value, "abc");
  assert.equal(notNumber.source, "environment");

  const hex = settingsError(() => settingsFromEnv({ CELERITY_CONCURRENCY: "0x10" }));
  assert.match(hex.message, /^CELERITY_CONCURRENCY="0x10" is not a number/);

  const notBoolean = settingsError(() => settingsFromEnv({ CELERITY_EVENTS: "yes" }));
  assert.match(notBoolean.message, /^CELERITY_EVENTS="yes" is not a boolean \(from the environment\)/);

  const outOfRange = settingsError(() => loadSettings({}, { env: { CELERITY_REPLICAS: "7" } }));
  assert.equal(outOfRange.message, 'setting "replicas" = 7 in the environment (CELERITY_REPLICAS): must be between 1 and 5');
});

test("settings - a namespace that is not one subject token is refused", () => {
  const error = settingsError(() => loadSettings({ namespace: "a.b" }));
  assert.match(error.message, /namespace "a\.b" is not a valid subject token: use letters, digits, _ and -$/);
  assert.equal(error.key, "namespace");
  assert.equal(error.value, "a.b");
});

test("settings - timeLimit below softTimeLimit is refused, naming where each came from", () => {
  const error = settingsError(() => loadSettings({ timeLimit: 10 }, { env: { CELERITY_SOFT_TIME_LIMIT: "30" } }));
  assert.match(
    error.message,
    /^setting "timeLimit" = 10 in code: must be >= softTimeLimit, which is 30 in the environment \(CELERITY_SOFT_TIME_LIMIT\)/,
  );
  assert.equal(error.key, "timeLimit");
  assert.equal(error.source, "code");
  // Equal limits, or a later layer raising the hard limit, are fine.
  assert.equal(loadSettings({ timeLimit: 30 }, { env: { CELERITY_SOFT_TIME_LIMIT: "30" } }).timeLimit, 30);
});

test("settings - a token with a user is refused, without repeating the secret", () => {
  const error = settingsError(() => loadSettings({ user: "bob" }, { env: { CELERITY_TOKEN: "s3cret" } }));
  assert.match(
    error.message,
    /^setting "token" = <redacted> in the environment \(CELERITY_TOKEN\): conflicts with "user", set in code: authenticate with one of/,
  );
  assert.doesNotMatch(error.message, /s3cret/);
  assert.equal(error.value, "<redacted>");
  // user with pass is one method, not two.
  const ok = loadSettings({ user: "bob", pass: "pw" });
  assert.equal(ok.user, "bob");
  assert.equal(ok.pass, "pw");
});

test("settings - a pass without a user is refused", () => {
  const error = settingsError(() => loadSettings({ pass: "pw" }));
  assert.match(error.message, /^setting "pass" = <redacted> in code: needs "user" too$/);
});

test("settings - an nkey seed must look like a user seed", () => {
  const error = settingsError(() => loadSettings({ nkeySeed: "SAxxxx" }));
  assert.match(error.message, /^setting "nkeySeed" = <redacted> in code: must be an nkey user seed/);
  assert.equal(loadSettings({ nkeySeed: "SUABC" }).nkeySeed, "SUABC");
});

test("settings - an unknown time zone is refused", () => {
  const error = settingsError(() => loadSettings({}, { env: { CELERITY_TIMEZONE: "Mars/Olympus" } }));
  assert.match(error.message, /^setting "timezone" = "Mars\/Olympus" in the environment \(CELERITY_TIMEZONE\): must be an IANA time zone/);
});

test("settings - an empty server list is refused rather than read as 'no server'", () => {
  const error = settingsError(() => loadSettings({ servers: [] }));
  assert.match(error.message, /^setting "servers" = \[\] in code: must name at least one server/);
});

test("settings - a long offending value is truncated at 80 characters", () => {
  const error = settingsError(() => loadSettings({ namespace: "x.".repeat(100) }));
  const shown = /= ("x\.[^ ]*) in code/.exec(error.message)?.[1];
  assert.equal(shown, `${JSON.stringify("x.".repeat(100)).slice(0, 80)}…`);
});

test("settings - a YAML syntax error names the file and the line", () => {
  const error = settingsError(() =>
    loadSettings({}, {
      env: { CELERITY_SETTINGS: "/etc/celerity.yaml" },
      readTextFile: files({ "/etc/celerity.yaml": "namespace: images\nservers: [nats://a:4222\nconcurrency: 2\n" }),
    })
  );
  assert.match(error.message, /^settings file \/etc\/celerity\.yaml has a YAML syntax error at line 3: /);
  assert.equal(error.source, "/etc/celerity.yaml");
});

test("settings - a JSON syntax error names the file and the line", () => {
  const error = settingsError(() => parseSettingsText('{\n  "namespace": "a",\n  "replicas" 3\n}', "/etc/celerity.json"));
  assert.match(error.message, /^settings file \/etc\/celerity\.json has a JSON syntax error at line 3: /);
});

test("settings - a file that is not a mapping is refused", () => {
  const error = settingsError(() => parseSettingsText("- nats://a:4222\n", "/etc/celerity.yml"));
  assert.match(error.message, /^settings file \/etc\/celerity\.yml must hold a mapping of settings/);
});

test("settings - a missing file named by CELERITY_SETTINGS says it could not be read", () => {
  const error = settingsError(() =>
    loadSettings({}, { env: { CELERITY_SETTINGS: "/nowhere.yaml" }, readTextFile: files({}) })
  );
  assert.equal(
    error.message,
    "the settings file /nowhere.yaml named by CELERITY_SETTINGS could not be read: ENOENT: no such file or directory, open '/nowhere.yaml'",
  );
  assert.equal(error.key, "file");
  assert.equal(error.value, "/nowhere.yaml");
  assert.equal(error.source, "environment");
  assert.ok(error.cause instanceof Error);
});

test("settings - a named file without a readTextFile is an error, not silently skipped", () => {
  const error = settingsError(() => loadSettings({}, { env: { CELERITY_SETTINGS: "/etc/celerity.yaml" } }));
  assert.match(error.message, /^the settings file \/etc\/celerity\.yaml named by CELERITY_SETTINGS cannot be read: no readTextFile/);
});

test("settings - validateSettings applies defaults and names its source", () => {
  assert.equal(validateSettings({ replicas: 3 }, "code").replicas, 3);
  assert.equal(validateSettings({}, "code").maxDeliver, 10);
  const error = settingsError(() => validateSettings({ maxPriority: 10 }, "/etc/x.yaml"));
  assert.equal(error.message, 'setting "maxPriority" = 10 in /etc/x.yaml: must be between 0 and 9');
  assert.equal(error.source, "/etc/x.yaml");
});

test("settings - SETTINGS_ENV names a CELERITY_* variable for keys of the schema", () => {
  const topKeys = Object.keys(settingsSchema.entries);
  for (const [key, name] of Object.entries(SETTINGS_ENV)) {
    assert.ok(topKeys.includes(key.split(".")[0] ?? ""), `${key} is not a setting`);
    assert.match(name, /^CELERITY_[A-Z_]+$/);
  }
  assert.equal(SETTINGS_FILE_ENV, "CELERITY_SETTINGS");
  assert.equal(SETTINGS_DEFAULTS.dlqMaxAge, 30 * 24 * 3600);
});

test("settings - docs/settings.md lists every key and every environment variable", () => {
  const docs = readFileSync(new URL("../../docs/settings.md", import.meta.url), "utf8");
  for (const key of [...Object.keys(settingsSchema.entries), "reconnect.maxAttempts", "tls.caFile"]) {
    assert.ok(docs.includes(`\`${key}\``), `docs/settings.md does not mention \`${key}\``);
  }
  for (const name of [...Object.values(SETTINGS_ENV), ...Object.values(SETTINGS_ENV_FALLBACKS), SETTINGS_FILE_ENV]) {
    assert.ok(docs.includes(`\`${name}\``), `docs/settings.md does not mention \`${name}\``);
  }
});

test("settings - the module stays pure: no node:, Deno, Bun or process", () => {
  const dir = new URL("../../sdk/settings/", import.meta.url);
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".ts"))) {
    const source = readFileSync(new URL(file, dir), "utf8");
    assert.doesNotMatch(source, /from "node:|import\("node:|\b(Deno|Bun|process)\.[A-Za-z]/, `${file} reaches for the runtime`);
  }
});
