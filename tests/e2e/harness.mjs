// One tollgate and one mock upstream per test file, on loopback, in a fresh
// temporary directory: start them, talk to the admin API, run check-ledger,
// stop them (by PID: SIGTERM, then SIGKILL after a bound).
//
// Environment (set by tests/e2e/CMakeLists.txt; defaults suit a manual run
// from the repository after `cmake --build build/e2e`):
//   TOLLGATE_BIN, MOCK_UPSTREAM_BIN   the two executables
//   TOLLGATE_FIXTURES_DIR             ../shared/fixtures
//   E2E_NODE_MODULES                  where the pinned openai package is
//                                     (ES modules ignore NODE_PATH; default:
//                                     ./node_modules, else build/e2e's)
//   E2E_FRESH_CONNECTIONS=1           a new connection per request (below)

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import http from 'node:http';
import { Readable } from 'node:stream';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const here = fileURLToPath(new URL('.', import.meta.url));
const repo = join(here, '..', '..');

export const TOLLGATE_BIN = process.env.TOLLGATE_BIN ?? join(repo, 'build/e2e/proxy/tollgate');
export const MOCK_UPSTREAM_BIN = process.env.MOCK_UPSTREAM_BIN ?? join(repo, 'build/e2e/bench/mock_upstream/mock_upstream');
const NODE_MODULES = process.env.E2E_NODE_MODULES ??
  [join(here, 'node_modules'), join(repo, 'build/e2e/tests/e2e/npm/node_modules')].find((d) => existsSync(join(d, 'openai'))) ??
  join(here, 'node_modules');

const openaiModule = createRequire(join(NODE_MODULES, 'noop.js'))('openai');
export const OpenAI = openaiModule.OpenAI;
export const APIError = openaiModule.APIError;

// A fetch that opens a new connection for every request (Connection:
// close). The default is Node's pooled fetch, as the SDK uses it (keep-alive
// on tollgate's client side, SPEC 5); E2E_FRESH_CONNECTIONS=1 switches every
// call to fresh connections, to tell a connection-reuse bug from others.
export function freshConnectionFetch(input, init = {}) {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url);
  const headers = Object.fromEntries(new Headers(init.headers ?? {}));
  let body = init.body;
  if (typeof body === 'string') body = Buffer.from(body);
  else if (body instanceof ArrayBuffer) body = Buffer.from(body);
  else if (ArrayBuffer.isView(body)) body = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (Buffer.isBuffer(body) && headers['content-length'] === undefined) headers['content-length'] = String(body.length);
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? 'GET', headers, agent: false, signal: init.signal ?? undefined }, (res) => {
      const h = new Headers();
      for (const [k, v] of Object.entries(res.headers)) {
        if (Array.isArray(v)) for (const one of v) h.append(k, one);
        else if (v !== undefined) h.set(k, v);
      }
      const empty = res.statusCode === 204 || res.statusCode === 304 || (init.method ?? 'GET') === 'HEAD';
      resolve(new Response(empty ? null : Readable.toWeb(res), { status: res.statusCode, statusText: res.statusMessage, headers: h }));
    });
    req.on('error', reject);
    if (body === undefined || body === null) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else if (typeof body.getReader === 'function') Readable.fromWeb(body).pipe(req);
    else reject(new Error(`freshConnectionFetch: unsupported body type ${Object.prototype.toString.call(body)}`));
  });
}

export const httpFetch = process.env.E2E_FRESH_CONNECTIONS === '1' ? freshConnectionFetch : globalThis.fetch;

export const ADMIN_TOKEN = 'e2e-admin-token-0123456789abcdef';
const START_TIMEOUT_MS = 30_000; // the listening line (catalogs load first)
const STOP_TIMEOUT_MS = 20_000; // graceful drain before SIGKILL
const CHECK_LEDGER_TIMEOUT_MS = 60_000;
const LOG_TAIL_CHARS = 4_000;

// Every child this process started, so an abort still ends them (only
// these PIDs, never by name).
const children = new Set();
function killChildren() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}
process.on('exit', killChildren);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    killChildren();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

// Starts `bin args` and resolves with {child, url, logs()} once stdout
// prints `<what> listening on http://127.0.0.1:PORT`.
function startProcess(name, bin, args, env) {
  if (!existsSync(bin)) throw new Error(`${name}: ${bin} does not exist (build it, or set the *_BIN variables)`);
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  const exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const logs = () =>
    `--- ${name} stdout ---\n${stdout.slice(-LOG_TAIL_CHARS)}\n--- ${name} stderr ---\n${stderr.slice(-LOG_TAIL_CHARS)}`;
  child.stderr.setEncoding('utf8').on('data', (d) => {
    stderr += d;
    if (stderr.length > 4 * LOG_TAIL_CHARS) stderr = stderr.slice(-2 * LOG_TAIL_CHARS);
  });
  const pattern = new RegExp(`^${name} listening on (http://127\\.0\\.0\\.1:\\d+)\\s*$`, 'm');
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} printed no listening line within ${START_TIMEOUT_MS} ms\n${logs()}`)), START_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (d) => {
      stdout += d;
      const m = pattern.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${name}: ${e.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (code ${code}, signal ${signal}) before listening\n${logs()}`));
    });
  });
  return ready.then((url) => ({ child, url, exited, logs }));
}

// SIGTERM, wait up to `timeoutMs`, then SIGKILL. Resolves {code, signal, killed}.
async function stopProcess(proc, timeoutMs) {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return { ...(await proc.exited), killed: false };
  proc.child.kill('SIGTERM');
  let timer;
  const outcome = await Promise.race([
    proc.exited.then((r) => ({ ...r, killed: false })),
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (outcome) return outcome;
  proc.child.kill('SIGKILL');
  return { ...(await proc.exited), killed: true };
}

// An answer's JSON, or undefined when it is not JSON.
export function jsonOrUndefined(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// The forms a stored or printed key could take without encryption: the
// text, its random part (after `prefix`), hex (both cases), base64 /
// base64url at each of the three byte alignments (only the characters that
// depend on the key's bytes alone).
export function clearForms(key, prefix) {
  const bytes = Buffer.from(key, 'utf8');
  const forms = [
    { what: 'the key', needle: bytes },
    { what: 'the key\'s random part', needle: Buffer.from(key.startsWith(prefix) ? key.slice(prefix.length) : key, 'utf8') },
    { what: 'hex (lower case)', needle: Buffer.from(bytes.toString('hex'), 'latin1') },
    { what: 'hex (upper case)', needle: Buffer.from(bytes.toString('hex').toUpperCase(), 'latin1') },
  ];
  for (let shift = 0; shift < 3; shift++) {
    const shifted = Buffer.concat([Buffer.alloc(shift), bytes]);
    for (const enc of ['base64', 'base64url']) {
      const text = shifted.toString(enc).replace(/=+$/, '');
      forms.push({ what: `${enc} at alignment ${shift}`, needle: Buffer.from(text.slice(shift === 0 ? 0 : 4, -4), 'latin1') });
    }
  }
  return forms;
}

// Fails when `haystack` (a Buffer or text) holds `key` in any clear form;
// the message names the key as `name` and never prints it.
export function assertNotInClear(haystack, key, where, { name, prefix }) {
  const buffer = Buffer.isBuffer(haystack) ? haystack : Buffer.from(String(haystack), 'utf8');
  for (const { what, needle } of clearForms(key, prefix)) {
    assert.equal(buffer.indexOf(needle), -1, `${where}: found ${name} in clear (${what})`);
  }
}

export function runCheckLedger(dbPath) {
  return new Promise((resolve) => {
    execFile(TOLLGATE_BIN, ['check-ledger', '--db', dbPath], { timeout: CHECK_LEDGER_TIMEOUT_MS }, (error, stdout, stderr) => {
      resolve({ code: error ? (error.code ?? 'killed') : 0, stdout, stderr });
    });
  });
}

export function assertLedgerOk(result, when) {
  assert.ok(
    result.code === 0 && /ledger OK/.test(result.stdout),
    `check-ledger ${when}: expected exit 0 and "ledger OK", got exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`,
  );
}

// Starts the mock and tollgate. `config` is TOML text for TOLLGATE_CONFIG;
// `env` adds or overrides tollgate's variables ({name: undefined} unsets);
// `mockArgs` are extra mock_upstream options.
export async function startStack({ config, env: extraEnv = {}, mockArgs = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-e2e-'));
  const mock = await startProcess('mock_upstream', MOCK_UPSTREAM_BIN, ['--listen', '127.0.0.1:0', ...mockArgs], process.env);
  const dbPath = join(dir, 'tollgate.db');
  const env = {
    ...process.env,
    TOLLGATE_LISTEN: '127.0.0.1:0',
    TOLLGATE_DB: dbPath,
    TOLLGATE_MASTER_KEY_FILE: join(dir, 'master.key'),
    TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN,
    TOLLGATE_OPENROUTER_URL: `${mock.url}/api/v1`,
    TOLLGATE_OPENROUTER_KEY: 'sk-or-v1-e2e-platform-key',
    TOLLGATE_LITELLM_URL: mock.url,
    // The mock (like a real LiteLLM proxy) refuses calls without a key, its
    // model list included.
    TOLLGATE_LITELLM_KEY: 'sk-litellm-e2e',
  };
  delete env.TOLLGATE_CONFIG;
  for (const [name, value] of Object.entries(extraEnv)) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  if (config) {
    const configPath = join(dir, 'tollgate.toml');
    writeFileSync(configPath, config);
    env.TOLLGATE_CONFIG = configPath;
  }
  let tollgate;
  try {
    tollgate = await startProcess('tollgate', TOLLGATE_BIN, ['serve'], env);
  } catch (e) {
    await stopProcess(mock, 5_000);
    throw e;
  }
  return new Stack({ dir, dbPath, mock, tollgate });
}

let emailCounter = 0;

class Stack {
  constructor({ dir, dbPath, mock, tollgate }) {
    this.dir = dir;
    this.dbPath = dbPath;
    this.mock = mock;
    this.tollgate = tollgate;
    this.url = tollgate.url;
    this.baseURL = `${tollgate.url}/v1`;
    this.mockUrl = mock.url;
  }

  logs() {
    return `${this.tollgate.logs()}\n${this.mock.logs()}`;
  }

  // An SDK client for a tollgate key. No retries unless asked: a retried
  // call would hide the status under test and bill twice.
  client(apiKey, options = {}) {
    return new OpenAI({ apiKey, baseURL: this.baseURL, maxRetries: 0, timeout: 60_000, fetch: httpFetch, ...options });
  }

  async admin(method, path, body, token = ADMIN_TOKEN) {
    const res = await httpFetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = jsonOrUndefined(text);
    return { status: res.status, headers: res.headers, text, json };
  }

  // POST /api/v1/users, then (optionally) a `purchased` grant of
  // `extraMicros`. Returns {id, apiKey, tier, email}.
  async createUser({ tier = 'starter', extraMicros = 0n, name } = {}) {
    const email = `e2e-${process.pid}-${++emailCounter}-${tier}@example.com`;
    const r = await this.admin('POST', '/api/v1/users', { email, name: name ?? email, tier });
    assert.equal(r.status, 201, `POST /api/v1/users (${tier}): expected 201, got ${r.status}: ${r.text}`);
    assert.ok(r.json?.user?.id !== undefined && /^tg_/.test(r.json?.api_key ?? ''),
      `POST /api/v1/users: expected {user:{id}, api_key:"tg_…"}, got ${r.text}`);
    assert.equal(r.json.user.tier, tier, `POST /api/v1/users: expected tier ${tier}, got ${r.text}`);
    const user = { id: r.json.user.id, apiKey: r.json.api_key, tier, email };
    if (BigInt(extraMicros) > 0n) await this.allocate(user.id, extraMicros, 'purchased', 'e2e extra balance');
    return user;
  }

  async allocate(userId, amountMicros, kind = 'purchased', reason = 'e2e') {
    const r = await this.admin('POST', '/api/v1/credits/allocate', {
      user_id: userId,
      amount_micros: Number(amountMicros),
      kind,
      reason,
    });
    assert.equal(r.status, 201, `POST /api/v1/credits/allocate: expected 201, got ${r.status}: ${r.text}`);
    return r.json;
  }

  // GET /api/v1/credits/balance: the JSON with the *_micros fields as BigInt.
  async balance(userId) {
    const r = await this.admin('GET', `/api/v1/credits/balance?user_id=${userId}`);
    assert.equal(r.status, 200, `GET /api/v1/credits/balance?user_id=${userId}: expected 200, got ${r.status}: ${r.text}`);
    const b = r.json;
    for (const k of ['balance_micros', 'reserved_micros', 'available_micros', 'debt_micros', 'overage_limit_micros']) {
      assert.ok(Number.isInteger(b[k]), `balance: expected an integer ${k}, got ${r.text}`);
      b[k] = BigInt(b[k]);
    }
    return b;
  }

  // Every transaction of a user, newest first (all pages, bounded).
  async transactions(userId, { maxPages = 100 } = {}) {
    const all = [];
    let cursor = null;
    for (let page = 0; page < maxPages; page++) {
      const q = `user_id=${userId}&limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const r = await this.admin('GET', `/api/v1/credits/transactions?${q}`);
      assert.equal(r.status, 200, `GET /api/v1/credits/transactions?${q}: expected 200, got ${r.status}: ${r.text}`);
      assert.ok(Array.isArray(r.json?.data), `transactions: expected {data:[…]}, got ${r.text}`);
      all.push(...r.json.data);
      cursor = r.json.next_cursor;
      if (cursor === null || cursor === undefined) return all;
    }
    throw new Error(`transactions of user ${userId}: more than ${maxPages} pages`);
  }

  // Transactions newer than `afterId` (the highest id seen before a call).
  async newTransactions(userId, afterId) {
    return (await this.transactions(userId)).filter((t) => t.id > afterId);
  }

  async lastTransactionId(userId) {
    const all = await this.transactions(userId);
    return all.reduce((m, t) => Math.max(m, t.id), 0);
  }

  async mockLastRequest() {
    const res = await httpFetch(`${this.mockUrl}/mock/last-request`);
    assert.equal(res.status, 200, `mock /mock/last-request: expected 200, got ${res.status}`);
    return res.json();
  }

  checkLedger() {
    return runCheckLedger(this.dbPath);
  }

  // Stops tollgate (asserting a clean exit 0 after SIGTERM), then the mock,
  // then checks the ledger once more with the server gone. Keeps the temp
  // dir when something failed, so the database can be inspected.
  async stop() {
    const t = await stopProcess(this.tollgate, STOP_TIMEOUT_MS);
    const m = await stopProcess(this.mock, 5_000);
    const ledger = await runCheckLedger(this.dbPath);
    const ok = !t.killed && t.code === 0 && ledger.code === 0;
    if (ok) rmSync(this.dir, { recursive: true, force: true });
    assert.ok(!t.killed, `tollgate did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM (SIGKILLed)\n${this.tollgate.logs()}`);
    assert.equal(t.code, 0, `tollgate after SIGTERM: expected exit code 0, got code ${t.code} signal ${t.signal}\n${this.tollgate.logs()}`);
    assertLedgerOk(ledger, `after the server stopped (db kept in ${this.dir})`);
    return { tollgate: t, mock: m };
  }
}

// ---------------------------------------------------------------- helpers for tests

export function sum(values) {
  return values.reduce((a, b) => a + BigInt(b), 0n);
}

// Polls `probe` (async, returns a value or undefined/false) every
// `intervalMs` until it gives something truthy or `timeoutMs` passes; then
// resolves with the last value (the caller asserts on it).
export async function pollUntil(probe, { timeoutMs = 10_000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let value;
  for (;;) {
    value = await probe();
    if (value || Date.now() >= deadline) return value;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

// Reads an SDK chat stream to its end, or to the error that ends it: the
// content deltas, every usage member, whether a finish_reason came, and what
// was thrown (undefined when the stream ended normally).
export async function readStream(stream) {
  const out = { contents: [], usages: [], finished: false, thrown: undefined };
  try {
    for await (const chunk of stream) {
      const c = chunk.choices?.[0]?.delta?.content;
      if (c) out.contents.push(c);
      if (chunk.choices?.[0]?.finish_reason) out.finished = true;
      if (chunk.usage) out.usages.push(chunk.usage);
    }
  } catch (e) {
    out.thrown = e;
  }
  return out;
}

// The text of an SSE body split into its data payloads (comments skipped).
export function sseData(text) {
  const out = [];
  for (const event of text.split(/\r?\n\r?\n/)) {
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, ''));
    if (data.length) out.push(data.join('\n'));
  }
  return out;
}

// A raw HTTP call through tollgate (no SDK), with a tollgate key.
export async function rawPost(stack, path, apiKey, body, headers = {}, fetchImpl = httpFetch) {
  const res = await fetchImpl(`${stack.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  const json = jsonOrUndefined(text);
  return { status: res.status, headers: res.headers, text, json };
}

// POSTs `body` announcing it with Expect: 100-continue, and sends it only
// if the server asks for it: a server that refuses by Content-Length (as
// tollgate must above its body limit) answers before the body, so the
// answer is read reliably instead of racing the server's close (EPIPE).
export function postEarlyAnswer(url, bearer, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, {
      method: 'POST',
      agent: false,
      timeout: 30_000,
      headers: {
        authorization: `Bearer ${bearer}`,
        'content-type': 'application/json',
        'content-length': String(body.length),
        expect: '100-continue',
      },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        const json = jsonOrUndefined(text);
        resolve({ status: res.statusCode, headers: new Headers(Object.entries(res.headers).map(([k, v]) => [k, String(v)])), text, json });
      });
      res.on('error', (e) => reject(new Error(`the answer to a ${body.length}-byte body broke off: ${e.message}`)));
    });
    req.on('continue', () => req.end(body));
    req.on('timeout', () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', (e) => reject(new Error(`no answer to a ${body.length}-byte body: ${e.message}`)));
  });
}

export function assertOpenAIError(r, status, code, what) {
  assert.equal(r.status, status, `${what}: expected HTTP ${status} ${code}, got ${r.status}: ${r.text}`);
  const e = r.json?.error;
  assert.ok(e && typeof e === 'object', `${what}: expected an OpenAI-shaped {"error":{…}} body, got ${r.text}`);
  for (const k of ['message', 'type', 'code', 'param'])
    assert.ok(k in e, `${what}: expected error.${k} in the body, got ${r.text}`);
  assert.equal(e.code, code, `${what}: expected error.code ${code}, got ${JSON.stringify(e.code)} (${r.text})`);
  assert.ok(r.headers.get('x-request-id'), `${what}: expected an x-request-id header on the error answer`);
}

// `require` for the other pinned npm packages of package.json (ajv,
// ajv-formats), from the same node_modules as openai.
export const e2eRequire = createRequire(join(NODE_MODULES, 'noop.js'));

// ---------------------------------------------------------------- the OpenAPI document as validators
//
// The admin API's answers against proxy/openapi.json (ajv, JSON Schema
// 2020-12): documentValidators(doc) gives (method, path, status) → the
// validator of that answer; documentChecker(doc) asserts whole answers.

// JSON pointer inside the document ("#/components/responses/Error").
function pointer(document, ref) {
  assert.ok(ref.startsWith('#/'), `openapi.json: only local $refs are expected, got ${ref}`);
  return ref.slice(2).split('/').reduce((o, k) => o?.[k.replace(/~1/g, '/').replace(/~0/g, '~')], document);
}

export function documentValidators(document) {
  assert.equal(document.openapi, '3.1.0', 'openapi.json: expected "openapi": "3.1.0"');
  assert.deepEqual(document.servers, [{ url: '/api/v1' }], 'openapi.json: expected servers [{url: "/api/v1"}]');
  const Ajv2020 = e2eRequire('ajv/dist/2020.js').default;
  const addFormats = e2eRequire('ajv-formats').default;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  // The component schemas become the $defs of one registered schema; every
  // "#/components/schemas/X" then points there absolutely.
  const ID = 'https://tollgate.invalid/openapi/schemas';
  const rewrite = (v) => JSON.parse(JSON.stringify(v), (k, x) =>
    (k === '$ref' && typeof x === 'string' && x.startsWith('#/components/schemas/') ? `${ID}#/$defs/${x.slice('#/components/schemas/'.length)}` : x));
  ajv.addSchema({ $id: ID, $defs: rewrite(document.components?.schemas ?? {}) });
  const compiled = new Map();
  const compile = (schema) => {
    const key = JSON.stringify(schema);
    if (!compiled.has(key)) compiled.set(key, ajv.compile(rewrite(schema)));
    return compiled.get(key);
  };
  const deref = (o) => (o && typeof o.$ref === 'string' ? deref(pointer(document, o.$ref)) : o);
  const templates = Object.keys(document.paths).map((t) => ({
    template: t,
    re: new RegExp(`^${t.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
  }));
  return (method, path, status) => {
    const bare = path.split('?')[0];
    const found = templates.find((t) => t.re.test(bare));
    assert.ok(found, `openapi.json has no path for ${bare}`);
    const op = document.paths[found.template][method.toLowerCase()];
    assert.ok(op, `openapi.json has no ${method} ${found.template}`);
    const listed = op.responses[String(status)];
    const response = deref(listed ?? op.responses.default);
    assert.ok(response, `openapi.json: ${method} ${found.template} lists neither ${status} nor default`);
    const what = `${method} ${found.template} → ${listed ? status : 'default'}`;
    const content = response.content ?? {};
    if (content['application/json']) return { what, json: compile(content['application/json'].schema) };
    if (content['text/event-stream']) {
      const data = content['text/event-stream']['x-event-data'] ?? { $ref: '#/components/schemas/Balance' };
      return { what, sse: compile(data) };
    }
    assert.fail(`openapi.json: ${what} has no application/json or text/event-stream content`);
  };
}

export const ajvErrors = (errors) => (errors ?? [])
  .map((x) => `${x.instancePath || '/'} ${x.message}${x.params?.additionalProperty ? ` (${x.params.additionalProperty})` : ''}`)
  .join('; ');

// An answer checker for an OpenAPI document: (method, path, r, what)
// asserts that `r` ({status, headers, text, json} or a stream's {events})
// matches the schema the document gives for that operation and status.
export function documentChecker(document) {
  const schemaOf = documentValidators(document);
  return (method, path, r, what) => assertMatchesSchema(schemaOf, method, path, r, what);
}

function assertMatchesSchema(schemaOf, method, path, r, what) {
  const { what: where, json, sse } = schemaOf(method, path, r.status);
  if (sse) {
    assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/, `${what}: expected content-type text/event-stream`);
    assert.ok(r.events?.length > 0, `${what}: expected at least one event in the stream, got ${JSON.stringify(r.text)}`);
    for (const e of r.events) {
      assert.equal(e.event, 'balance', `${what}: expected "event: balance", got ${JSON.stringify(e)}`);
      if (!sse(e.data)) assert.fail(`${what}: the event's data does not match ${where}'s event schema: ${ajvErrors(sse.errors)}\n${JSON.stringify(e.data)}`);
    }
    return;
  }
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/, `${what}: expected content-type application/json, got ${r.headers.get('content-type')} (${r.text.slice(0, 300)})`);
  assert.ok(r.json !== undefined, `${what}: the body is not JSON: ${r.text.slice(0, 300)}`);
  if (!json(r.json)) assert.fail(`${what}: the ${r.status} body does not match the schema of ${where}: ${ajvErrors(json.errors)}\nbody: ${r.text.slice(0, 1500)}`);
}
