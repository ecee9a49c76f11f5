#!/usr/bin/env node
// Builds the one-file HPC callback: sdk/callback (and, with --signatures, the user's contracts)
// with every dependency inlined into one minified ESM file that runs with plain `node` and no
// node_modules. Usage:
//   node scripts/bundle-callback.mjs [--signatures ./contracts.ts] [-o respond.cjs]
// Four substitutions keep it small and free of native code (docs/hpc-callback.md):
//   - msgpackr-extract (a native addon msgpackr loads when present) stays out: msgpackr's pure JS is used.
//   - tweetnacl (33 KB; nkeys signs the server's nonce with it for creds/nkey auth) is replaced by
//     Ed25519 from node:crypto, which gives the same signatures.
//   - yaml (115 KB; settings files) is replaced by a reader of the block-YAML subset settings files
//     use (maps, lists, scalars, comments); anything else is refused with a message. JSON is unaffected.
//   - nats.js is not in the bundle: the callback speaks the few protocol lines it needs itself
//     (sdk/callback/direct.ts); the nats.js path of report(), for a caller's own connection, is
//     replaced by a stub. Start-up time is the callback's other budget (issue 7).
// node:crypto (nkey/creds signing) and node:tls are loaded on first use, not at start-up.
import { build } from "esbuild";
import { chmodSync, statSync } from "node:fs";
import { isAbsolute, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));

/** The size budget of the bundle in bytes (docs/hpc-callback.md). */
export const CALLBACK_BUDGET_BYTES = 200 * 1024;

// ESM bundles need a real `require` for the CommonJS dependencies that require node builtins.
/** The default output: a CommonJS file, the fastest to start (see bundleCallback). */
export const DEFAULT_OUTFILE = "respond.cjs";

/** ESM output (an outfile named *.mjs) gets a `require` for the CommonJS code inside (nats.js). */
const BANNER = "#!/usr/bin/env node\nimport{createRequire as __cr}from'module';const require=__cr(import.meta.url);";

const NACL_SHIM = `
let crypto;
const nodeCrypto = () => (crypto ??= require("node:crypto"));
const createPrivateKey = (o) => nodeCrypto().createPrivateKey(o);
const createPublicKey = (o) => nodeCrypto().createPublicKey(o);
const sign = (a, m, k) => nodeCrypto().sign(a, m, k);
const verify = (a, m, k, s) => nodeCrypto().verify(a, m, k, s);
const random = (n) => nodeCrypto().randomBytes(n);
// Ed25519 keys in DER: these prefixes wrap a raw 32-byte seed (PKCS#8) or public key (SPKI).
const PKCS8 = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI = Buffer.from("302a300506032b6570032100", "hex");
const privateKey = (seed) => createPrivateKey({ key: Buffer.concat([PKCS8, Buffer.from(seed.subarray(0, 32))]), format: "der", type: "pkcs8" });
function fromSeed(seed) {
  const publicKey = new Uint8Array(createPublicKey(privateKey(seed)).export({ format: "der", type: "spki" }).subarray(SPKI.length));
  const secretKey = new Uint8Array(64);
  secretKey.set(seed.subarray(0, 32));
  secretKey.set(publicKey, 32);
  return { publicKey, secretKey };
}
function detached(message, secretKey) {
  return new Uint8Array(sign(null, message, privateKey(secretKey)));
}
detached.verify = (message, signature, publicKey) =>
  verify(null, message, createPublicKey({ key: Buffer.concat([SPKI, Buffer.from(publicKey)]), format: "der", type: "spki" }), signature);
const unsupported = () => { throw new Error("xkey (curve) encryption is not part of the one-file callback"); };
export default {
  sign: { keyPair: { fromSeed }, detached },
  randomBytes: (n) => new Uint8Array(random(n)),
  scalarMult: { base: unsupported },
  box: Object.assign(unsupported, { open: unsupported }),
};
`;

const YAML_SHIM = `
export class YAMLParseError extends Error {
  constructor(message, line) {
    super(message);
    this.name = "YAMLParseError";
    this.linePos = [{ line, col: 1 }];
  }
}
const fail = (line, why) => {
  throw new YAMLParseError(why + " (the one-file callback reads block maps, lists and plain scalars: use a JSON settings file or CELERITY_* variables for more)", line);
};
function stripComment(s) {
  let quote = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote) { if (c === quote) quote = ""; }
    else if (c === '"' || c === "'") quote = c;
    else if (c === "#" && (i === 0 || s[i - 1] === " " || s[i - 1] === "\\t")) return s.slice(0, i);
  }
  return s;
}
const NUMBER = /^[-+]?(\\d+\\.?\\d*|\\.\\d+)([eE][-+]?\\d+)?$/;
function scalar(t, line) {
  t = t.trim();
  if (t.startsWith('"')) {
    try { return JSON.parse(t); } catch { fail(line, "unreadable double-quoted string"); }
  }
  if (t.startsWith("'")) {
    if (!t.endsWith("'") || t.length < 2) fail(line, "unterminated single-quoted string");
    return t.slice(1, -1).replace(/''/g, "'");
  }
  if (/^[|>&*!{%@\`]/.test(t)) fail(line, "unsupported YAML syntax " + JSON.stringify(t.slice(0, 20)));
  if (/^(true|True|TRUE)$/.test(t)) return true;
  if (/^(false|False|FALSE)$/.test(t)) return false;
  if (/^(null|Null|NULL|~)?$/.test(t)) return null;
  if (NUMBER.test(t)) return Number(t);
  return t;
}
function value(t, line) {
  t = t.trim();
  if (t.startsWith("[")) {
    if (!t.endsWith("]")) fail(line, "unterminated flow list");
    const inner = t.slice(1, -1).trim();
    return inner === "" ? [] : inner.split(",").map((x) => scalar(x, line));
  }
  return scalar(t, line);
}
export function parse(text) {
  const lines = [];
  String(text).split(/\\r?\\n/).forEach((raw, i) => {
    const s = stripComment(raw).replace(/\\s+$/, "");
    const t = s.trim();
    if (t === "" || t === "---" || t === "...") return;
    if (/^ *\\t/.test(s)) fail(i + 1, "a tab in the indentation");
    lines.push({ indent: s.length - s.trimStart().length, text: t, line: i + 1 });
  });
  let pos = 0;
  const isItem = (l) => l.text === "-" || l.text.startsWith("- ");
  function block() {
    const first = lines[pos];
    return isItem(first) ? list(first.indent) : map(first.indent);
  }
  function map(indent) {
    const out = {};
    while (pos < lines.length && lines[pos].indent === indent && !isItem(lines[pos])) {
      const { text, line } = lines[pos];
      const m = /^("(?:[^"\\\\]|\\\\.)*"|'(?:[^']|'')*'|[^\\s"'#][^:]*?)\\s*:(?:\\s+(.*))?$/.exec(text);
      if (!m) fail(line, "expected \\"key: value\\"");
      const key = String(scalar(m[1], line));
      pos++;
      const next = lines[pos];
      if (m[2] !== undefined && m[2] !== "") out[key] = value(m[2], line);
      else if (next && (next.indent > indent || (next.indent === indent && isItem(next)))) out[key] = block();
      else out[key] = null;
    }
    if (pos < lines.length && lines[pos].indent > indent) fail(lines[pos].line, "unexpected indentation");
    return out;
  }
  function list(indent) {
    const out = [];
    while (pos < lines.length && lines[pos].indent === indent && isItem(lines[pos])) {
      const { text, line } = lines[pos];
      const rest = text.slice(1).trim();
      pos++;
      if (rest === "") out.push(pos < lines.length && lines[pos].indent > indent ? block() : null);
      else if (/^[^"'\\[][^:]*:(\\s|$)/.test(rest)) fail(line, "a map inside a list");
      else out.push(value(rest, line));
    }
    return out;
  }
  if (lines.length === 0) return null;
  const doc = block();
  if (pos < lines.length) fail(lines[pos].line, "unexpected line");
  return doc;
}
`;

const NO_NATS_JS = `
export function deliverOverNats() {
  throw new Error("the one-file callback reports over its own connection: report() takes no nats.js connection here");
}
`;

/** esbuild plugin: the substitutions described at the top of this file. */
const substitutions = {
  name: "celerity-callback-substitutions",
  setup(b) {
    // msgpackr loads its native accelerator when present; the bundle never carries it, and answering
    // at once spares the search through node_modules folders that do not exist.
    b.onResolve({ filter: /^msgpackr-extract$/ }, () => ({ path: "msgpackr-extract", namespace: "celerity-absent" }));
    b.onLoad({ filter: /.*/, namespace: "celerity-absent" }, () => ({ contents: "module.exports = undefined;", loader: "js" }));
    b.onResolve({ filter: /^(tweetnacl|yaml)$/ }, (args) => ({ path: args.path, namespace: "celerity-shim" }));
    // report() loads nats.js only for a caller's own connection, which the command line never has.
    b.onResolve({ filter: /over_nats\.ts$/ }, () => ({ path: "over_nats", namespace: "celerity-shim" }));
    b.onLoad({ filter: /.*/, namespace: "celerity-shim" }, (args) => ({
      contents: args.path === "yaml" ? YAML_SHIM : args.path === "over_nats" ? NO_NATS_JS : NACL_SHIM,
      loader: "js",
      resolveDir: root,
    }));
  },
};

/**
 * Builds the callback into `outfile`. With `signatures` (a module path), `send` checks task names
 * and arguments against the signatures that module exports.
 * @returns the output path, its size in bytes and the source files that contributed code to it.
 */
export async function bundleCallback({ signatures, outfile = DEFAULT_OUTFILE, minify = true } = {}) {
  const out = resolve(outfile);
  // CommonJS unless the name asks for ESM: node starts a CommonJS file ~8 ms sooner (no ESM loader,
  // no ESM facades of node:process and node:fs, whose export lists load process.report and fs/promises).
  const esm = out.endsWith(".mjs");
  const entry = resolve(root, "sdk/callback/mod.ts");
  const lines = [`import { main } from ${JSON.stringify(entry)};`, `import process from "node:process";`];
  let sigs = "undefined";
  if (signatures) {
    lines.push(`import * as contracts from ${JSON.stringify(resolve(signatures))};`);
    sigs = "Object.values(contracts)";
  }
  lines.push(`
const write = (stream) => (line) => stream.write(line.endsWith("\\n") ? line : line + "\\n");
const readStdin = async () => {
  let text = "";
  process.stdin.setEncoding("utf8");
  for await (const chunk of process.stdin) text += chunk;
  return text;
};
const program = process.argv[1] ? process.argv[1].split(/[\\\\/]/).pop() : "respond.cjs";
main(process.argv.slice(2), { out: write(process.stdout), err: write(process.stderr), readStdin }, { signatures: ${sigs}, program }).then((code) => {
  process.exitCode = code;
});
`);
  const result = await build({
    stdin: { contents: lines.join("\n"), resolveDir: root, sourcefile: "respond-entry.mjs", loader: "js" },
    outfile: out,
    bundle: true,
    platform: "node",
    format: esm ? "esm" : "cjs",
    target: "node20",
    minify,
    legalComments: "none",
    banner: { js: esm ? BANNER : "#!/usr/bin/env node" },
    // msgpackr's ESM entry reaches its native accelerator through import.meta.url when `require` is
    // missing; a CommonJS bundle always has `require`, so that branch is dead there.
    define: esm ? {} : { "import.meta.url": "undefined" },
    plugins: [substitutions],
    metafile: true,
    logLevel: "warning",
  });
  chmodSync(out, 0o755);
  // Only the files that contributed code (esbuild also lists files it parsed and then dropped).
  const contributed = Object.values(result.metafile.outputs)[0]?.inputs ?? {};
  return {
    outfile: out,
    bytes: statSync(out).size,
    inputs: Object.entries(contributed).filter(([, i]) => i.bytesInOutput > 0).map(([path]) => path),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        signatures: { type: "string" },
        outfile: { type: "string", short: "o", default: DEFAULT_OUTFILE },
        "no-minify": { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`bundle-callback: ${err.message}`);
    process.exit(2);
  }
  if (values.help) {
    console.log("usage: node scripts/bundle-callback.mjs [--signatures ./contracts.ts] [-o respond.cjs (or *.mjs for an ES module)] [--no-minify]");
    process.exit(0);
  }
  try {
    const { outfile, bytes } = await bundleCallback({ signatures: values.signatures, outfile: values.outfile, minify: !values["no-minify"] });
    const shown = isAbsolute(values.outfile) ? outfile : relative(process.cwd(), outfile);
    const over = bytes > CALLBACK_BUDGET_BYTES ? ` — over the ${CALLBACK_BUDGET_BYTES / 1024} KB budget` : "";
    console.log(`wrote ${shown} (${(bytes / 1024).toFixed(1)} KB${over}); run it with: node ${shown} --help`);
  } catch (err) {
    console.error(`bundle-callback: ${err.message.split("\n")[0]}`);
    process.exit(1);
  }
}
