// The admin API (SPEC §6, §4.3) against its own OpenAPI document: every
// operation of GET /api/v1/openapi.json called with every role, every
// answer validated (ajv, JSON Schema 2020-12) against the schema the
// document gives for its status; input validation, Idempotency-Keys,
// cursor pages under concurrent inserts, the audit log, hostile input,
// brute-force throttling and the balance event stream.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import {
  startStack, httpFetch, ADMIN_TOKEN, assertLedgerOk, sseData, documentChecker, postEarlyAnswer, jsonOrUndefined,
} from './harness.mjs';

const API = '/api/v1';
const MAX_AMOUNT = 1_000_000_000_000_000; // 10^15 micros
// The main stack must not throttle the roles table's many 401s (the
// brute-force case starts its own stack with a low limit).
const CONFIG = `
[server]
auth_failures_per_minute = 100000
`;
const WRONG_TOKEN = `tg_${randomBytes(32).toString('base64url')}`;

let stack;
let doc; // the document the server serves
let checkAnswer; // (method, path, r, what): asserts r matches the document's schema for its status

before(async () => {
  stack = await startStack({ config: CONFIG, env: { TOLLGATE_OPENROUTER_PROVISIONING_KEY: 'mock-management-key' } });
  const res = await httpFetch(`${stack.url}${API}/openapi.json`);
  const text = await res.text();
  assert.equal(res.status, 200, `GET ${API}/openapi.json: expected 200, got ${res.status}: ${text.slice(0, 500)}`);
  doc = JSON.parse(text);
  checkAnswer = documentChecker(doc);
});
after(async () => {
  await stack?.stop();
});

// ---------------------------------------------------------------- the document as validators

// The answer checker (harness.mjs's documentChecker): the status's schema
// in the served document, ajv-validated.
function assertMatchesDocument(method, path, r, what) {
  checkAnswer(method, path, r, what);
}

// ---------------------------------------------------------------- calls

// One admin API call; `token` null sends no Authorization. `raw` is body
// text sent as is. The answer is checked against the document.
async function api(method, path, { token = ADMIN_TOKEN, body, raw, headers = {}, check = true } = {}) {
  const h = { ...headers };
  if (token !== null) h.authorization = `Bearer ${token}`;
  let payload;
  if (raw !== undefined) payload = raw;
  else if (body !== undefined) payload = JSON.stringify(body);
  if (payload !== undefined) h['content-type'] = 'application/json';
  const res = await httpFetch(`${stack.url}${API}${path}`, { method, headers: h, body: payload });
  const text = await res.text();
  const json = jsonOrUndefined(text);
  const r = { method, path, status: res.status, headers: res.headers, text, json };
  if (check) assertMatchesDocument(method, path, r, `${method} ${path}`);
  return r;
}

// Asserts the status (and, for errors, error.code / error.param).
function expectStatus(r, status, { code, param, what } = {}) {
  const label = what ?? `${r.method} ${r.path}`;
  assert.equal(r.status, status, `${label}: expected ${status}${code ? ` ${code}` : ''}${param ? ` (param ${param})` : ''}, got ${r.status}: ${r.text.slice(0, 500)}`);
  if (code !== undefined) assert.equal(r.json?.error?.code, code, `${label}: expected error.code ${code}, got ${r.text.slice(0, 500)}`);
  if (param !== undefined) assert.equal(r.json?.error?.param, param, `${label}: expected error.param ${JSON.stringify(param)}, got ${r.text.slice(0, 500)}`);
  return r;
}

// GET of an event stream: the status, and for a 200 the events that arrive
// until `until(events)` holds (default: the first one), then the fetch is
// aborted. Errors are read as JSON.
async function openStream(path, token, { timeoutMs = 10_000 } = {}) {
  const controller = new AbortController();
  const res = await httpFetch(`${stack.url}${API}${path}`, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
    signal: controller.signal,
  });
  const stream = { method: 'GET', path, status: res.status, headers: res.headers, text: '', events: [], json: undefined };
  if (res.status !== 200 || !/^text\/event-stream/.test(res.headers.get('content-type') ?? '')) {
    stream.text = await res.text();
    try {
      stream.json = JSON.parse(stream.text);
    } catch {
      stream.json = undefined;
    }
    return { stream, close() {}, async until() { return stream; } };
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const parse = () => {
    for (;;) {
      const m = /\r?\n\r?\n/.exec(buffer);
      if (!m) return;
      const block = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      const lines = block.split(/\r?\n/);
      const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim() ?? 'message';
      const data = sseData(`${block}\n\n`);
      if (data.length === 0) continue; // a comment (keep-alive)
      let parsed;
      try {
        parsed = JSON.parse(data[0]);
      } catch {
        parsed = data[0];
      }
      stream.events.push({ event, data: parsed });
    }
  };
  return {
    stream,
    close() {
      controller.abort();
    },
    async until(done = (events) => events.length > 0) {
      const deadline = Date.now() + timeoutMs;
      while (!done(stream.events)) {
        const left = deadline - Date.now();
        if (left <= 0) return stream;
        let timer;
        const chunk = await Promise.race([
          reader.read(),
          new Promise((resolve) => {
            timer = setTimeout(() => resolve({ timeout: true }), left);
          }),
        ]);
        clearTimeout(timer);
        if (chunk.timeout) return stream;
        if (chunk.done) return stream;
        const text = decoder.decode(chunk.value, { stream: true });
        stream.text += text;
        buffer += text;
        parse();
      }
      return stream;
    },
  };
}

let counter = 0;
const unique = (what) => `${what}-${process.pid}-${Date.now()}-${++counter}`;
// A coupon code of this run ([A-Z0-9_-]{3,32}).
const couponCode = (what) => `${what}-${process.pid}-${++counter}`.toUpperCase();

async function newUser(tier = 'starter', extra = {}) {
  const r = expectStatus(await api('POST', '/users', { body: { email: `${unique('admin-e2e')}@example.com`, tier, ...extra } }), 201);
  return { id: r.json.user.id, apiKey: r.json.api_key, json: r.json };
}

async function serviceToken(scopes) {
  const r = expectStatus(await api('POST', '/service-tokens', { body: { name: unique(`e2e ${scopes.join('+')}`), scopes } }), 201);
  assert.deepEqual(r.json.scopes, scopes, `POST /service-tokens: expected scopes ${JSON.stringify(scopes)}, got ${r.text}`);
  return r.json.token;
}

async function balanceOf(userId) {
  return expectStatus(await api('GET', `/credits/balance?user_id=${userId}`), 200).json;
}

async function allTransactions(userId) {
  const all = [];
  let cursor = null;
  for (let page = 0; page < 100; page++) {
    const r = expectStatus(await api('GET', `/credits/transactions?user_id=${userId}&limit=200${cursor === null ? '' : `&cursor=${cursor}`}`), 200);
    all.push(...r.json.data);
    cursor = r.json.next_cursor;
    if (cursor === null) return all;
  }
  throw new Error('more than 100 pages of transactions');
}

async function ledgerOk(when) {
  assertLedgerOk(await stack.checkLedger(), when);
}

const day = (offsetDays) => new Date(Date.now() + offsetDays * 86_400_000).toISOString().slice(0, 10);

// ---------------------------------------------------------------- a. roles

// One row per operation of openapi.json: the expected status for each
// caller. none/wrong: no Authorization / a bearer that is nobody's;
// user: the subject user's own key; other: another user's key naming the
// subject's user_id (or acting on the subject's data); meter/billing:
// service tokens with that one scope.
const COLUMNS = ['none', 'wrong', 'admin', 'user', 'other', 'meter', 'billing'];
const ROLES_TABLE = [
  // method    path                        none wrong admin user other meter billing
  ['POST',   '/users',                     401, 401, 201, 403, 403, 403, 403],
  ['GET',    '/users',                     401, 401, 200, 403, 403, 403, 403],
  ['GET',    '/users/{id}',                401, 401, 200, 403, 403, 403, 403],
  ['PATCH',  '/users/{id}',                401, 401, 200, 403, 403, 403, 403],
  ['POST',   '/keys',                      401, 401, 201, 201, 403, 403, 403],
  ['GET',    '/keys',                      401, 401, 200, 200, 403, 403, 403],
  // Another user's key id is "not found" to a user (it names no user_id).
  ['DELETE', '/keys/{id}',                 401, 401, 200, 200, 404, 403, 403],
  ['POST',   '/service-tokens',            401, 401, 201, 403, 403, 403, 403],
  ['GET',    '/service-tokens',            401, 401, 200, 403, 403, 403, 403],
  ['DELETE', '/service-tokens/{id}',       401, 401, 200, 403, 403, 403, 403],
  ['GET',    '/credits/balance',           401, 401, 200, 200, 403, 403, 403],
  ['GET',    '/credits/balance/stream',    401, 401, 200, 200, 403, 403, 403],
  ['POST',   '/credits/allocate',          401, 401, 201, 403, 403, 403, 403],
  ['GET',    '/credits/transactions',      401, 401, 200, 200, 403, 403, 403],
  ['POST',   '/credits/deduct',            401, 401, 201, 403, 403, 201, 403],
  ['POST',   '/credits/refund',            401, 401, 201, 403, 403, 403, 403],
  ['POST',   '/metering/track',            401, 401, 201, 403, 403, 201, 403],
  ['GET',    '/metering/summary',          401, 401, 200, 200, 403, 403, 403],
  ['GET',    '/metering/by-model',         401, 401, 200, 200, 403, 403, 403],
  ['GET',    '/metering/by-date',          401, 401, 200, 200, 403, 403, 403],
  ['GET',    '/metering/free-tier',        401, 401, 200, 200, 403, 403, 403],
  // Any key: "other" names no user here, it is just another user.
  ['GET',    '/tiers/compare',             401, 401, 200, 200, 200, 200, 200],
  // "other" names the subject's user_id: 403; a billing token may switch anyone.
  ['POST',   '/tiers/switch',              401, 401, 200, 200, 403, 403, 200],
  ['POST',   '/periods/roll',              401, 401, 200, 403, 403, 403, 403],
  ['POST',   '/coupons/create',            401, 401, 201, 403, 403, 403, 403],
  ['POST',   '/coupons/redeem',            401, 401, 200, 200, 403, 403, 403],
  ['GET',    '/coupons/validate',          401, 401, 200, 200, 403, 403, 403],
  ['GET',    '/coupons/list',              401, 401, 200, 403, 403, 403, 403],
  ['DELETE', '/coupons/{code}',            401, 401, 200, 403, 403, 403, 403],
  ['GET',    '/audit',                     401, 401, 200, 403, 403, 403, 403],
  // The stack provisions OpenRouter keys: the subject has one already (200).
  ['POST',   '/openrouter/create-account', 401, 401, 200, 403, 403, 403, 403],
  ['GET',    '/openrouter/account',        401, 401, 200, 200, 403, 403, 403],
  ['POST',   '/openrouter/sync-balance',   401, 401, 200, 200, 403, 403, 403],
  ['DELETE', '/openrouter/account',        401, 401, 200, 403, 403, 403, 403],
  ['POST',   '/master-key/rotate',         401, 401, 200, 403, 403, 403, 403],
  ['GET',    '/openapi.json',              200, 200, 200, 200, 200, 200, 200],
];

// The request each row makes for a role: {path, body?, headers?}. `ctx`
// holds the subject, the other user, a victim key and a usage event.
function rolesRequest(method, template, role, ctx) {
  const s = ctx.subject.id;
  const window = `user_id=${s}&from=${day(-1)}&to=${day(1)}`;
  const idem = () => ({ 'Idempotency-Key': unique('roles') });
  switch (`${method} ${template}`) {
    case 'POST /users': return { path: '/users', body: { email: `${unique('roles')}@example.com`, name: 'roles table', tier: 'starter' } };
    case 'GET /users': return { path: '/users?limit=5' };
    case 'GET /users/{id}': return { path: `/users/${s}` };
    case 'PATCH /users/{id}': return { path: `/users/${s}`, body: { overage_limit_micros: 0 } };
    case 'POST /keys': return { path: '/keys', body: { user_id: s, name: `roles ${role}`, rpm_limit: 100 } };
    case 'GET /keys': return { path: `/keys?user_id=${s}` };
    case 'DELETE /keys/{id}': return { path: `/keys/${ctx.keyFor(role)}` };
    case 'POST /service-tokens': return { path: '/service-tokens', body: { name: `roles ${role}`, scopes: ['meter'] } };
    case 'GET /service-tokens': return { path: '/service-tokens' };
    // Each caller tries to revoke its own throwaway token (made in the setup).
    case 'DELETE /service-tokens/{id}': return { path: `/service-tokens/${ctx.throwaway[role]}` };
    case 'GET /credits/balance': return { path: `/credits/balance?user_id=${s}` };
    case 'GET /credits/balance/stream': return { path: `/credits/balance/stream?user_id=${s}`, stream: true };
    case 'POST /credits/allocate': return { path: '/credits/allocate', headers: idem(), body: { user_id: s, amount_micros: 1_000, kind: 'bonus', reason: `roles ${role}` } };
    case 'GET /credits/transactions': return { path: `/credits/transactions?user_id=${s}&limit=5` };
    case 'POST /credits/deduct': return { path: '/credits/deduct', headers: idem(), body: { user_id: s, amount_micros: 100, reason: `roles ${role}`, event_id: unique('roles-deduct') } };
    case 'POST /credits/refund': return { path: '/credits/refund', headers: idem(), body: { user_id: s, amount_micros: 10, usage_event_id: ctx.usageEventId, reason: `roles ${role}` } };
    case 'POST /metering/track': return { path: '/metering/track', headers: idem(), body: { event_id: unique('roles-track'), user_id: s, service: 'search', units: 1 } };
    case 'GET /metering/summary': return { path: `/metering/summary?${window}` };
    case 'GET /metering/by-model': return { path: `/metering/by-model?${window}` };
    case 'GET /metering/by-date': return { path: `/metering/by-date?${window}&granularity=day` };
    case 'GET /metering/free-tier': return { path: `/metering/free-tier?${window}` };
    case 'GET /tiers/compare': return { path: '/tiers/compare' };
    // The subject's own tier: a switch that changes nothing, whoever asks.
    case 'POST /tiers/switch': return { path: '/tiers/switch', headers: idem(), body: { tier: 'starter', user_id: s } };
    case 'POST /periods/roll': return { path: '/periods/roll' };
    case 'POST /coupons/create': return { path: '/coupons/create', body: { code: couponCode('RC'), kind: 'credit', amount_micros: 1_000, max_uses: 5 } };
    // Each caller redeems and deactivates its own code (made in the setup).
    case 'POST /coupons/redeem': return { path: '/coupons/redeem', headers: idem(), body: { code: ctx.coupons[role].redeem, user_id: s } };
    case 'GET /coupons/validate': return { path: `/coupons/validate?code=${ctx.coupons[role].redeem}&user_id=${s}` };
    case 'GET /coupons/list': return { path: '/coupons/list' };
    case 'DELETE /coupons/{code}': return { path: `/coupons/${ctx.coupons[role].deactivate}` };
    case 'GET /audit': return { path: '/audit?limit=5' };
    case 'POST /openrouter/create-account': return { path: '/openrouter/create-account', body: { user_id: s } };
    case 'GET /openrouter/account': return { path: `/openrouter/account?user_id=${s}` };
    case 'POST /openrouter/sync-balance': return { path: '/openrouter/sync-balance', body: { user_id: s } };
    case 'DELETE /openrouter/account': return { path: `/openrouter/account?user_id=${s}` };
    case 'POST /master-key/rotate': return { path: '/master-key/rotate' };
    case 'GET /openapi.json': return { path: '/openapi.json' };
    default: throw new Error(`no request for ${method} ${template}`);
  }
}

describe('a. roles: every operation of openapi.json with every caller', () => {
  it('the table covers exactly the document\'s operations', () => {
    const documented = new Set();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) {
        if (['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'].includes(method)) documented.add(`${method.toUpperCase()} ${path}`);
      }
    }
    const rows = new Set(ROLES_TABLE.map(([m, p]) => `${m} ${p}`));
    assert.equal(rows.size, ROLES_TABLE.length, 'the roles table repeats a row');
    const missing = [...documented].filter((o) => !rows.has(o));
    const extra = [...rows].filter((o) => !documented.has(o));
    assert.deepEqual(missing, [], `operations of openapi.json without a row in the roles table: ${missing.join(', ')}`);
    assert.deepEqual(extra, [], `rows of the roles table without an operation in openapi.json: ${extra.join(', ')}`);
  });

  it('the document describes every operation: operationId, security, x-roles, success and default answers', () => {
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        if (method === 'parameters') continue;
        const where = `${method.toUpperCase()} ${path}`;
        assert.ok(typeof op.operationId === 'string' && op.operationId, `${where}: no operationId`);
        assert.ok(Array.isArray(op.security), `${where}: no security array`);
        assert.ok(Array.isArray(op['x-roles']) && op['x-roles'].length > 0, `${where}: no x-roles`);
        assert.ok(op.responses.default, `${where}: no default response`);
        const row = ROLES_TABLE.find(([m, p]) => m === method.toUpperCase() && p === path);
        if (!row) continue; // reported by the previous case
        const success = row[COLUMNS.indexOf('admin') + 2];
        assert.ok(op.responses[String(success)], `${where}: the document lists no ${success} answer`);
        assert.equal(op.security.length === 0, row[2] === 200, `${where}: security [] exactly when no credentials are needed`);
      }
    }
  });

  it('each caller gets the status of the table, with an answer that matches the document', async () => {
    const subject = await newUser('starter');
    const other = await newUser('starter');
    const tokens = {
      none: null,
      wrong: WRONG_TOKEN,
      admin: ADMIN_TOKEN,
      user: subject.apiKey,
      other: other.apiKey,
      meter: await serviceToken(['meter']),
      billing: await serviceToken(['billing']),
    };
    // A key of the subject that only forbidden callers try to revoke.
    const victim = expectStatus(await api('POST', '/keys', { body: { user_id: subject.id, name: 'victim' } }), 201).json.key.id;
    // A charge to refund: a tracked event with a provider cost.
    const tracked = expectStatus(await api('POST', '/metering/track', {
      headers: { 'Idempotency-Key': unique('roles-setup') },
      body: { event_id: unique('roles-setup'), user_id: subject.id, service: 'chat', model: 'e2e-model', provider_cost_micros: 1_000 },
    }), 201);
    const fresh = {};
    // A credit coupon to redeem and one to deactivate for each caller.
    const coupons = {};
    for (const role of COLUMNS) {
      coupons[role] = {};
      for (const use of ['redeem', 'deactivate']) {
        const code = couponCode(`R${use[0]}-${role}`);
        expectStatus(await api('POST', '/coupons/create', { body: { code, kind: 'credit', amount_micros: 1_000 } }), 201);
        coupons[role][use] = code;
      }
    }
    // A throwaway service token per caller, for DELETE /service-tokens/{id}.
    const throwaway = {};
    const throwawaySecret = {};
    for (const role of COLUMNS) {
      const made = expectStatus(await api('POST', '/service-tokens', { body: { name: `throwaway ${role}`, scopes: ['meter'] } }), 201).json;
      throwaway[role] = made.id;
      throwawaySecret[role] = made.token;
    }
    const ctx = {
      throwaway,
      subject,
      other,
      usageEventId: tracked.json.usage_event_id,
      keyFor: (role) => fresh[role] ?? victim,
      coupons,
    };

    const failures = [];
    for (const row of ROLES_TABLE) {
      const [method, template] = row;
      for (const [i, role] of COLUMNS.entries()) {
        const expected = row[i + 2];
        if (template === '/keys/{id}' && expected === 200) {
          // A fresh key of the subject for each caller allowed to revoke one.
          fresh[role] = expectStatus(await api('POST', '/keys', { body: { user_id: subject.id, name: `to revoke by ${role}` } }), 201).json.key.id;
        }
        const req = rolesRequest(method, template, role, ctx);
        const label = `${role.padEnd(7)} ${method} ${template} (${req.path})`;
        let r;
        if (req.stream) {
          const s = await openStream(req.path, tokens[role]);
          r = await s.until();
          s.close();
        } else {
          r = await api(method, req.path, { token: tokens[role], body: req.body, headers: req.headers, check: false });
        }
        try {
          assert.equal(r.status, expected, `expected ${expected}, got ${r.status}: ${r.text.slice(0, 300)}`);
          assertMatchesDocument(method, req.path, r, label);
          if (expected === 401) assert.equal(r.json?.error?.code, 'invalid_api_key', `expected code invalid_api_key, got ${r.text}`);
          if (expected === 403) assert.equal(r.json?.error?.code, 'forbidden', `expected code forbidden, got ${r.text}`);
        } catch (e) {
          failures.push(`${label}: ${e.message.split('\n').slice(0, 3).join(' | ')}`);
        }
      }
    }
    // Nothing a forbidden caller did took effect: the victim key still works.
    const keys = expectStatus(await api('GET', `/keys?user_id=${subject.id}`), 200).json.data;
    const v = keys.find((k) => k.id === victim);
    if (!v || v.revoked_at !== null) failures.push(`the victim key ${victim} was revoked by a caller that may not: ${JSON.stringify(v)}`);
    // Only the admin's throwaway service token was revoked, and it stopped working at once.
    const tokens_listed = new Map(expectStatus(await api('GET', '/service-tokens'), 200).json.data.map((t) => [t.id, t]));
    for (const role of COLUMNS) {
      const t = tokens_listed.get(throwaway[role]);
      const revoked = role === 'admin';
      if ((t?.revoked_at !== null) !== revoked) failures.push(`${role}'s throwaway token: expected revoked ${revoked}, got ${JSON.stringify(t)}`);
      if (JSON.stringify(t ?? {}).includes(throwawaySecret[role])) failures.push(`GET /service-tokens shows ${role}'s secret`);
      const use = await api('GET', '/tiers/compare', { token: throwawaySecret[role], check: false });
      if (use.status !== (revoked ? 401 : 200)) failures.push(`${role}'s throwaway token after the table: expected ${revoked ? 401 : 200}, got ${use.status}`);
    }
    // Only the admin deactivated its code; only the admin and the user redeemed theirs.
    const listed = new Map(expectStatus(await api('GET', '/coupons/list'), 200).json.data.map((c) => [c.code, c]));
    for (const role of COLUMNS) {
      const r = listed.get(coupons[role].redeem);
      const d = listed.get(coupons[role].deactivate);
      const redeemed = role === 'admin' || role === 'user' ? 1 : 0;
      if (r?.uses !== redeemed) failures.push(`${role}'s coupon ${coupons[role].redeem}: expected uses ${redeemed}, got ${JSON.stringify(r)}`);
      if (d?.active !== (role !== 'admin')) failures.push(`${role}'s coupon ${coupons[role].deactivate}: expected active ${role !== 'admin'}, got ${JSON.stringify(d)}`);
    }
    assert.deepEqual(failures, [], `${failures.length} calls differ from the roles table:\n${failures.join('\n')}`);
    await ledgerOk('after the roles table');
  });
});

// ---------------------------------------------------------------- b. shapes and validation

describe('b. shapes and input validation', () => {
  let user;
  before(async () => {
    user = await newUser('starter');
  });

  it('POST /users answers the user and a tg_ key; GET /users/{id} and the list give the full user', async () => {
    const email = `${unique('shape')}@example.com`;
    const r = expectStatus(await api('POST', '/users', { body: { email, name: 'Shape Test', tier: 'professional' } }), 201);
    assert.equal(r.json.user.email, email);
    assert.equal(r.json.user.name, 'Shape Test');
    assert.equal(r.json.user.tier, 'professional');
    assert.match(r.json.api_key, /^tg_/);
    const one = expectStatus(await api('GET', `/users/${r.json.user.id}`), 200).json;
    assert.equal(one.status, 'active');
    assert.equal(one.balance_micros, 50_000_000, `a new professional user: expected the $50 monthly credits, got ${JSON.stringify(one)}`);
    expectStatus(await api('GET', '/users?limit=2'), 200);
    expectStatus(await api('GET', '/users/999999999'), 404);
    expectStatus(await api('POST', '/users', { body: { email, tier: 'starter' } }), 409, { code: 'user_exists' });
    await ledgerOk('after creating users');
  });

  it('wrong types are 400 with param naming the field', async () => {
    const cases = [
      ['POST', '/credits/allocate', { user_id: user.id, amount_micros: '1000' }, 'amount_micros'],
      ['POST', '/credits/allocate', { user_id: String(user.id), amount_micros: 1000 }, 'user_id'],
      ['POST', '/credits/allocate', { user_id: user.id, amount_micros: 1000, reason: 42 }, 'reason'],
      ['POST', '/credits/allocate', { user_id: user.id, amount_micros: 1000, kind: 'gold' }, 'kind'],
      ['POST', '/credits/allocate', { user_id: user.id, amount_micros: 1000, expires_at: 'tomorrow' }, 'expires_at'],
      ['POST', '/credits/allocate', { user_id: user.id, amount_micros: true }, 'amount_micros'],
      ['POST', '/users', { email: 12345 }, 'email'],
      ['POST', '/users', { email: 'no-at-sign' }, 'email'],
      ['PATCH', `/users/${user.id}`, { status: 'bogus' }, 'status'],
      ['PATCH', `/users/${user.id}`, { overage_limit_micros: 'lots' }, 'overage_limit_micros'],
      ['POST', '/service-tokens', { name: 'x', scopes: 'meter' }, 'scopes'],
      ['POST', '/service-tokens', { name: 'x', scopes: ['root'] }, 'scopes'],
      ['POST', '/keys', { user_id: user.id, rpm_limit: 'fast' }, 'rpm_limit'],
    ];
    for (const [method, path, body, param] of cases) {
      expectStatus(await api(method, path, { body }), 400, { param, what: `${method} ${path} ${JSON.stringify(body)}` });
    }
    const notJson = await api('POST', '/credits/allocate', { raw: '{"user_id": 1, "amount_micros": ' });
    expectStatus(notJson, 400, { what: 'allocate with a truncated JSON body' });
    const array = await api('POST', '/credits/allocate', { raw: '[1,2,3]' });
    expectStatus(array, 400, { what: 'allocate with a JSON array body' });
  });

  it('missing required fields are 400 with param naming the field', async () => {
    const k = () => ({ 'Idempotency-Key': unique('missing') });
    const cases = [
      ['POST', '/credits/allocate', { amount_micros: 1000 }, 'user_id', {}],
      ['POST', '/credits/allocate', { user_id: user.id }, 'amount_micros', {}],
      ['POST', '/users', { name: 'no email' }, 'email', {}],
      ['POST', '/service-tokens', { name: 'no scopes' }, 'scopes', {}],
      ['POST', '/service-tokens', { scopes: ['meter'] }, 'name', {}],
      ['POST', '/credits/deduct', { user_id: user.id, amount_micros: 10 }, 'event_id', k()],
      ['POST', '/credits/deduct', { user_id: user.id, event_id: unique('e') }, 'amount_micros', k()],
      ['POST', '/metering/track', { event_id: unique('e'), user_id: user.id }, 'service', k()],
      ['POST', '/metering/track', { user_id: user.id, service: 'search' }, 'event_id', k()],
      ['POST', '/metering/track', { event_id: unique('e'), service: 'search' }, 'user_id', k()],
    ];
    for (const [method, path, body, param, headers] of cases) {
      expectStatus(await api(method, path, { body, headers }), 400, { param, what: `${method} ${path} ${JSON.stringify(body)}` });
    }
    for (const q of ['/credits/balance', '/credits/transactions', '/keys', '/metering/summary']) {
      expectStatus(await api('GET', q), 400, { param: 'user_id', what: `admin GET ${q} without user_id` });
    }
  });

  it('amounts: 0, negative, fractional, above 10^15 and above int64 are 400 param amount_micros; 10^15 is accepted', async () => {
    const before = await balanceOf(user.id);
    const bad = ['0', '-5', '1.5', String(MAX_AMOUNT + 1), '9223372036854775807', '99999999999999999999', '-99999999999999999999'];
    for (const amount of bad) {
      const raw = `{"user_id": ${user.id}, "amount_micros": ${amount}, "reason": "bad amount"}`;
      expectStatus(await api('POST', '/credits/allocate', { raw }), 400, { param: 'amount_micros', what: `allocate amount_micros ${amount}` });
      const deduct = `{"user_id": ${user.id}, "amount_micros": ${amount}, "event_id": "${unique('bad')}"}`;
      expectStatus(await api('POST', '/credits/deduct', { raw: deduct, headers: { 'Idempotency-Key': unique('bad') } }), 400,
        { param: 'amount_micros', what: `deduct amount_micros ${amount}` });
    }
    const after = await balanceOf(user.id);
    assert.equal(after.balance_micros, before.balance_micros, 'refused amounts moved money');
    const rich = await newUser('starter');
    const r = expectStatus(await api('POST', '/credits/allocate', { body: { user_id: rich.id, amount_micros: MAX_AMOUNT, reason: 'the maximum' } }), 201);
    assert.equal(r.json.transaction.amount_micros, MAX_AMOUNT);
    assert.equal(r.json.balance_micros, MAX_AMOUNT + 30_000_000);
    await ledgerOk('after the amount checks');
  });

  it('bad dates, cursors, limits, types and granularity are 400 with their param', async () => {
    const u = user.id;
    const cases = [
      [`/credits/transactions?user_id=${u}&from=2026-13-01`, 'from'],
      [`/credits/transactions?user_id=${u}&to=2026-02-30`, 'to'],
      [`/credits/transactions?user_id=${u}&from=yesterday`, 'from'],
      [`/metering/summary?user_id=${u}&from=2026-13-01`, 'from'],
      [`/metering/by-model?user_id=${u}&to=2026-00-10`, 'to'],
      [`/metering/by-date?user_id=${u}&from=2026-13-01`, 'from'],
      [`/metering/free-tier?user_id=${u}&from=2026-13-01`, 'from'],
      [`/metering/by-date?user_id=${u}&granularity=week`, 'granularity'],
      [`/credits/transactions?user_id=${u}&cursor=abc`, 'cursor'],
      [`/credits/transactions?user_id=${u}&cursor=-1`, 'cursor'],
      ['/users?cursor=abc', 'cursor'],
      ['/audit?cursor=abc', 'cursor'],
      [`/credits/transactions?user_id=${u}&limit=0`, 'limit'],
      [`/credits/transactions?user_id=${u}&limit=201`, 'limit'],
      [`/credits/transactions?user_id=${u}&limit=ten`, 'limit'],
      ['/users?limit=0', 'limit'],
      ['/users?limit=201', 'limit'],
      ['/audit?limit=0', 'limit'],
      ['/audit?limit=201', 'limit'],
      [`/credits/transactions?user_id=${u}&type=gift`, 'type'],
      ['/credits/balance?user_id=abc', 'user_id'],
      ['/credits/balance?user_id=1%20OR%201=1', 'user_id'],
    ];
    for (const [path, param] of cases) expectStatus(await api('GET', path), 400, { param });
    // The edges that are valid.
    expectStatus(await api('GET', `/credits/transactions?user_id=${u}&limit=1`), 200);
    expectStatus(await api('GET', `/credits/transactions?user_id=${u}&limit=200&from=2020-01-01&to=${encodeURIComponent(new Date(Date.now() + 86_400_000).toISOString())}&type=grant`), 200);
    const range = expectStatus(await api('GET', `/metering/by-date?user_id=${u}&from=2026-01-01&to=2026-12-31&granularity=month`), 200).json;
    assert.equal(range.from, '2026-01-01');
    assert.equal(range.to, '2026-12-31');
    assert.equal(range.granularity, 'month');
  });

  it('unknown fields are ignored: allocate with extra members works', async () => {
    const before = await balanceOf(user.id);
    const r = expectStatus(await api('POST', '/credits/allocate', {
      body: { user_id: user.id, amount_micros: 2_500, kind: 'bonus', reason: 'extra fields', colour: 'blue', nested: { a: [1, 2, { b: null }] }, currency: 'EUR' },
    }), 201);
    assert.equal(r.json.transaction.type, 'grant');
    assert.equal(r.json.transaction.kind, 'bonus');
    assert.equal(r.json.transaction.amount_micros, 2_500);
    assert.equal(r.json.transaction.reason, 'extra fields');
    assert.equal(r.json.balance_micros, before.balance_micros + 2_500);
    assert.equal(r.json.transaction.balance_after_micros, r.json.balance_micros);
    const after = await balanceOf(user.id);
    assert.equal(after.balance_micros, before.balance_micros + 2_500);
    assert.equal(after.by_kind.bonus, before.by_kind.bonus + 2_500);
    await ledgerOk('after allocate with unknown fields');
  });

  it('deduct: 201 {transaction, balance_micros}; 402 insufficient_credits beyond what is available', async () => {
    const u = await newUser('starter'); // $30
    const before = await balanceOf(u.id);
    const r = expectStatus(await api('POST', '/credits/deduct', {
      headers: { 'Idempotency-Key': unique('deduct') },
      body: { user_id: u.id, amount_micros: 1_234, reason: 'search call', event_id: unique('deduct') },
    }), 201);
    assert.equal(r.json.transaction.type, 'deduct');
    assert.equal(r.json.transaction.amount_micros, -1_234);
    assert.equal(r.json.balance_micros, before.balance_micros - 1_234);
    const broke = await api('POST', '/credits/deduct', {
      headers: { 'Idempotency-Key': unique('deduct') },
      body: { user_id: u.id, amount_micros: MAX_AMOUNT, event_id: unique('deduct') },
    });
    expectStatus(broke, 402, { code: 'insufficient_credits' });
    assert.equal((await balanceOf(u.id)).balance_micros, before.balance_micros - 1_234, 'a refused deduct moved money');
    expectStatus(await api('POST', '/credits/deduct', {
      headers: { 'Idempotency-Key': unique('deduct') },
      body: { user_id: 999999999, amount_micros: 1, event_id: unique('deduct') },
    }), 404);
    await ledgerOk('after deducts');
  });

  it('metering/track prices: provider cost + the tier\'s paid markup (starter 10%, free none); else the service price', async () => {
    const starter = await newUser('starter');
    const free = await newUser('free');
    const track = (u, body) => api('POST', '/metering/track', { headers: { 'Idempotency-Key': unique('track') }, body: { event_id: unique('track'), user_id: u.id, ...body } });
    const b0 = (await balanceOf(starter.id)).balance_micros;
    const a = expectStatus(await track(starter, { service: 'chat', model: 'vendor/model-x', prompt_tokens: 10, completion_tokens: 20, provider_cost_micros: 1_000 }), 201).json;
    assert.deepEqual([a.provider_cost_micros, a.markup_micros, a.charged_micros], [1_000, 100, 1_100], `starter, cost 1000: ${JSON.stringify(a)}`);
    assert.equal(a.balance_micros, b0 - 1_100);
    assert.ok(a.transaction && a.transaction.amount_micros === -1_100 && a.transaction.usage_event_id === a.usage_event_id,
      `track: expected the charge transaction of the event, got ${JSON.stringify(a.transaction)}`);
    const f = expectStatus(await track(free, { service: 'chat', provider_cost_micros: 1_000 }), 201).json;
    assert.deepEqual([f.provider_cost_micros, f.markup_micros, f.charged_micros], [1_000, 0, 1_000], `free, cost 1000: ${JSON.stringify(f)}`);
    const s = expectStatus(await track(starter, { service: 'search' }), 201).json;
    assert.equal(s.charged_micros, 1_000, `search without a cost: expected the default 1,000 micros a request, got ${JSON.stringify(s)}`);
    // The usage reports see the events.
    const summary = expectStatus(await api('GET', `/metering/summary?user_id=${starter.id}&from=${day(-1)}&to=${day(1)}`), 200).json;
    assert.equal(summary.requests, 2);
    assert.equal(summary.charged_micros, 2_100);
    assert.equal(summary.by_service.chat?.charged_micros, 1_100);
    assert.equal(summary.by_service.search?.charged_micros, 1_000);
    const byModel = expectStatus(await api('GET', `/metering/by-model?user_id=${starter.id}&from=${day(-1)}&to=${day(1)}`), 200).json;
    assert.ok(byModel.data.some((row) => row.model === 'vendor/model-x' && row.prompt_tokens === 10 && row.completion_tokens === 20),
      `by-model: expected a row for vendor/model-x, got ${JSON.stringify(byModel.data)}`);
    const byDate = expectStatus(await api('GET', `/metering/by-date?user_id=${starter.id}&from=${day(-1)}&to=${day(1)}&granularity=day`), 200).json;
    assert.equal(byDate.data.reduce((n, row) => n + row.charged_micros, 0), 2_100);
    // A refund of the tracked charge, then one that would exceed it.
    const refund = expectStatus(await api('POST', '/credits/refund', { body: { user_id: starter.id, amount_micros: 600, usage_event_id: a.usage_event_id, reason: 'partial' } }), 201).json;
    assert.equal(refund.transaction.amount_micros, 600);
    expectStatus(await api('POST', '/credits/refund', { body: { user_id: starter.id, amount_micros: 501, usage_event_id: a.usage_event_id } }), 409, { code: 'refund_exceeds_charge' });
    expectStatus(await api('POST', '/credits/refund', { body: { user_id: starter.id, amount_micros: 1 } }), 400);
    await ledgerOk('after track and refund');
  });
});

// ---------------------------------------------------------------- c. idempotency

describe('c. idempotency (SPEC 4.3)', () => {
  it('allocate: the same key and body replay the first answer and move money once; another body is 409', async () => {
    const u = await newUser('starter');
    const before = await balanceOf(u.id);
    const key = unique('allocate');
    const body = { user_id: u.id, amount_micros: 7_000, kind: 'bonus', reason: unique('replay') };
    const first = expectStatus(await api('POST', '/credits/allocate', { body, headers: { 'Idempotency-Key': key } }), 201);
    const second = expectStatus(await api('POST', '/credits/allocate', { body, headers: { 'Idempotency-Key': key } }), 201);
    assert.equal(second.json.transaction.id, first.json.transaction.id, 'a replay created another transaction');
    assert.deepEqual(second.json, first.json, 'a replay answered differently from the first call');
    const conflict = await api('POST', '/credits/allocate', { body: { ...body, amount_micros: 8_000 }, headers: { 'Idempotency-Key': key } });
    expectStatus(conflict, 409, { code: 'idempotency_conflict' });
    const after = await balanceOf(u.id);
    assert.equal(after.balance_micros, before.balance_micros + 7_000, 'the balance moved more than once');
    const grants = (await allTransactions(u.id)).filter((t) => t.reason === body.reason);
    assert.equal(grants.length, 1, `expected one grant, got ${JSON.stringify(grants)}`);
    await ledgerOk('after allocate replays');
  });

  it('10 concurrent replays of one allocate: identical answers, exactly one grant', async () => {
    const u = await newUser('starter');
    const before = await balanceOf(u.id);
    const key = unique('concurrent');
    const body = { user_id: u.id, amount_micros: 3_333, kind: 'purchased', reason: unique('concurrent') };
    const answers = await Promise.all(Array.from({ length: 10 }, () => api('POST', '/credits/allocate', { body, headers: { 'Idempotency-Key': key } })));
    for (const r of answers) expectStatus(r, 201);
    for (const r of answers) assert.deepEqual(r.json, answers[0].json, `concurrent replays answered differently:\n${answers.map((a) => a.text).join('\n')}`);
    const grants = (await allTransactions(u.id)).filter((t) => t.reason === body.reason);
    assert.equal(grants.length, 1, `expected exactly one grant, got ${grants.length}: ${JSON.stringify(grants)}`);
    assert.equal((await balanceOf(u.id)).balance_micros, before.balance_micros + 3_333);
    await ledgerOk('after concurrent allocate replays');
  });

  it('keys are scoped to the caller: the same key from another caller is independent', async () => {
    const u = await newUser('starter');
    const meter = await serviceToken(['meter']);
    const key = unique('scoped');
    // deduct: admin and a meter token, same Idempotency-Key, different bodies.
    const asAdmin = expectStatus(await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': key }, body: { user_id: u.id, amount_micros: 100, event_id: unique('scoped-a') } }), 201);
    const meterBody = { user_id: u.id, amount_micros: 200, event_id: unique('scoped-m') };
    const asMeter = expectStatus(await api('POST', '/credits/deduct', { token: meter, headers: { 'Idempotency-Key': key }, body: meterBody }), 201);
    assert.notEqual(asMeter.json.transaction.id, asAdmin.json.transaction.id);
    const meterAgain = expectStatus(await api('POST', '/credits/deduct', { token: meter, headers: { 'Idempotency-Key': key }, body: meterBody }), 201);
    assert.deepEqual(meterAgain.json, asMeter.json, 'the meter token\'s replay answered differently');
    // keys: admin creates a key for the user with K; the user's own K is another scope.
    const k2 = unique('scoped-keys');
    expectStatus(await api('POST', '/keys', { headers: { 'Idempotency-Key': k2 }, body: { user_id: u.id, name: 'by admin' } }), 201);
    const own = expectStatus(await api('POST', '/keys', { token: u.apiKey, headers: { 'Idempotency-Key': k2 }, body: { name: 'by user' } }), 201);
    assert.match(own.json.api_key, /^tg_/);
    const repeat = await api('POST', '/keys', { token: u.apiKey, headers: { 'Idempotency-Key': k2 }, body: { name: 'by user' } });
    expectStatus(repeat, 409, { code: 'idempotency_conflict' });
    assert.ok(!('api_key' in (repeat.json ?? {})) && !repeat.text.includes(own.json.api_key), `a repeated key must never show a secret again: ${repeat.text}`);
    await ledgerOk('after scoped keys');
  });

  it('deduct and track need an Idempotency-Key (400 idempotency_key_required); bad keys are 400', async () => {
    const u = await newUser('starter');
    expectStatus(await api('POST', '/credits/deduct', { body: { user_id: u.id, amount_micros: 10, event_id: unique('nokey') } }), 400,
      { code: 'idempotency_key_required', param: 'Idempotency-Key' });
    expectStatus(await api('POST', '/metering/track', { body: { event_id: unique('nokey'), user_id: u.id, service: 'search' } }), 400,
      { code: 'idempotency_key_required', param: 'Idempotency-Key' });
    expectStatus(await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': '' }, body: { user_id: u.id, amount_micros: 10, event_id: unique('nokey') } }), 400,
      { param: 'Idempotency-Key', what: 'deduct with an empty Idempotency-Key' });
    const balance = await balanceOf(u.id);
    assert.equal(balance.balance_micros, 30_000_000, 'refused deducts moved money');
  });

  it('deduct: a replay with the same event_id answers the first result (whatever the key); another amount is 409', async () => {
    const u = await newUser('starter');
    const before = await balanceOf(u.id);
    const eventId = unique('event');
    const body = { user_id: u.id, amount_micros: 4_321, reason: 'replayed deduct', event_id: eventId };
    const key = unique('deduct-replay');
    const first = expectStatus(await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': key }, body }), 201);
    const sameKey = expectStatus(await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': key }, body }), 201);
    assert.deepEqual(sameKey.json, first.json, 'same key, same body: expected the first answer');
    const otherKey = expectStatus(await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': unique('deduct-replay') }, body }), 201);
    assert.deepEqual(otherKey.json, first.json, 'same event_id and body, another key: expected the first answer');
    const conflict = await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': unique('deduct-replay') }, body: { ...body, amount_micros: 4_322 } });
    expectStatus(conflict, 409, { code: 'idempotency_conflict' });
    const sameKeyOtherBody = await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': key }, body: { ...body, event_id: unique('event') } });
    expectStatus(sameKeyOtherBody, 409, { code: 'idempotency_conflict' });
    assert.equal((await balanceOf(u.id)).balance_micros, before.balance_micros - 4_321, 'the deduct moved money more than once');
    await ledgerOk('after deduct replays');
  });

  it('a fresh Idempotency-Key on a body over 4 KiB (a 4096-byte reason, the most allowed) is accepted and replays', async () => {
    const u = await newUser('starter');
    const before = await balanceOf(u.id);
    const key = unique('big-body');
    const body = { user_id: u.id, amount_micros: 1_000, reason: 'r'.repeat(4_096), event_id: unique('big-body') };
    const first = expectStatus(await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': key }, body }), 201,
      { what: `deduct with a never-used Idempotency-Key and a ${JSON.stringify(body).length}-byte body` });
    assert.equal(first.json.transaction.reason, body.reason);
    const again = expectStatus(await api('POST', '/credits/deduct', { headers: { 'Idempotency-Key': key }, body }), 201, { what: 'its replay' });
    assert.deepEqual(again.json, first.json);
    assert.equal((await balanceOf(u.id)).balance_micros, before.balance_micros - 1_000);
    await ledgerOk('after a large idempotent body');
  });

  it('track: the same event_id answers the first result whatever the key; another body is 409', async () => {
    const u = await newUser('starter');
    const before = await balanceOf(u.id);
    const body = { event_id: unique('track-event'), user_id: u.id, service: 'chat', model: 'm', provider_cost_micros: 2_000 };
    const first = expectStatus(await api('POST', '/metering/track', { headers: { 'Idempotency-Key': unique('t') }, body }), 201);
    const again = expectStatus(await api('POST', '/metering/track', { headers: { 'Idempotency-Key': unique('t') }, body }), 201);
    assert.deepEqual(again.json, first.json);
    expectStatus(await api('POST', '/metering/track', { headers: { 'Idempotency-Key': unique('t') }, body: { ...body, provider_cost_micros: 2_001 } }), 409,
      { code: 'idempotency_conflict' });
    assert.equal((await balanceOf(u.id)).balance_micros, before.balance_micros - first.json.charged_micros);
    await ledgerOk('after track replays');
  });

  it('secrets are never replayed: POST /users and /service-tokens with a used key are 409 without the secret', async () => {
    const key = unique('users');
    const body = { email: `${unique('idem')}@example.com`, tier: 'starter' };
    const first = expectStatus(await api('POST', '/users', { body, headers: { 'Idempotency-Key': key } }), 201);
    const second = await api('POST', '/users', { body, headers: { 'Idempotency-Key': key } });
    expectStatus(second, 409, { code: 'idempotency_conflict' });
    assert.ok(!('api_key' in (second.json ?? {})) && !second.text.includes(first.json.api_key) && !/tg_[A-Za-z0-9_-]{16,}/.test(second.text),
      `the repeated POST /users must not contain a key: ${second.text}`);
    const third = await api('POST', '/users', { body: { ...body, email: `${unique('idem')}@example.com` }, headers: { 'Idempotency-Key': key } });
    expectStatus(third, 409, { code: 'idempotency_conflict' });
    const tkey = unique('tokens');
    const tbody = { name: 'idem token', scopes: ['meter'] };
    const t1 = expectStatus(await api('POST', '/service-tokens', { body: tbody, headers: { 'Idempotency-Key': tkey } }), 201);
    const t2 = await api('POST', '/service-tokens', { body: tbody, headers: { 'Idempotency-Key': tkey } });
    expectStatus(t2, 409, { code: 'idempotency_conflict' });
    assert.ok(!('token' in (t2.json ?? {})) && !t2.text.includes(t1.json.token), `the repeated POST /service-tokens must not contain a token: ${t2.text}`);
    await ledgerOk('after secret idempotency');
  });
});

// ---------------------------------------------------------------- d. pagination

describe('d. cursor pages', () => {
  it('limit 10 while allocations are inserted between pages: no duplicates, nothing that existed is missed', async () => {
    const u = await newUser('starter');
    for (let i = 0; i < 25; i++) {
      expectStatus(await api('POST', '/credits/allocate', { body: { user_id: u.id, amount_micros: 1_000 + i, reason: `page ${i}` } }), 201);
    }
    const existing = await allTransactions(u.id);
    assert.ok(existing.length >= 26, `expected the first grant and 25 allocations, got ${existing.length}`);
    const seen = [];
    const inserts = [];
    let cursor = null;
    let pages = 0;
    do {
      const page = api('GET', `/credits/transactions?user_id=${u.id}&limit=10${cursor === null ? '' : `&cursor=${cursor}`}`);
      // Two allocations race each page fetch.
      for (let j = 0; j < 2; j++) {
        inserts.push(api('POST', '/credits/allocate', { body: { user_id: u.id, amount_micros: 500, reason: `during paging ${pages}.${j}` } }));
      }
      const r = expectStatus(await page, 200);
      assert.ok(r.json.data.length <= 10, `limit 10: got ${r.json.data.length} rows`);
      seen.push(...r.json.data);
      cursor = r.json.next_cursor;
      if (cursor !== null) assert.equal(r.json.data.length, 10, 'a page before the last must be full');
      assert.ok(++pages <= 20, 'more than 20 pages: the cursor does not advance');
    } while (cursor !== null);
    for (const r of await Promise.all(inserts)) expectStatus(r, 201);
    const ids = seen.map((t) => t.id);
    const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
    assert.deepEqual(dupes, [], `transactions listed twice across pages: ${dupes.join(', ')}`);
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i] < ids[i - 1], `pages must be newest first without going back: ${ids.join(', ')}`);
    const missing = existing.filter((t) => !ids.includes(t.id)).map((t) => t.id);
    assert.deepEqual(missing, [], `transactions that existed when paging started but were not listed: ${missing.join(', ')}`);
    await ledgerOk('after paging under inserts');
  });

  it('GET /users pages are disjoint', async () => {
    for (let i = 0; i < 3; i++) await newUser('free');
    const ids = [];
    let cursor = null;
    for (let page = 0; page < 3; page++) {
      const r = expectStatus(await api('GET', `/users?limit=2${cursor === null ? '' : `&cursor=${cursor}`}`), 200);
      ids.push(...r.json.data.map((x) => x.id));
      cursor = r.json.next_cursor;
      if (cursor === null) break;
    }
    assert.equal(new Set(ids).size, ids.length, `users listed twice: ${ids.join(', ')}`);
    await ledgerOk('after listing users');
  });
});

// ---------------------------------------------------------------- e. audit

describe('e. audit log', () => {
  it('admin actions are listed newest first with actor, action and client address', async () => {
    const u = await newUser('starter');
    expectStatus(await api('POST', '/credits/allocate', { body: { user_id: u.id, amount_micros: 1_111, reason: 'audited' } }), 201);
    expectStatus(await api('PATCH', `/users/${u.id}`, { body: { overage_limit_micros: 5_000 } }), 200);
    const key = expectStatus(await api('POST', '/keys', { body: { user_id: u.id, name: 'audited key' } }), 201).json.key;
    expectStatus(await api('DELETE', `/keys/${key.id}`), 200);
    const r = expectStatus(await api('GET', '/audit?limit=50'), 200);
    const rows = r.json.data;
    for (let i = 1; i < rows.length; i++) {
      assert.ok(rows[i].id < rows[i - 1].id, `audit: expected newest first (ids descending), got ${rows.map((x) => x.id).join(', ')}`);
      assert.ok(Date.parse(rows[i].created_at) <= Date.parse(rows[i - 1].created_at), 'audit: created_at must not increase down the list');
    }
    const expected = [
      /^DELETE \/api\/v1\/keys\/(\d+|\{id\})$/,
      /^POST \/api\/v1\/keys$/,
      /^PATCH \/api\/v1\/users\/(\d+|\{id\})$/,
      /^POST \/api\/v1\/credits\/allocate$/,
      /^POST \/api\/v1\/users$/,
    ];
    // The five newest changes are this case's, in reverse order.
    const changes = rows.filter((x) => !/^GET /.test(x.action)).slice(0, expected.length);
    assert.equal(changes.length, expected.length, `audit: expected at least ${expected.length} entries, got ${JSON.stringify(rows.slice(0, 8))}`);
    for (const [i, re] of expected.entries()) {
      const row = changes[i];
      assert.match(row.action, re, `audit entry ${i}: expected action ${re}, got ${JSON.stringify(row)}`);
      assert.equal(row.actor, 'admin', `audit entry ${i}: ${JSON.stringify(row)}`);
      assert.equal(row.client_address, '127.0.0.1', `audit entry ${i}: ${JSON.stringify(row)}`);
    }
    // Pages of the log are disjoint.
    const p1 = expectStatus(await api('GET', '/audit?limit=3'), 200).json;
    assert.notEqual(p1.next_cursor, null, 'audit: more than 3 entries, so a next_cursor');
    const p2 = expectStatus(await api('GET', `/audit?limit=3&cursor=${p1.next_cursor}`), 200).json;
    const both = [...p1.data, ...p2.data].map((x) => x.id);
    assert.equal(new Set(both).size, both.length, `audit pages overlap: ${both.join(', ')}`);
    assert.ok(p2.data.every((x) => x.id < p1.data.at(-1).id), 'audit: the second page must hold older entries');
    await ledgerOk('after the audit checks');
  });
});

// ---------------------------------------------------------------- f. security


describe('f. hostile input', () => {
  it('SQL injection payloads are stored and returned verbatim', async () => {
    const payloads = ['\'); DROP TABLE users;--', '" OR 1=1 --', '1; DELETE FROM transactions WHERE 1=1; --', 'Robert\'); DROP TABLE students;-- \\ %_'];
    for (const p of payloads) {
      const email = `${p}${++counter}@example.com`; // the payload as the local part
      const created = expectStatus(await api('POST', '/users', { body: { email, name: p, tier: 'starter' } }), 201).json;
      assert.equal(created.user.email, email);
      assert.equal(created.user.name, p);
      const one = expectStatus(await api('GET', `/users/${created.user.id}`), 200).json;
      assert.equal(one.email, email, 'email changed on the way through the database');
      assert.equal(one.name, p, 'name changed on the way through the database');
      const grant = expectStatus(await api('POST', '/credits/allocate', { body: { user_id: created.user.id, amount_micros: 1_000, reason: p } }), 201).json;
      assert.equal(grant.transaction.reason, p);
      const rows = await allTransactions(created.user.id);
      assert.ok(rows.some((t) => t.reason === p), `the reason ${JSON.stringify(p)} was not listed verbatim: ${JSON.stringify(rows)}`);
      const key = expectStatus(await api('POST', '/keys', { body: { user_id: created.user.id, name: p } }), 201).json.key;
      assert.equal(key.name, p);
    }
    // Everything is still there.
    expectStatus(await api('GET', '/users?limit=200'), 200);
    await ledgerOk('after the injection payloads');
  });

  it('<script> in a name comes back verbatim as JSON, with nosniff', async () => {
    const name = '<script>alert(1)</script>';
    const r = expectStatus(await api('POST', '/users', { body: { email: `${unique('xss')}@example.com`, name } }), 201);
    assert.equal(r.json.user.name, name);
    for (const res of [r, expectStatus(await api('GET', `/users/${r.json.user.id}`), 200)]) {
      assert.equal(res.json.name ?? res.json.user.name, name);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/, 'content-type must be application/json');
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    }
    const err = await api('GET', '/users/%3Cscript%3E');
    assert.ok([400, 404].includes(err.status), `GET /users/<script>: expected 400 or 404, got ${err.status}`);
    assert.match(err.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(err.headers.get('x-content-type-options'), 'nosniff');
    await ledgerOk('after the script name');
  });

  it('oversized input: a 5000-character reason is 400 param reason (allocate, deduct with a fresh Idempotency-Key)', async () => {
    const u = await newUser('starter');
    expectStatus(await api('POST', '/credits/allocate', { body: { user_id: u.id, amount_micros: 1_000, reason: 'r'.repeat(5_000) } }), 400, { param: 'reason' });
    expectStatus(await api('POST', '/credits/deduct', {
      headers: { 'Idempotency-Key': unique('long') },
      body: { user_id: u.id, amount_micros: 1_000, reason: 'r'.repeat(5_000), event_id: unique('long') },
    }), 400, { param: 'reason', what: 'deduct with a 5000-character reason and a never-used Idempotency-Key' });
    assert.equal((await balanceOf(u.id)).balance_micros, 30_000_000, 'oversized input moved money');
    await ledgerOk('after a long reason');
  });

  it('oversized input: a 10 MiB body is 413 request_too_large', async () => {
    const u = await newUser('starter');
    const huge = Buffer.from(JSON.stringify({ user_id: u.id, amount_micros: 1_000, reason: 'x'.repeat(10 * 1024 * 1024) }));
    const r = { method: 'POST', path: '/credits/allocate', ...(await postEarlyAnswer(`${stack.url}${API}/credits/allocate`, ADMIN_TOKEN, huge)) };
    expectStatus(r, 413, { code: 'request_too_large', what: `a ${huge.length}-byte allocate` });
    assertMatchesDocument('POST', '/credits/allocate', r, 'the 413 answer');
    assert.equal((await balanceOf(u.id)).balance_micros, 30_000_000, 'oversized input moved money');
    await ledgerOk('after oversized input');
  });

  it('an Idempotency-Key longer than 255 characters is 400 param Idempotency-Key; 255 is fine', async () => {
    const u = await newUser('starter');
    const body = { user_id: u.id, amount_micros: 1_000, reason: 'long key' };
    expectStatus(await api('POST', '/credits/allocate', { body, headers: { 'Idempotency-Key': 'k'.repeat(256) } }), 400, { param: 'Idempotency-Key' });
    expectStatus(await api('POST', '/credits/deduct', {
      headers: { 'Idempotency-Key': 'k'.repeat(1_000) },
      body: { user_id: u.id, amount_micros: 10, event_id: unique('long-key') },
    }), 400, { param: 'Idempotency-Key' });
    expectStatus(await api('POST', '/credits/allocate', { body, headers: { 'Idempotency-Key': `${unique('x')}${'k'.repeat(255)}`.slice(0, 255) } }), 201);
    assert.equal((await balanceOf(u.id)).balance_micros, 30_000_000 + 1_000);
    await ledgerOk('after long idempotency keys');
  });

  it('brute force: after 5 failed authentications from 127.0.0.1, even the admin token gets 429 with Retry-After', async () => {
    const guarded = await startStack({ config: '[server]\nauth_failures_per_minute = 5\n' });
    try {
      const call = async (token) => {
        const res = await httpFetch(`${guarded.url}${API}/users?limit=1`, { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
        const text = await res.text();
        const json = jsonOrUndefined(text);
        return { method: 'GET', path: '/users?limit=1', status: res.status, headers: res.headers, text, json };
      };
      expectStatus(await call(ADMIN_TOKEN), 200, { what: 'the admin token before any failure' });
      for (let i = 1; i <= 5; i++) {
        const r = await call(`${WRONG_TOKEN}${i}`);
        expectStatus(r, 401, { code: 'invalid_api_key', what: `failed authentication ${i} of 5` });
        assertMatchesDocument('GET', '/users', r, `failure ${i}`);
      }
      const blocked = await call(ADMIN_TOKEN);
      expectStatus(blocked, 429, { code: 'rate_limited', what: 'the valid admin token after 5 failures' });
      assertMatchesDocument('GET', '/users', blocked, 'the 429 answer');
      const retryAfter = blocked.headers.get('retry-after');
      assert.match(retryAfter ?? '', /^[1-9]\d*$/, `429: expected Retry-After in whole seconds, got ${retryAfter}`);
      assert.ok(Number(retryAfter) <= 60, `Retry-After ${retryAfter}: the window is one minute`);
      // The document needs no credentials, so it is not throttled.
      const docRes = await httpFetch(`${guarded.url}${API}/openapi.json`);
      assert.equal(docRes.status, 200, 'openapi.json needs no credentials, so no throttling either');
      await docRes.arrayBuffer();
    } finally {
      await guarded.stop();
    }
  });
});

// ---------------------------------------------------------------- g. balance stream

describe('g. GET /credits/balance/stream', () => {
  it('an allocation shows up as an "event: balance" with the new balance_micros', async () => {
    const u = await newUser('starter');
    const before = await balanceOf(u.id);
    const s = await openStream(`/credits/balance/stream?user_id=${u.id}`, u.apiKey, { timeoutMs: 15_000 });
    try {
      assert.equal(s.stream.status, 200, `stream: expected 200, got ${s.stream.status}: ${s.stream.text}`);
      assert.match(s.stream.headers.get('content-type') ?? '', /^text\/event-stream/);
      const first = await s.until((events) => events.length >= 1);
      assert.ok(first.events.length >= 1, `stream: no first event within 15 s (got ${JSON.stringify(first.text)})`);
      assert.equal(first.events[0].data.balance_micros, before.balance_micros, `the first event: expected the current balance, got ${JSON.stringify(first.events[0])}`);
      expectStatus(await api('POST', '/credits/allocate', { body: { user_id: u.id, amount_micros: 12_345, kind: 'bonus', reason: 'stream' } }), 201);
      const target = before.balance_micros + 12_345;
      const got = await s.until((events) => events.some((e) => e.data?.balance_micros === target));
      assert.ok(got.events.some((e) => e.event === 'balance' && e.data.balance_micros === target),
        `stream: no "event: balance" with balance_micros ${target} within 15 s; got ${JSON.stringify(got.text)}`);
      assertMatchesDocument('GET', '/credits/balance/stream', got, 'balance stream');
      const last = got.events.at(-1).data;
      assert.equal(last.by_kind.bonus, before.by_kind.bonus + 12_345);
    } finally {
      s.close();
    }
    // The server still answers after the client left the stream.
    expectStatus(await api('GET', `/credits/balance?user_id=${u.id}`), 200);
    await ledgerOk('after the balance stream');
  });
});

// ---------------------------------------------------------------- h. injection, header injection, oversized input

// SQL that would do harm if a parameter were ever pasted into a statement.
const SQL_PAYLOADS = [
  '\'); DROP TABLE users;--',
  '" OR 1=1 --',
  '1 UNION SELECT key_hash FROM api_keys--',
  '\' OR \'1\'=\'1\' /*',
  '1; DELETE FROM transactions WHERE 1=1; --',
];

// Collects every difference instead of stopping at the first, so one run
// names every parameter at fault.
class Findings {
  constructor() {
    this.list = [];
  }

  // The answer has `status` (and error.param / error.code), is no 5xx and
  // matches the document. True when all of that holds.
  status(label, r, status, { param, code } = {}) {
    const problems = [];
    if (r.status >= 500) problems.push(`a server error ${r.status}`);
    if (r.status !== status) {
      problems.push(`expected ${status}${param ? ` param ${param}` : ''}, got ${r.status}`);
    } else {
      if (param !== undefined && r.json?.error?.param !== param) problems.push(`expected error.param ${JSON.stringify(param)}, got ${JSON.stringify(r.json?.error?.param)}`);
      if (code !== undefined && r.json?.error?.code !== code) problems.push(`expected error.code ${code}, got ${JSON.stringify(r.json?.error?.code)}`);
      try {
        assertMatchesDocument(r.method, r.path, r, label);
      } catch (e) {
        problems.push(e.message.split('\n')[0]);
      }
    }
    if (problems.length) this.list.push(`${label} [${r.method} ${r.path}]: ${problems.join('; ')} — ${r.text.slice(0, 300)}`);
    return problems.length === 0;
  }

  same(label, got, want) {
    if (got !== want) this.list.push(`${label}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
  }

  ok(label, cond, detail = '') {
    if (!cond) this.list.push(`${label}${detail ? `: ${detail}` : ''}`);
    return Boolean(cond);
  }

  // Error answers too are JSON, never something a browser would sniff.
  jsonNosniff(label, headers) {
    const get = (k) => (typeof headers.get === 'function' ? headers.get(k) : headers[k]);
    this.ok(`${label}: content-type application/json`, /^application\/json/.test(get('content-type') ?? ''), `got ${JSON.stringify(get('content-type'))}`);
    this.ok(`${label}: x-content-type-options nosniff`, get('x-content-type-options') === 'nosniff', `got ${JSON.stringify(get('x-content-type-options'))}`);
  }

  async ledger(when) {
    const l = await stack.checkLedger();
    this.ok(`check-ledger ${when}`, l.code === 0 && /ledger OK/.test(l.stdout), `exit ${l.code}: ${l.stdout} ${l.stderr}`);
  }

  assertNone(what) {
    assert.deepEqual(this.list, [], `${this.list.length} problems ${what}:\n${this.list.join('\n')}`);
  }
}

// Every user, all pages.
async function allUsers() {
  const all = [];
  let cursor = null;
  for (let page = 0; page < 100; page++) {
    const r = expectStatus(await api('GET', `/users?limit=200${cursor === null ? '' : `&cursor=${cursor}`}`), 200);
    all.push(...r.json.data);
    cursor = r.json.next_cursor;
    if (cursor === null) return all;
  }
  throw new Error('more than 100 pages of users');
}

// The HTTP/1.1 answers in `text`, one after the other (Content-Length or
// chunked bodies).
function parseResponses(text) {
  const out = [];
  let rest = text;
  while (rest.length > 0) {
    const head = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n/.exec(rest);
    if (!head) {
      out.push({ status: null, headers: {}, body: rest.slice(0, 300), garbage: true });
      break;
    }
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) {
      out.push({ status: Number(head[1]), headers: {}, body: '', partial: true });
      break;
    }
    const headers = {};
    for (const line of rest.slice(head[0].length, end).split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let next = end + 4;
    let body = '';
    if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      for (;;) {
        const lineEnd = rest.indexOf('\r\n', next);
        if (lineEnd < 0) {
          next = rest.length;
          break;
        }
        const size = parseInt(rest.slice(next, lineEnd), 16);
        next = lineEnd + 2;
        if (!(size > 0)) {
          const trailerEnd = rest.indexOf('\r\n', next);
          next = trailerEnd < 0 ? rest.length : trailerEnd + 2;
          break;
        }
        body += rest.slice(next, next + size);
        next += size + 2;
      }
    } else {
      const length = Number(headers['content-length'] ?? 0);
      body = rest.slice(next, next + length);
      next += length;
    }
    out.push({ status: Number(head[1]), headers, body });
    rest = rest.slice(next);
  }
  return out;
}

// Sends `bytes` as they are on a new TCP connection to tollgate and reads
// until the server closes, or until nothing more came for `idleMs` after
// the last byte (the server may keep the connection open for another
// request), or `totalMs`.
function rawExchange(bytes, { idleMs = 1_000, totalMs = 20_000 } = {}) {
  const { hostname, port } = new URL(stack.url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    const chunks = [];
    let done = false;
    let idle;
    let total;
    const finish = (how, error) => {
      if (done) return;
      done = true;
      clearTimeout(idle);
      clearTimeout(total);
      socket.destroy();
      const text = Buffer.concat(chunks).toString('latin1');
      resolve({ how, error, text, responses: parseResponses(text) });
    };
    total = setTimeout(() => finish('timeout'), totalMs);
    socket.on('connect', () => socket.write(Buffer.from(bytes, 'latin1')));
    socket.on('data', (d) => {
      chunks.push(d);
      clearTimeout(idle);
      idle = setTimeout(() => finish('idle'), idleMs);
    });
    socket.on('end', () => finish('closed'));
    socket.on('error', (e) => finish('error', e.message));
  });
}

describe('h. injection in every parameter, header injection, oversized input', () => {
  it('SQL injection in every string parameter (body, query, path, headers): stored verbatim or 400 naming it, never a 5xx; nothing is lost', async () => {
    const f = new Findings();
    const earlier = await allUsers();
    assert.ok(earlier.length > 0, 'the earlier cases created users');
    const created = []; // the users whose email and name are payloads
    const from = day(-1);
    const to = day(1);
    for (const [i, p] of SQL_PAYLOADS.entries()) {
      const t = `payload ${i} ${JSON.stringify(p)}`;
      const q = encodeURIComponent(p);
      const n = unique('sqli');
      const s = (await newUser('starter')).id; // the subject of this payload's calls
      let r;

      // POST /users: email and name stored verbatim; tier refused.
      const email = `${p}${n}@example.com`;
      r = await api('POST', '/users', { body: { email, name: p, tier: 'starter' }, check: false });
      if (f.status(`${t}: POST /users email and name`, r, 201)) {
        f.same(`${t}: POST /users answer's email`, r.json.user.email, email);
        f.same(`${t}: POST /users answer's name`, r.json.user.name, p);
        const id = r.json.user.id;
        created.push({ id, email, name: p });
        r = await api('GET', `/users/${id}`, { check: false });
        if (f.status(`${t}: GET /users/{id} of the payload user`, r, 200)) {
          f.same(`${t}: GET /users/{id} email`, r.json.email, email);
          f.same(`${t}: GET /users/{id} name`, r.json.name, p);
        }
      }
      const refusedEmail = `${unique('sqli-tier')}@example.com`;
      f.status(`${t}: POST /users tier`, await api('POST', '/users', { body: { email: refusedEmail, tier: p }, check: false }), 400, { param: 'tier' });
      // The refused call created nobody: its address is still free.
      f.status(`${t}: POST /users with the address of the refused call`, await api('POST', '/users', { body: { email: refusedEmail, tier: 'free' }, check: false }), 201);

      // PATCH /users/{id}: tier and status refused, the user unchanged.
      f.status(`${t}: PATCH /users/{id} tier`, await api('PATCH', `/users/${s}`, { body: { tier: p }, check: false }), 400, { param: 'tier' });
      f.status(`${t}: PATCH /users/{id} status`, await api('PATCH', `/users/${s}`, { body: { status: p }, check: false }), 400, { param: 'status' });
      r = await api('GET', `/users/${s}`, { check: false });
      if (f.status(`${t}: GET /users/{id} after the refused PATCHes`, r, 200)) {
        f.same(`${t}: tier after the refused PATCH`, r.json.tier, 'starter');
        f.same(`${t}: status after the refused PATCH`, r.json.status, 'active');
      }

      // POST /keys: name verbatim, in the answer and in GET /keys.
      r = await api('POST', '/keys', { body: { user_id: s, name: p }, check: false });
      if (f.status(`${t}: POST /keys name`, r, 201)) {
        f.same(`${t}: POST /keys answer's name`, r.json.key.name, p);
        const keyId = r.json.key.id;
        r = await api('GET', `/keys?user_id=${s}`, { check: false });
        if (f.status(`${t}: GET /keys`, r, 200)) f.same(`${t}: GET /keys name of the new key`, r.json.data.find((k) => k.id === keyId)?.name, p);
      }

      // POST /service-tokens: name verbatim; a payload scope refused.
      r = await api('POST', '/service-tokens', { body: { name: p, scopes: ['meter'] }, check: false });
      if (f.status(`${t}: POST /service-tokens name`, r, 201)) f.same(`${t}: POST /service-tokens answer's name`, r.json.name, p);
      f.status(`${t}: POST /service-tokens scopes [payload]`, await api('POST', '/service-tokens', { body: { name: 'sqli', scopes: [p] }, check: false }), 400, { param: 'scopes' });
      f.status(`${t}: POST /service-tokens scopes [meter, payload]`, await api('POST', '/service-tokens', { body: { name: 'sqli', scopes: ['meter', p] }, check: false }), 400, { param: 'scopes' });

      // allocate: kind and expires_at refused; reason verbatim; the payload
      // as Idempotency-Key replays the first answer.
      f.status(`${t}: allocate kind`, await api('POST', '/credits/allocate', { body: { user_id: s, amount_micros: 1_000, kind: p }, check: false }), 400, { param: 'kind' });
      f.status(`${t}: allocate expires_at`, await api('POST', '/credits/allocate', { body: { user_id: s, amount_micros: 1_000, expires_at: p }, check: false }), 400, { param: 'expires_at' });
      const grant = { user_id: s, amount_micros: 2_000, kind: 'bonus', reason: p };
      // An Idempotency-Key is 1 to 255 of ! to ~ (openapi.json: ^[!-~]+$):
      // the payload with its spaces is refused, without them it is a key.
      if (p.includes(' ')) {
        f.status(`${t}: allocate with the payload (spaces included) as Idempotency-Key`, await api('POST', '/credits/allocate', {
          body: grant, headers: { 'Idempotency-Key': `${p}${n}` }, check: false,
        }), 400, { param: 'Idempotency-Key' });
      }
      const idem = `${p.replaceAll(' ', '')}${n}`;
      r = await api('POST', '/credits/allocate', { body: grant, headers: { 'Idempotency-Key': idem }, check: false });
      if (f.status(`${t}: allocate reason, the payload without spaces as Idempotency-Key`, r, 201)) {
        f.same(`${t}: allocate answer's reason`, r.json.transaction.reason, p);
        const again = await api('POST', '/credits/allocate', { body: grant, headers: { 'Idempotency-Key': idem }, check: false });
        if (f.status(`${t}: allocate replayed with the payload Idempotency-Key`, again, 201)) {
          f.same(`${t}: the replayed allocate's transaction id`, again.json.transaction.id, r.json.transaction.id);
        }
      }

      // deduct: event_id and reason stored; the same event_id replays under
      // another Idempotency-Key, another amount with it is 409.
      const deductBody = { user_id: s, amount_micros: 1_000, reason: p, event_id: `${p}${n}` };
      r = await api('POST', '/credits/deduct', { body: deductBody, headers: { 'Idempotency-Key': unique('sqli-deduct') }, check: false });
      let deducted;
      if (f.status(`${t}: deduct event_id and reason`, r, 201)) {
        deducted = r.json;
        f.same(`${t}: deduct answer's reason`, r.json.transaction.reason, p);
        const again = await api('POST', '/credits/deduct', { body: deductBody, headers: { 'Idempotency-Key': unique('sqli-deduct') }, check: false });
        if (f.status(`${t}: deduct replayed by its event_id`, again, 201)) {
          f.same(`${t}: the replayed deduct's transaction id`, again.json.transaction.id, r.json.transaction.id);
        }
        f.status(`${t}: deduct with the same event_id and another amount`, await api('POST', '/credits/deduct', {
          body: { ...deductBody, amount_micros: 1_001 }, headers: { 'Idempotency-Key': unique('sqli-deduct') }, check: false,
        }), 409, { code: 'idempotency_conflict' });
      }

      // refund: reason verbatim.
      if (deducted) {
        r = await api('POST', '/credits/refund', {
          body: { user_id: s, amount_micros: 100, usage_event_id: deducted.transaction.usage_event_id, reason: p }, check: false,
        });
        if (f.status(`${t}: refund reason`, r, 201)) f.same(`${t}: refund answer's reason`, r.json.transaction.reason, p);
      }

      // metering/track: event_id and model stored; service and occurred_at refused.
      const trackBody = { event_id: `${p}${n}-track`, user_id: s, service: 'search' };
      r = await api('POST', '/metering/track', { body: trackBody, headers: { 'Idempotency-Key': unique('sqli-track') }, check: false });
      if (f.status(`${t}: track event_id`, r, 201)) {
        f.same(`${t}: track answer's event_id`, r.json.event_id, trackBody.event_id);
        const again = await api('POST', '/metering/track', { body: trackBody, headers: { 'Idempotency-Key': unique('sqli-track') }, check: false });
        if (f.status(`${t}: track replayed by its event_id`, again, 201)) {
          f.same(`${t}: the replayed track's usage_event_id`, again.json.usage_event_id, r.json.usage_event_id);
        }
      }
      f.status(`${t}: track service`, await api('POST', '/metering/track', {
        body: { event_id: unique('sqli-service'), user_id: s, service: p }, headers: { 'Idempotency-Key': unique('sqli-track') }, check: false,
      }), 400, { param: 'service' });
      f.status(`${t}: track occurred_at`, await api('POST', '/metering/track', {
        body: { event_id: unique('sqli-occurred'), user_id: s, service: 'search', occurred_at: p }, headers: { 'Idempotency-Key': unique('sqli-track') }, check: false,
      }), 400, { param: 'occurred_at' });
      r = await api('POST', '/metering/track', {
        body: { event_id: unique('sqli-model'), user_id: s, service: 'chat', model: p, provider_cost_micros: 1_000 }, headers: { 'Idempotency-Key': unique('sqli-track') }, check: false,
      });
      if (f.status(`${t}: track model`, r, 201)) {
        const m = await api('GET', `/metering/by-model?user_id=${s}&from=${from}&to=${to}`, { check: false });
        if (f.status(`${t}: GET /metering/by-model`, m, 200)) {
          f.ok(`${t}: GET /metering/by-model lists the model verbatim`, m.json.data.some((row) => row.model === p), JSON.stringify(m.json.data));
        }
      }

      // The reasons are listed verbatim.
      r = await api('GET', `/credits/transactions?user_id=${s}&limit=200`, { check: false });
      if (f.status(`${t}: GET /credits/transactions`, r, 200)) {
        for (const type of ['grant', 'deduct', 'refund']) {
          f.ok(`${t}: GET /credits/transactions lists a ${type} with the reason verbatim`, r.json.data.some((x) => x.type === type && x.reason === p),
            JSON.stringify(r.json.data.map((x) => [x.type, x.reason])));
        }
      }

      // Query parameters.
      for (const path of ['/credits/balance', '/credits/transactions', '/keys', '/metering/summary', '/metering/by-model', '/metering/by-date', '/metering/free-tier']) {
        f.status(`${t}: GET ${path} user_id`, await api('GET', `${path}?user_id=${q}`, { check: false }), 400, { param: 'user_id' });
      }
      const stream = await openStream(`/credits/balance/stream?user_id=${q}`, ADMIN_TOKEN);
      stream.close();
      f.status(`${t}: GET /credits/balance/stream user_id`, stream.stream, 400, { param: 'user_id' });
      for (const path of ['/users?', '/audit?', `/credits/transactions?user_id=${s}&`]) {
        f.status(`${t}: GET ${path} cursor`, await api('GET', `${path}cursor=${q}`, { check: false }), 400, { param: 'cursor' });
        f.status(`${t}: GET ${path} limit`, await api('GET', `${path}limit=${q}`, { check: false }), 400, { param: 'limit' });
      }
      f.status(`${t}: GET /credits/transactions type`, await api('GET', `/credits/transactions?user_id=${s}&type=${q}`, { check: false }), 400, { param: 'type' });
      for (const path of ['/credits/transactions', '/metering/summary', '/metering/by-model', '/metering/by-date', '/metering/free-tier']) {
        f.status(`${t}: GET ${path} from`, await api('GET', `${path}?user_id=${s}&from=${q}`, { check: false }), 400, { param: 'from' });
        f.status(`${t}: GET ${path} to`, await api('GET', `${path}?user_id=${s}&to=${q}`, { check: false }), 400, { param: 'to' });
      }
      f.status(`${t}: GET /metering/by-date granularity`, await api('GET', `/metering/by-date?user_id=${s}&granularity=${q}`, { check: false }), 400, { param: 'granularity' });

      // Path ids.
      f.status(`${t}: GET /users/{payload}`, await api('GET', `/users/${q}`, { check: false }), 404);
      f.status(`${t}: PATCH /users/{payload}`, await api('PATCH', `/users/${q}`, { body: { status: 'suspended' }, check: false }), 404);
      f.status(`${t}: DELETE /keys/{payload}`, await api('DELETE', `/keys/${q}`, { check: false }), 404);

      // The payload as a bearer credential.
      f.status(`${t}: Authorization: Bearer <payload>`, await api('GET', '/users?limit=1', { token: p, check: false }), 401, { code: 'invalid_api_key' });
    }

    // `1 OR 1=1` style path ids name no user and no key (a lenient number
    // parse would read 1).
    for (const id of ['1%20OR%201=1', '1\'%20OR%20\'1\'=\'1', '1;DROP%20TABLE%20users', '1--']) {
      f.status(`GET /users/${id}`, await api('GET', `/users/${id}`, { check: false }), 404);
      f.status(`PATCH /users/${id}`, await api('PATCH', `/users/${id}`, { body: { status: 'suspended' }, check: false }), 404);
      f.status(`DELETE /keys/${id}`, await api('DELETE', `/keys/${id}`, { check: false }), 404);
    }

    // The database is intact: every earlier user is listed as it was, the
    // payload users verbatim, the ledger checks out.
    const now = await allUsers();
    const byId = new Map(now.map((u) => [u.id, u]));
    for (const u of earlier) {
      const v = byId.get(u.id);
      f.ok(`user ${u.id} from the earlier cases is listed unchanged`,
        v && v.email === u.email && v.name === u.name && v.tier === u.tier && v.status === u.status, `${JSON.stringify(u)} → ${JSON.stringify(v)}`);
    }
    for (const u of created) {
      const v = byId.get(u.id);
      f.ok(`payload user ${u.id} is listed verbatim by GET /users`, v && v.email === u.email && v.name === u.name, `${JSON.stringify(u)} → ${JSON.stringify(v)}`);
    }
    f.ok('GET /users lists at least the earlier and the payload users', now.length >= earlier.length + created.length, `${earlier.length} + ${created.length} → ${now.length}`);
    f.status('GET /audit after the payloads', await api('GET', '/audit?limit=200', { check: false }), 200);
    f.status('GET /tiers/compare after the payloads', await api('GET', '/tiers/compare', { check: false }), 200);
    await f.ledger('after the SQL-injection payloads');
    f.assertNone('with SQL-injection payloads');
  });

  it('header injection over raw TCP: bare CR, bare LF, NUL, CRLF-injected headers and smuggled requests are refused, never authenticated, never answered twice; obs-fold is read as a space', async () => {
    const f = new Findings();
    const victim = await newUser('starter');
    const before = (await balanceOf(victim.id)).balance_micros;
    const admin = `Authorization: Bearer ${ADMIN_TOKEN}`;
    const getUsers = `GET ${API}/users?limit=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
    const smuggled = `GET ${API}/users?limit=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n${admin}\r\n\r\n`;
    const grant = JSON.stringify({ user_id: victim.id, amount_micros: 1_000_000, kind: 'bonus', reason: 'header injection' });
    const other = await newUser('starter');
    const otherBefore = (await balanceOf(other.id)).balance_micros;
    const otherGrant = JSON.stringify({ user_id: other.id, amount_micros: 1_000, kind: 'bonus', reason: 'two Idempotency-Keys' });
    const allocate = `POST ${API}/credits/allocate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n`;
    // [name, bytes, statuses allowed for the one answer]
    const cases = [
      ['a bare CR inside a header value', `${getUsers}${admin}\r\nX-Note: a\rb\r\n\r\n`, [400]],
      ['a bare LF inside a header value', `${getUsers}${admin}\r\nX-Note: a\nb\r\n\r\n`, [400]],
      ['a bare LF followed by a fake Authorization header', `${getUsers}X-Note: a\n${admin}\r\n\r\n`, [400]],
      ['a NUL inside a header value', `${getUsers}${admin}\r\nX-Note: a\0b\r\n\r\n`, [400]],
      ['CRLF and a header line without a colon in a header value', `${getUsers}${admin}\r\nX-Note: a\r\nnot a header line\r\n\r\n`, [400]],
      // On the wire a CRLF in a value is a second field line: Authorization
      // and Idempotency-Key are singletons, so two of them are refused
      // rather than one picked (which one wins would be the injector's choice).
      ['CRLF and the admin token after a wrong token in the Authorization value',
        `${getUsers}Authorization: Bearer ${WRONG_TOKEN}\r\n${admin}\r\n\r\n`, [400]],
      ['CRLF and the admin token after a user key in the Authorization value',
        `${getUsers}Authorization: Bearer ${victim.apiKey}\r\n${admin}\r\n\r\n`, [400]],
      ['CRLF and the admin token in an Idempotency-Key value after the user key',
        `${allocate}Authorization: Bearer ${victim.apiKey}\r\nIdempotency-Key: ${unique('inject')}\r\n${admin}\r\nContent-Length: ${grant.length}\r\n\r\n${grant}`, [400]],
      ['CRLF and the admin token in an Idempotency-Key value before the user key',
        `${allocate}Idempotency-Key: ${unique('inject')}\r\n${admin}\r\nAuthorization: Bearer ${victim.apiKey}\r\nContent-Length: ${grant.length}\r\n\r\n${grant}`, [400]],
      ['CRLF and a second Idempotency-Key in an Idempotency-Key value',
        `${allocate}${admin}\r\nIdempotency-Key: ${unique('inject')}\r\nIdempotency-Key: ${unique('inject')}\r\nContent-Length: ${otherGrant.length}\r\n\r\n${otherGrant}`, [400]],
      ['a request smuggled after a bare CR in a header value',
        `${getUsers}Authorization: Bearer ${WRONG_TOKEN}\r\nX-Note: a\rb\r\n\r\n${smuggled}`, [400]],
      ['a request smuggled after bare LFs in a header value',
        `GET ${API}/tiers/compare HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${WRONG_TOKEN}\r\nX-Note: a\n\nGET ${API}/users?limit=200 HTTP/1.1\nHost: 127.0.0.1\n${admin}\n\n`, [400]],
      ['a request smuggled as \\r\\n\\r\\n<request> in an Idempotency-Key value after Content-Length (it is the body)',
        `${allocate}Authorization: Bearer ${victim.apiKey}\r\nContent-Length: ${smuggled.length}\r\nIdempotency-Key: k\r\n\r\n${smuggled}`, [400, 403]],
      ['a request smuggled behind Content-Length and Transfer-Encoding together (CL.TE)',
        `${allocate}Authorization: Bearer ${WRONG_TOKEN}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`, [400]],
      ['a request smuggled behind two different Content-Lengths',
        `${allocate}Authorization: Bearer ${WRONG_TOKEN}\r\nContent-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`, [400]],
    ];
    for (const [name, bytes, allowed] of cases) {
      const x = await rawExchange(bytes);
      const problems = [];
      if (x.responses.length > 1) problems.push(`${x.responses.length} answers: a smuggled request was answered`);
      if (x.responses.some((r) => r.status >= 200 && r.status < 300)) problems.push('a 2xx answer: treated as a valid, authenticated request');
      if (x.responses.some((r) => /"data"\s*:\s*\[/.test(r.body))) problems.push('the users list was answered');
      if (x.responses.some((r) => r.status >= 500)) problems.push('a 5xx answer');
      if (x.responses.length === 0) {
        // Closing without a word is allowed; leaving it open is not.
        if (x.how !== 'closed' && x.how !== 'error') problems.push('no answer, and the connection stayed open');
      } else {
        const first = x.responses[0];
        if (!allowed.includes(first.status)) problems.push(`expected ${allowed.join(' or ')} (or the connection closed), got ${first.status}`);
        if (first.status >= 400) f.jsonNosniff(`${name}: the ${first.status} answer`, first.headers);
      }
      f.ok(`raw request with ${name}`, problems.length === 0,
        `${problems.join('; ')} — answers ${JSON.stringify(x.responses.map((r) => r.status))}, exchange ended by ${x.how}${x.error ? ` (${x.error})` : ''}; `
        + `sent ${JSON.stringify(bytes.slice(0, 400))}; got ${JSON.stringify(x.text.slice(0, 300))}`);
    }
    // obs-fold: RFC 7230 §3.2.4 lets a server either refuse it (400) or
    // read each fold as a space. tollgate (Beast) reads it as a space: the
    // continuation joins its own line and never becomes a header or a
    // request of its own, so a folded wrong token stays wrong.
    const compare = `GET ${API}/tiers/compare HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
    const folds = [
      ['an obs-fold continuation line', `${compare}${admin}\r\nX-Note: a\r\n folded\r\n\r\n`, [200, 400]],
      ['an obs-fold joining "Bearer" and the admin token', `${compare}Authorization: Bearer\r\n ${ADMIN_TOKEN}\r\n\r\n`, [200, 400]],
      ['an obs-fold continuation that looks like the admin credential after a wrong token',
        `${compare}Authorization: Bearer ${WRONG_TOKEN}\r\n ${admin}\r\n\r\n`, [400, 401]],
      ['an obs-fold continuation that looks like a request line', `${compare}${admin}\r\nX-Note: a\r\n ${smuggled}`, [200, 400]],
    ];
    for (const [name, bytes, allowed] of folds) {
      const x = await rawExchange(bytes);
      const statuses = x.responses.map((r) => r.status);
      f.ok(`raw request with ${name}`, x.responses.length === 1 && allowed.includes(statuses[0])
        && !x.responses.some((r) => /"email"/.test(r.body)),
      `expected one answer, ${allowed.join(' or ')}, never the users list; got ${JSON.stringify(statuses)} (${x.how}); `
        + `sent ${JSON.stringify(bytes.slice(0, 300))}; got ${JSON.stringify(x.text.slice(0, 300))}`);
    }
    f.same('the victim\'s balance after the injection attempts (no allocation as the admin)', (await balanceOf(victim.id)).balance_micros, before);
    f.same('the balance of the user of the two-Idempotency-Keys allocate', (await balanceOf(other.id)).balance_micros, otherBefore);
    f.status('GET /tiers/compare after the raw requests', await api('GET', '/tiers/compare', { check: false }), 200);
    await f.ledger('after header injection');
    f.assertNone('with header injection');
  });

  it('script payloads: names and reasons stored verbatim; every answer, errors included, is application/json with nosniff', async () => {
    const f = new Findings();
    const payloads = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', '</script><svg onload=alert(document.cookie)>'];
    const u = (await newUser('starter')).id;
    for (const x of payloads) {
      const t = JSON.stringify(x);
      const q = encodeURIComponent(x);
      const n = unique('xss');
      const answer = (label, r, status, opts) => {
        f.status(`${t}: ${label}`, r, status, opts);
        f.jsonNosniff(`${t}: ${label}`, r.headers);
        return r.status === status;
      };
      // Errors.
      answer('POST /users tier', await api('POST', '/users', { body: { email: `${n}@example.com`, tier: x }, check: false }), 400, { param: 'tier' });
      answer('PATCH /users/{id} status', await api('PATCH', `/users/${u}`, { body: { status: x }, check: false }), 400, { param: 'status' });
      answer('allocate kind', await api('POST', '/credits/allocate', { body: { user_id: u, amount_micros: 1_000, kind: x }, check: false }), 400, { param: 'kind' });
      answer('track service', await api('POST', '/metering/track', {
        body: { event_id: `${n}-svc`, user_id: u, service: x }, headers: { 'Idempotency-Key': unique('xss') }, check: false,
      }), 400, { param: 'service' });
      answer('GET /credits/balance user_id', await api('GET', `/credits/balance?user_id=${q}`, { check: false }), 400, { param: 'user_id' });
      answer('GET /metering/by-date granularity', await api('GET', `/metering/by-date?user_id=${u}&granularity=${q}`, { check: false }), 400, { param: 'granularity' });
      answer('GET /users/{payload}', await api('GET', `/users/${q}`, { check: false }), 404);
      answer('Bearer <payload>', await api('GET', '/users?limit=1', { token: x, check: false }), 401, { code: 'invalid_api_key' });
      // Outside the document: an unknown path and a wrong method.
      for (const [method, path, status, body] of [['GET', `/${q}`, 404], ['POST', `/${q}`, 404, { name: x }], ['PUT', '/users', 405, { name: x }]]) {
        const r = await api(method, path, { body, check: false });
        f.ok(`${t}: ${method} ${API}${path}: expected ${status}`, r.status === status, `got ${r.status}: ${r.text.slice(0, 300)}`);
        f.ok(`${t}: ${method} ${API}${path}: the body is JSON`, r.json !== undefined, r.text.slice(0, 300));
        f.jsonNosniff(`${t}: ${method} ${API}${path}`, r.headers);
      }
      // Stored verbatim.
      let r = await api('POST', '/users', { body: { email: `${n}-name@example.com`, name: x }, check: false });
      if (answer('POST /users name', r, 201)) {
        f.same(`${t}: POST /users answer's name`, r.json.user.name, x);
        r = await api('GET', `/users/${r.json.user.id}`, { check: false });
        if (answer('GET /users/{id}', r, 200)) f.same(`${t}: GET /users/{id} name`, r.json.name, x);
      }
      r = await api('POST', '/keys', { body: { user_id: u, name: x }, check: false });
      if (answer('POST /keys name', r, 201)) f.same(`${t}: POST /keys answer's name`, r.json.key.name, x);
      r = await api('POST', '/service-tokens', { body: { name: x, scopes: ['billing'] }, check: false });
      if (answer('POST /service-tokens name', r, 201)) f.same(`${t}: POST /service-tokens answer's name`, r.json.name, x);
      r = await api('POST', '/credits/allocate', { body: { user_id: u, amount_micros: 1_000, reason: x }, check: false });
      if (answer('allocate reason', r, 201)) f.same(`${t}: allocate answer's reason`, r.json.transaction.reason, x);
      r = await api('POST', '/credits/deduct', { body: { user_id: u, amount_micros: 500, reason: x, event_id: `${x}${n}` }, headers: { 'Idempotency-Key': unique('xss') }, check: false });
      if (answer('deduct reason and event_id', r, 201)) f.same(`${t}: deduct answer's reason`, r.json.transaction.reason, x);
      r = await api('POST', '/metering/track', {
        body: { event_id: `${x}${n}-track`, user_id: u, service: 'chat', model: x, provider_cost_micros: 100 }, headers: { 'Idempotency-Key': unique('xss') }, check: false,
      });
      if (answer('track event_id and model', r, 201)) f.same(`${t}: track answer's event_id`, r.json.event_id, `${x}${n}-track`);
      r = await api('GET', `/metering/by-model?user_id=${u}&from=${day(-1)}&to=${day(1)}`, { check: false });
      if (answer('GET /metering/by-model', r, 200)) f.ok(`${t}: by-model lists the model verbatim`, r.json.data.some((row) => row.model === x), JSON.stringify(r.json.data));
      r = await api('GET', `/credits/transactions?user_id=${u}&limit=200`, { check: false });
      if (answer('GET /credits/transactions', r, 200)) {
        f.ok(`${t}: transactions list the reason verbatim`, r.json.data.filter((row) => row.reason === x).length >= 2, JSON.stringify(r.json.data.map((row) => row.reason)));
      }
    }
    await f.ledger('after the script payloads');
    f.assertNone('with script payloads');
  });

  it('oversized strings are 400 naming the field (300-character email, 257-character names, 65-character tier, 256-character event_id, 17 scopes, …); the limits themselves are accepted', async () => {
    const f = new Findings();
    const u = (await newUser('starter')).id;
    const before = (await balanceOf(u)).balance_micros;
    const idem = () => ({ 'Idempotency-Key': unique('long') });
    const email300 = `${'a'.repeat(300 - '@example.com'.length)}@example.com`;
    assert.equal(email300.length, 300);
    f.status('POST /users with a 300-character email', await api('POST', '/users', { body: { email: email300 }, check: false }), 400, { param: 'email' });
    f.status('POST /users with a 257-character name', await api('POST', '/users', { body: { email: `${unique('long')}@example.com`, name: 'n'.repeat(257) }, check: false }), 400, { param: 'name' });
    f.status('POST /users with a 5000-character name', await api('POST', '/users', { body: { email: `${unique('long')}@example.com`, name: 'n'.repeat(5_000) }, check: false }), 400, { param: 'name' });
    let r = await api('POST', '/users', { body: { email: `${unique('long')}@example.com`, name: 'n'.repeat(256) }, check: false });
    if (f.status('POST /users with a 256-character name', r, 201)) f.same('the 256-character name', r.json.user.name, 'n'.repeat(256));
    f.status('POST /users with a 65-character tier', await api('POST', '/users', { body: { email: `${unique('long')}@example.com`, tier: 't'.repeat(65) }, check: false }), 400, { param: 'tier' });
    f.status('PATCH /users/{id} with a 65-character tier', await api('PATCH', `/users/${u}`, { body: { tier: 't'.repeat(65) }, check: false }), 400, { param: 'tier' });
    f.status('POST /keys with a 257-character name', await api('POST', '/keys', { body: { user_id: u, name: 'k'.repeat(257) }, check: false }), 400, { param: 'name' });
    r = await api('POST', '/keys', { body: { user_id: u, name: 'k'.repeat(256) }, check: false });
    if (f.status('POST /keys with a 256-character name', r, 201)) f.same('the 256-character key name', r.json.key.name, 'k'.repeat(256));
    f.status('POST /service-tokens with a 257-character name', await api('POST', '/service-tokens', { body: { name: 's'.repeat(257), scopes: ['meter'] }, check: false }), 400, { param: 'name' });
    const scopes17 = Array.from({ length: 17 }, (_, i) => (i % 2 ? 'billing' : 'meter'));
    f.status('POST /service-tokens with 17 scopes', await api('POST', '/service-tokens', { body: { name: 'many scopes', scopes: scopes17 }, check: false }), 400, { param: 'scopes' });
    f.status('POST /service-tokens with 16 scopes', await api('POST', '/service-tokens', { body: { name: 'sixteen scopes', scopes: scopes17.slice(0, 16) }, check: false }), 201);
    f.status('allocate with a 65-character kind', await api('POST', '/credits/allocate', { body: { user_id: u, amount_micros: 1_000, kind: 'b'.repeat(65) }, check: false }), 400, { param: 'kind' });
    f.status('deduct with a 256-character event_id', await api('POST', '/credits/deduct', { body: { user_id: u, amount_micros: 1_000, event_id: 'e'.repeat(256) }, headers: idem(), check: false }), 400, { param: 'event_id' });
    f.status('deduct with a 10000-character event_id', await api('POST', '/credits/deduct', { body: { user_id: u, amount_micros: 1_000, event_id: 'e'.repeat(10_000) }, headers: idem(), check: false }), 400, { param: 'event_id' });
    const event255 = `${unique('d')}${'e'.repeat(255)}`.slice(0, 255);
    f.status('deduct with a 255-character event_id', await api('POST', '/credits/deduct', { body: { user_id: u, amount_micros: 1_000, event_id: event255 }, headers: idem(), check: false }), 201);
    f.status('track with a 256-character event_id', await api('POST', '/metering/track', { body: { event_id: 't'.repeat(256), user_id: u, service: 'search' }, headers: idem(), check: false }), 400, { param: 'event_id' });
    f.status('track with a 33-character service', await api('POST', '/metering/track', { body: { event_id: unique('long'), user_id: u, service: 's'.repeat(33) }, headers: idem(), check: false }), 400, { param: 'service' });
    f.status('track with a 257-character model', await api('POST', '/metering/track', { body: { event_id: unique('long'), user_id: u, service: 'chat', model: 'm'.repeat(257), provider_cost_micros: 10 }, headers: idem(), check: false }), 400, { param: 'model' });
    f.status('track with a 65-character occurred_at', await api('POST', '/metering/track', { body: { event_id: unique('long'), user_id: u, service: 'search', occurred_at: `2026-01-01T00:00:00${'0'.repeat(45)}Z` }, headers: idem(), check: false }), 400, { param: 'occurred_at' });
    const track255 = `${unique('t')}${'t'.repeat(255)}`.slice(0, 255);
    r = await api('POST', '/metering/track', { body: { event_id: track255, user_id: u, service: 'search' }, headers: idem(), check: false });
    if (f.status('track with a 255-character event_id', r, 201)) f.same('the 255-character event_id', r.json.event_id, track255);
    f.status('GET /credits/transactions with a 10000-character cursor', await api('GET', `/credits/transactions?user_id=${u}&cursor=${'9'.repeat(10_000)}`, { check: false }), 400, { param: 'cursor' });
    f.status('GET /credits/balance with a 10000-digit user_id', await api('GET', `/credits/balance?user_id=${'1'.repeat(10_000)}`, { check: false }), 400, { param: 'user_id' });
    f.same('the balance after the oversized calls (one 1000 deduct, one 1000 search event)', (await balanceOf(u)).balance_micros, before - 2_000);
    await f.ledger('after oversized strings');
    f.assertNone('with oversized strings');
  });

  it('a JSON body nested 10000 levels deep is 400 invalid_json or ignored as an unknown member, never a crash; malformed JSON in an unknown member is 400; the server answers afterwards', async () => {
    const f = new Findings();
    const u = (await newUser('starter')).id;
    const before = (await balanceOf(u)).balance_micros;
    const arrays = (depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
    const objects = (depth) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
    const known = `"user_id": ${u}, "amount_micros": 1000, "reason": "deep"`;
    // [name, body, may it be accepted (the deep part an unknown member), any 400 will do]
    const bodies = [
      ['10000 nested arrays in an unknown member', `{${known}, "deep": ${arrays(10_000)}}`, true],
      ['10000 nested objects in an unknown member', `{${known}, "deep": ${objects(10_000)}}`, true],
      ['10000 nested arrays before the known members', `{"deep": ${arrays(10_000)}, ${known}}`, true],
      ['100000 nested arrays in an unknown member', `{${known}, "deep": ${arrays(100_000)}}`, true],
      // Valid JSON, or over simdjson's depth limit: invalid_json, or (read) no user_id.
      ['a body of 10000 nested objects', objects(10_000), false, true],
      ['a body of 10000 nested arrays', arrays(10_000), false, true],
      // Not JSON at all, however the known members read: never accepted.
      ['10000 unclosed arrays', `{${known}, "deep": ${'['.repeat(10_000)}}`, false],
      ['an unknown member "[}" (an unclosed array)', `{${known}, "x": [}`, false],
      ['an unknown member "[1 2 3]" (no commas)', `{${known}, "x": [1 2 3]}`, false],
      ['an unknown member "{"a" 1}" (no colon)', `{${known}, "x": {"a" 1}}`, false],
    ];
    let accepted = 0;
    for (const [name, raw, mayAccept, any400] of bodies) {
      let r;
      try {
        r = await api('POST', '/credits/allocate', { raw, check: false });
      } catch (e) {
        f.ok(`${name}: an answer`, false, `the request failed: ${e.message} ${e.cause?.message ?? ''}`);
      }
      if (r) {
        const ok400 = r.status === 400 && (any400 || r.json?.error?.code === 'invalid_json');
        const ok201 = mayAccept && r.status === 201;
        if (r.status === 201) accepted++;
        f.ok(`${name}: expected 400 invalid_json${mayAccept ? ' or 201 with the member ignored' : ''}`, ok400 || ok201, `got ${r.status}: ${r.text.slice(0, 300)}`);
        if (ok201) f.same(`${name}: the accepted grant's reason`, r.json.transaction.reason, 'deep');
        if (r.status >= 400) f.jsonNosniff(`${name}: the ${r.status} answer`, r.headers);
      }
      f.status(`GET /tiers/compare after ${name}`, await api('GET', '/tiers/compare', { check: false }), 200);
    }
    f.same('the balance after the deep bodies (1000 for each one accepted)', (await balanceOf(u)).balance_micros, before + 1_000 * accepted);
    await f.ledger('after deeply nested bodies');
    f.assertNone('with deeply nested JSON');
  });
});
