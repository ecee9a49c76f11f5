/**
 * Settings for clients and workers: defaults < a YAML or JSON file (named by CELERITY_SETTINGS)
 * < CELERITY_* environment variables < code, validated with valibot. Pure: the runtime edge hands
 * in the environment and a file reader, so the same code runs on Node, Deno, Bun and in bundles.
 *
 * @example
 * ```ts
 * import { loadSettings } from "celerity/settings";
 * // The runtime edge passes the real environment and a file reader; any plain object will do.
 * const settings = loadSettings({ concurrency: 4 }, { env: { CELERITY_NAMESPACE: "images" } });
 * settings.namespace; // "images": the environment wins over the defaults
 * settings.concurrency; // 4: code wins over everything
 * settings.resultExpires; // 86400: the default
 * ```
 * @module
 */
export {
  /** Default value of every key that has one. */
  SETTINGS_DEFAULTS,
  /** Setting key (dotted when nested) → the environment variable that sets it. */
  SETTINGS_ENV,
  /** NATS_URL and NATS_CREDS, read when the CELERITY_* variable is unset. */
  SETTINGS_ENV_FALLBACKS,
  /** "CELERITY_SETTINGS": the variable naming the settings file. */
  SETTINGS_FILE_ENV,
  /** Fully-resolved settings (defaults applied). */
  type Settings,
  /** Settings as code, a file or the environment give them: every key optional. */
  type SettingsInput,
  /** The valibot schema itself, for tools that generate docs or JSON Schema from it. */
  settingsSchema,
  /** Where a client connects when no server is configured. */
  DEFAULT_SERVERS,
  /** The servers to try, in order: the configured ones, else DEFAULT_SERVERS. */
  serverList,
} from "./schema.ts";
export {
  /** Loads defaults < file < environment < code into resolved settings (a YAML file needs loadYamlParser() first). */
  loadSettings,
  /** loadSettings(), loading the YAML parser first when the settings file may be YAML. */
  loadSettingsAsync,
  /** Loads the YAML parser, which settings files need and most processes do not. */
  loadYamlParser,
  /** Parses and checks a settings file's text (YAML or JSON). */
  parseSettingsText,
  /** Reads CELERITY_* variables into a checked layer of settings. */
  settingsFromEnv,
  /** A setting that cannot be read or is invalid, with its key, value and source. */
  SettingsError,
  /** The environment and file reader the runtime edge supplies. */
  type SettingsSources,
  /** Validates one input and applies the defaults. */
  validateSettings,
} from "./load.ts";
