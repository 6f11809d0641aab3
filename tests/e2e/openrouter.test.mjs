// OpenRouter provisioning (issue #7, docs/openrouter.md) through real
// processes: a key per user created through the mock's key management API,
// used for that user's managed calls, synced, revoked; every way the
// management API can fail (error statuses, slow, stalled, reset, an answer
// lost after the key was made); the key limit as a safety net; the
// reconciliation of a call billed on an estimate from /generation; the
// master key rotation (API and CLI); and the provisioned keys never leaving
// the database in clear.
//
// Two stacks, one after the other:
//   - in the main one the background job neither syncs (every hour) nor
//     retries a pending key (after 10 min) while the file runs: it would
//     take the management faults a test arms for its own call. Only the
//     tests make management calls there;
//   - the reconciliation one has the mock hide generations for 1.5 s
//     (`--generation-visible-after-ms`), syncs every 300 ms and retries a
//     pending key after 300 ms: the background jobs are under test there.
//
// Money is checked with BigInt from decimal text (money.mjs), never through
// a double: the mock's key figures are read from its answer's own text.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  startStack, httpFetch, ADMIN_TOKEN, TOLLGATE_BIN, APIError, assertLedgerOk, pollUntil, sum, documentChecker,
  jsonOrUndefined, assertNotInClear, readStream,
} from './harness.mjs';
import { usdToPico, numberToUsdText, divRoundHalfUp, PICO_PER_MICRO, expectedCharge } from './money.mjs';

const API = '/api/v1';
const MANAGEMENT_KEY = 'mock-management-key';
const PLATFORM_KEY = 'sk-or-v1-e2e-platform-key';
const OR_PAID = 'openai/gpt-4o-mini';
const MANAGEMENT_TIMEOUT_MS = 1000;
const POLL = { timeoutMs: 10_000, intervalMs: 50 };
const PROVISIONING_ENV = { TOLLGATE_OPENROUTER_PROVISIONING_KEY: MANAGEMENT_KEY };

const MAIN_CONFIG = `[timeouts]
maintenance_ms = 200
reconcile_after_ms = 100
openrouter_management_ms = ${MANAGEMENT_TIMEOUT_MS}
openrouter_sync_ms = 3600000
provisioning_retry_ms = 600000
`;
const RECONCILE_CONFIG = `[timeouts]
maintenance_ms = 200
reconcile_after_ms = 100
openrouter_management_ms = ${MANAGEMENT_TIMEOUT_MS}
openrouter_sync_ms = 300
provisioning_retry_ms = 300
`;

// ---------------------------------------------------------------- what the file saw

// Every answer tollgate gave this file (admin API and SDK), and everything
// tollgate printed: searched for the provisioned keys at the end.
const answers = [];
const captured = { stdout: '', stderr: '' };
// A label (the user id, mostly) -> a plaintext provisioned key, as seen at
// the mock (the only place it shows: the Authorization tollgate sent
// upstream). Revoked keys stay: they must not leak either.
const seenKeys = new Map();
// Every user of the main stack (for the rotation's count of sealed keys).
const mainUsers = [];
// A user of the main stack whose provisioned key stays the same throughout
// (seenKeys has it): the rotation checks its calls still carry it.
let alice;

function capture(s) {
  s.tollgate.child.stdout.on('data', (d) => { captured.stdout += d; });
  s.tollgate.child.stderr.on('data', (d) => { captured.stderr += d; });
}

// ---------------------------------------------------------------- calls to tollgate

let checkAnswer; // (method, path, r, what): r against proxy/openapi.json as served

async function loadDocument(s) {
  const res = await httpFetch(`${s.url}${API}/openapi.json`);
  assert.equal(res.status, 200, `GET ${API}/openapi.json: expected 200, got ${res.status}`);
  checkAnswer = documentChecker(JSON.parse(await res.text()));
}

// One admin API call; the answer is kept for the leak search and, with
// `check`, validated against the OpenAPI document.
async function api(s, method, path, { token = ADMIN_TOKEN, body, check = true } = {}) {
  const res = await httpFetch(`${s.url}${API}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = jsonOrUndefined(text);
  const r = { status: res.status, headers: res.headers, text, json };
  answers.push({ what: `${method} ${path}`, text: `${[...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${text}` });
  if (check && checkAnswer) checkAnswer(method, path, r, `${method} ${path}`);
  return r;
}

function expectStatus(r, status, what, code) {
  assert.equal(r.status, status, `${what}: expected HTTP ${status}${code ? ` ${code}` : ''}, got ${r.status}: ${r.text}`);
  if (code !== undefined) assert.equal(r.json?.error?.code, code, `${what}: expected error.code ${code}, got ${r.text}`);
  return r;
}

let emailCounter = 0;
async function createUser(s, tier = 'starter') {
  const email = `or-${process.pid}-${++emailCounter}-${tier}@example.com`;
  const r = expectStatus(await api(s, 'POST', '/users', { body: { email, tier } }), 201, `POST /users (${tier})`);
  assert.ok(/^tg_/.test(r.json?.api_key ?? ''), `POST /users: expected api_key tg_…, got ${r.text}`);
  const user = { id: r.json.user.id, apiKey: r.json.api_key, tier, email, openrouter: r.json.openrouter };
  // The stack's key name prefix ("tollgate-<8 hex>"), as its first key shows it.
  const label = /^(tollgate-[0-9a-f]{8})-user-\d+$/.exec(r.json.openrouter?.label ?? '');
  assert.ok(label, `POST /users: expected openrouter.label tollgate-<8 hex>-user-<id>, got ${r.text}`);
  assert.ok(s.keyPrefix === undefined || s.keyPrefix === label[1], `the key name prefix changed: ${s.keyPrefix} then ${label[1]}`);
  s.keyPrefix = label[1];
  if (s === main) mainUsers.push(user);
  return user;
}

// The name tollgate gives a user's key at OpenRouter.
function keyName(s, userId) {
  assert.ok(s.keyPrefix, 'no user created on this stack yet: its key name prefix is unknown');
  return `${s.keyPrefix}-user-${userId}`;
}

async function account(s, userId) {
  return expectStatus(await api(s, 'GET', `/openrouter/account?user_id=${userId}`), 200, `GET /openrouter/account (user ${userId})`).json;
}

// A chat call through the SDK; the answer is kept for the leak search.
async function chat(s, user, { maxTokens = 4, stream = false } = {}) {
  const client = s.client(user.apiKey);
  const body = { model: OR_PAID, messages: [{ role: 'user', content: 'Meter this call, please.' }], max_tokens: maxTokens };
  if (!stream) {
    const { data, response } = await client.chat.completions.create(body).withResponse();
    answers.push({ what: `chat (user ${user.id})`, text: `${[...response.headers].join('\n')}\n${JSON.stringify(data)}` });
    return { usage: data.usage, response };
  }
  const { data, response } = await client.chat.completions.create({ ...body, stream: true }).withResponse();
  let usage;
  const chunks = [];
  for await (const chunk of data) {
    chunks.push(chunk);
    if (chunk.usage) usage = chunk.usage;
  }
  answers.push({ what: `stream (user ${user.id})`, text: `${[...response.headers].join('\n')}\n${JSON.stringify(chunks)}` });
  return { usage, response };
}

// The pico-USD a call's usage.cost reports (OpenRouter puts it in every answer).
function reportedPico(usage, what) {
  assert.ok(typeof usage?.cost === 'number', `${what}: expected usage.cost, got ${JSON.stringify(usage)}`);
  return usdToPico(numberToUsdText(usage.cost));
}

async function metricsText(s) {
  const res = await httpFetch(`${s.url}/metrics`);
  const text = await res.text();
  assert.equal(res.status, 200, `GET /metrics: expected 200, got ${res.status}`);
  answers.push({ what: 'GET /metrics', text });
  return text;
}

// A sample's value (BigInt) in Prometheus text; 0n when absent.
function metric(text, sample) {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? 0n : BigInt(line.slice(sample.length + 1).trim());
}

let tierCache;
async function monthlyCredits(s, tier) {
  if (!tierCache) {
    const r = expectStatus(await api(s, 'GET', '/tiers/compare'), 200, 'GET /tiers/compare');
    tierCache = new Map(r.json.tiers.map((t) => [t.id, BigInt(t.monthly_credits_micros)]));
  }
  assert.ok(tierCache.has(tier), `GET /tiers/compare has no tier ${tier}`);
  return tierCache.get(tier);
}

// ---------------------------------------------------------------- the mock

// Decimal USD text to micro-USD as tollgate rounds money: exact pico from
// the digits, half up to a micro.
function usdTextToMicros(text) {
  return divRoundHalfUp(usdToPico(text), PICO_PER_MICRO);
}

// One KeyObject of the mock's raw answer text: parsed, plus the raw text
// of its money fields (a double would lose digits).
function keyObject(text) {
  const raw = (field) => {
    const m = new RegExp(`"${field}":(null|[0-9][0-9.eE+-]*)`).exec(text);
    assert.ok(m, `the mock's key object has no numeric ${field}: ${text}`);
    return m[1];
  };
  return { ...JSON.parse(text), limitText: raw('limit'), usageText: raw('usage') };
}

// Every key at the mock, disabled ones included, every page (100 a page).
// A management request: it takes an armed fault, so never call it while
// one is pending.
async function mockKeys(s) {
  const all = [];
  for (let offset = 0; offset < 100_000; offset += 100) {
    const res = await httpFetch(`${s.mockUrl}/api/v1/keys?include_disabled=true&offset=${offset}`, {
      headers: { authorization: `Bearer ${MANAGEMENT_KEY}` },
    });
    const text = await res.text();
    assert.equal(res.status, 200, `mock GET /api/v1/keys?offset=${offset}: expected 200, got ${res.status}: ${text}`);
    const objects = text.match(/\{[^{}]*\}/g) ?? []; // KeyObjects are flat
    all.push(...objects.map(keyObject));
    if (objects.length < 100) return all;
  }
  throw new Error('the mock lists more than 100,000 keys');
}

async function mockKeysNamed(s, name) {
  return (await mockKeys(s)).filter((k) => k.name === name);
}

async function onlyMockKey(s, userId, what) {
  const keys = await mockKeysNamed(s, keyName(s, userId));
  assert.equal(keys.length, 1, `${what}: expected exactly one key named ${keyName(s, userId)} at the mock, got ${keys.length}: ${JSON.stringify(keys)}`);
  return keys[0];
}

async function mockPatchKey(s, hash, body) {
  const res = await httpFetch(`${s.mockUrl}/api/v1/keys/${hash}`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${MANAGEMENT_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200, `mock PATCH /api/v1/keys/${hash}: expected 200, got ${res.status}: ${await res.text()}`);
}

async function armFault(s, fault, count, delayMs) {
  const q = `fault=${fault}&count=${count}${delayMs === undefined ? '' : `&delay_ms=${delayMs}`}`;
  const res = await httpFetch(`${s.mockUrl}/mock/management-faults?${q}`, { method: 'POST' });
  assert.equal(res.status, 200, `mock POST /mock/management-faults?${q}: expected 200, got ${res.status}: ${await res.text()}`);
}

// How many armed faults are still pending (the others were taken by
// tollgate's attempts).
async function pendingFaults(s) {
  const res = await httpFetch(`${s.mockUrl}/mock/management-faults`);
  assert.equal(res.status, 200, `mock GET /mock/management-faults: expected 200, got ${res.status}`);
  return (await res.json()).count;
}

async function clearFaults(s) {
  await armFault(s, 'none', 0);
  assert.equal(await pendingFaults(s), 0, 'mock: faults still pending after fault=none');
}

// The key tollgate sent upstream with the last inference call.
async function lastUpstreamKey(s) {
  const last = await s.mockLastRequest();
  const m = /^Bearer (.+)$/.exec(last.headers?.authorization ?? '');
  assert.ok(m, `mock last-request: expected a bearer Authorization, got ${JSON.stringify(last.headers)}`);
  return m[1];
}

// The mask docs/openrouter.md promises: at most the first 12 and the last 4.
function assertMaskOf(masked, key, what) {
  const parts = String(masked).split('…');
  assert.equal(parts.length, 2, `${what}: expected a masked key "head…tail", got ${JSON.stringify(masked)}`);
  const [head, tail] = parts;
  assert.ok(head.length <= 12 && tail.length <= 4, `${what}: ${JSON.stringify(masked)} shows more than 12 + 4 characters`);
  assert.ok(key.startsWith(head) && key.endsWith(tail), `${what}: ${JSON.stringify(masked)} is not a mask of the key upstream (${key.slice(0, 12)}…${key.slice(-4)})`);
}

// ---------------------------------------------------------------- the leak search

function assertKeyNotIn(haystack, key, where) {
  assertNotInClear(haystack, key, where, { name: 'a provisioned OpenRouter key', prefix: 'sk-or-v1-' });
}

// ---------------------------------------------------------------- the main stack

let main;

describe('OpenRouter provisioning (main stack)', () => {
  before(async () => {
    main = await startStack({ config: MAIN_CONFIG, env: PROVISIONING_ENV });
    capture(main);
    await loadDocument(main);
  });
  after(async () => {
    await main?.stop();
  });

  // ------------------------------------------------------------ 1
  describe('a key per user, made when the user is created', () => {
    it('POST /users answers the key active and masked, with a limit of twice the tier\'s monthly credits; the key is at the mock', async () => {
      for (const tier of ['free', 'starter', 'professional', 'enterprise']) {
        const user = await createUser(main, tier);
        const o = user.openrouter;
        const what = `POST /users (${tier})`;
        assert.ok(o && typeof o === 'object', `${what}: expected an openrouter object, got ${JSON.stringify(o)}`);
        assert.equal(o.user_id, user.id, `${what}: openrouter.user_id`);
        assert.equal(o.status, 'active', `${what}: expected openrouter.status active, got ${JSON.stringify(o)}`);
        assert.equal(o.label, keyName(main, user.id), `${what}: openrouter.label`);
        assert.equal(o.last_error, null, `${what}: expected last_error null, got ${JSON.stringify(o)}`);
        assert.match(o.key_hash ?? '', /^[0-9a-f]{64}$/, `${what}: expected OpenRouter's 64-hex key_hash, got ${JSON.stringify(o)}`);
        const limit = 2n * await monthlyCredits(main, tier);
        assert.equal(BigInt(o.limit_micros), limit, `${what}: expected limit_micros 2 × the tier's monthly credits = ${limit}, got ${JSON.stringify(o)}`);
        assert.equal(o.usage_micros, 0, `${what}: a new key has usage 0, got ${JSON.stringify(o)}`);
        assert.equal(BigInt(o.remaining_micros), limit, `${what}: remaining = limit for a new key, got ${JSON.stringify(o)}`);
        assert.ok(typeof o.synced_at === 'string', `${what}: expected synced_at, got ${JSON.stringify(o)}`);

        const k = await onlyMockKey(main, user.id, what);
        assert.equal(k.hash, o.key_hash, `${what}: the mock's key hash differs from key_hash`);
        assert.equal(usdTextToMicros(k.limitText), limit, `${what}: the mock's key limit is ${k.limitText} USD, expected ${limit} micros`);
        assert.equal(k.limit_reset, 'monthly', `${what}: expected limit_reset monthly at the mock, got ${JSON.stringify(k)}`);
        assert.equal(k.disabled, false, `${what}: the key is disabled at the mock`);
        // Both mask the same key the same way (OpenRouter's label uses "...").
        assert.equal(o.key_masked.replace('…', '...'), k.label, `${what}: key_masked ${o.key_masked} does not match the mock's label ${k.label}`);
        assert.ok([...o.key_masked].length <= 12 + 1 + 4, `${what}: key_masked ${o.key_masked} is longer than 12 + … + 4`);
      }
    });

    it('GET /openrouter/account: the admin names the user, a user sees their own, another user is refused', async () => {
      const user = await createUser(main, 'starter');
      const other = await createUser(main, 'starter');
      const byAdmin = await account(main, user.id);
      assert.deepEqual(byAdmin, user.openrouter, 'GET /openrouter/account (admin) differs from the creation answer');
      const own = expectStatus(await api(main, 'GET', '/openrouter/account', { token: user.apiKey }), 200, 'GET /openrouter/account (own key)');
      assert.deepEqual(own.json, user.openrouter, 'GET /openrouter/account (own key) differs from the creation answer');
      expectStatus(await api(main, 'GET', `/openrouter/account?user_id=${other.id}`, { token: user.apiKey }), 403,
        'GET /openrouter/account naming another user', 'forbidden');
      // Only admins create and revoke.
      expectStatus(await api(main, 'POST', '/openrouter/create-account', { token: user.apiKey, body: { user_id: user.id } }), 403,
        'POST /openrouter/create-account (user)', 'forbidden');
      expectStatus(await api(main, 'DELETE', '/openrouter/account', { token: user.apiKey }), 403, 'DELETE /openrouter/account (user)', 'forbidden');
      expectStatus(await api(main, 'GET', '/openrouter/account?user_id=999999'), 404, 'GET /openrouter/account (no such user)');
    });

    it('create-account for a user who has a key changes nothing (200)', async () => {
      const user = await createUser(main, 'starter');
      const r = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 200, 'create-account again');
      assert.equal(r.json.key_hash, user.openrouter.key_hash, `create-account again: the key changed: ${r.text}`);
      await onlyMockKey(main, user.id, 'create-account again');
    });
  });

  // ------------------------------------------------------------ 2
  describe('managed traffic goes out with the user\'s own key', () => {
    let bob;

    it('each user\'s calls carry their own key; its usage grows at the mock, no one else\'s', async () => {
      alice = await createUser(main, 'starter');
      bob = await createUser(main, 'starter');
      const { usage } = await chat(main, alice);
      const key = await lastUpstreamKey(main);
      assert.match(key, /^sk-or-v1-[0-9a-f]{64}$/, `alice's call went upstream with ${key.slice(0, 12)}…, not a provisioned key`);
      assert.notEqual(key, PLATFORM_KEY, 'alice\'s call went upstream with the platform key');
      assertMaskOf(alice.openrouter.key_masked, key, 'alice\'s key_masked');
      seenKeys.set(alice.id, key);

      // The key whose usage grew is alice's, by the exact cost of the call.
      const keys = await mockKeys(main);
      const mine = keys.find((k) => k.name === keyName(main, alice.id));
      const bobs = keys.find((k) => k.name === keyName(main, bob.id));
      assert.equal(mine.hash, alice.openrouter.key_hash, 'alice\'s key at the mock has another hash');
      assert.equal(usdToPico(mine.usageText), reportedPico(usage, 'alice\'s call'),
        `alice's key usage at the mock (${mine.usageText} USD) is not the call's usage.cost`);
      assert.equal(usdToPico(bobs.usageText), 0n, `bob's key was charged for alice's call: ${bobs.usageText}`);

      await chat(main, bob, { stream: true });
      const bobKey = await lastUpstreamKey(main);
      assertMaskOf(bob.openrouter.key_masked, bobKey, 'bob\'s key_masked');
      assert.notEqual(bobKey, key, 'bob\'s call went upstream with alice\'s key');
      seenKeys.set(bob.id, bobKey);
      assertLedgerOk(await main.checkLedger(), 'after managed calls with provisioned keys');
    });

    it('a revoked key: deleted at the mock, calls go out with the platform key; a new key is used at once', async () => {
      const r = expectStatus(await api(main, 'DELETE', `/openrouter/account?user_id=${bob.id}`), 200, 'DELETE /openrouter/account');
      assert.equal(r.json.status, 'deleted', `DELETE /openrouter/account: expected status deleted, got ${r.text}`);
      assert.equal((await account(main, bob.id)).status, 'deleted', 'GET /openrouter/account after the revocation');
      assert.deepEqual(await mockKeysNamed(main, keyName(main, bob.id)), [], 'the revoked key is still at the mock');

      await chat(main, bob);
      assert.equal(await lastUpstreamKey(main), PLATFORM_KEY, 'a revoked user\'s call did not go out with the platform key');

      // A second revocation finds nothing to delete and succeeds.
      expectStatus(await api(main, 'DELETE', `/openrouter/account?user_id=${bob.id}`), 200, 'DELETE /openrouter/account again');

      const again = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: bob.id } }), 201,
        'create-account after a revocation');
      assert.equal(again.json.status, 'active', `create-account after a revocation: ${again.text}`);
      assert.notEqual(again.json.key_hash, r.json.key_hash, 'create-account after a revocation gave the old key back');
      const k = await onlyMockKey(main, bob.id, 'create-account after a revocation');
      assert.equal(k.hash, again.json.key_hash, 'the new key at the mock has another hash');
      await chat(main, bob);
      const newKey = await lastUpstreamKey(main);
      assertMaskOf(again.json.key_masked, newKey, 'bob\'s new key_masked');
      assert.notEqual(newKey, seenKeys.get(bob.id), 'bob\'s call went out with the revoked key');
      seenKeys.set(`${bob.id}-second`, newKey);
      // Alice was not touched.
      await chat(main, alice);
      assert.equal(await lastUpstreamKey(main), seenKeys.get(alice.id), 'alice\'s key changed when bob\'s was revoked');
      assertLedgerOk(await main.checkLedger(), 'after a revocation and a new key');
    });
  });

  // ------------------------------------------------------------ 3
  describe('the management API failing: errors, retries, timeouts', () => {
    // Each endpoint that calls OpenRouter, with a fresh subject per case.
    // `idempotent`: tollgate retries a request that got no answer;
    // creating a key is not retried once it went out (it may have happened).
    const endpoints = [
      {
        name: 'POST /openrouter/sync-balance (user, no body)',
        idempotent: true,
        okStatus: 200,
        prepare: () => createUser(main, 'starter'),
        call: (u) => api(main, 'POST', '/openrouter/sync-balance', { token: u.apiKey }),
        // A failed sync leaves the key as it was, with the error recorded.
        async afterFailure(u, message) {
          const a = await account(main, u.id);
          assert.equal(a.status, 'active', `after a failed sync: ${JSON.stringify(a)}`);
          assert.equal(a.last_error, message, `after a failed sync: expected last_error ${JSON.stringify(message)}, got ${JSON.stringify(a)}`);
          const ok = expectStatus(await api(main, 'POST', '/openrouter/sync-balance', { token: u.apiKey }), 200, 'sync after the fault');
          assert.equal(ok.json.last_error, null, `a successful sync keeps the old error: ${ok.text}`);
        },
        async afterSuccess(u, r) {
          assert.equal(r.json.status, 'active', `sync: ${r.text}`);
          assert.equal(r.json.key_hash, u.openrouter.key_hash, `sync: ${r.text}`);
        },
      },
      {
        name: 'DELETE /openrouter/account',
        idempotent: true,
        okStatus: 200,
        prepare: () => createUser(main, 'starter'),
        call: (u) => api(main, 'DELETE', `/openrouter/account?user_id=${u.id}`),
        async afterFailure(u, message) {
          const a = await account(main, u.id);
          assert.equal(a.status, 'active', `after a failed revocation the key must stay usable: ${JSON.stringify(a)}`);
          assert.equal(a.last_error, message, `after a failed revocation: ${JSON.stringify(a)}`);
          // Its calls still carry its own key.
          await chat(main, u);
          const key = await lastUpstreamKey(main);
          assertMaskOf(u.openrouter.key_masked, key, 'a call after a failed revocation');
          seenKeys.set(u.id, key);
          assertLedgerOk(await main.checkLedger(), 'after a call following a failed revocation');
          // Tried again without the fault: done (a key already gone counts as deleted).
          const ok = expectStatus(await api(main, 'DELETE', `/openrouter/account?user_id=${u.id}`), 200, 'DELETE after the fault');
          assert.equal(ok.json.status, 'deleted', ok.text);
          assert.deepEqual(await mockKeysNamed(main, keyName(main, u.id)), [], 'the key is still at the mock after the revocation');
        },
        async afterSuccess(u, r) {
          assert.equal(r.json.status, 'deleted', `DELETE: ${r.text}`);
          assert.deepEqual(await mockKeysNamed(main, keyName(main, u.id)), [], 'the key is still at the mock after the revocation');
        },
      },
      {
        name: 'POST /openrouter/create-account (a revoked user)',
        idempotent: false,
        okStatus: 201,
        async prepare() {
          const u = await createUser(main, 'starter');
          expectStatus(await api(main, 'DELETE', `/openrouter/account?user_id=${u.id}`), 200, 'revoke before create-account');
          return u;
        },
        call: (u) => api(main, 'POST', '/openrouter/create-account', { body: { user_id: u.id } }),
        async afterFailure(u, message, fault) {
          const a = await account(main, u.id);
          assert.equal(a.status, 'pending', `after a failed creation: ${JSON.stringify(a)}`);
          assert.equal(a.last_error, message, `after a failed creation: ${JSON.stringify(a)}`);
          if (fault === 'slow') {
            // The mock made the key after tollgate gave up: wait for it, so
            // the retry below has something to clean up.
            const orphan = await pollUntil(async () => (await mockKeysNamed(main, keyName(main, u.id))).length === 1, POLL);
            assert.ok(orphan, 'slow POST /keys: the mock never made the key');
          }
          // The retry (an admin's, as the maintenance job's would be) ends
          // with one key, whatever the failed attempt left.
          const ok = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: u.id } }), 201, 'create-account after the fault');
          assert.equal(ok.json.status, 'active', ok.text);
          const k = await onlyMockKey(main, u.id, 'create-account after the fault');
          assert.equal(k.hash, ok.json.key_hash, 'the key at the mock is not the one tollgate keeps');
        },
        async afterSuccess(u, r) {
          assert.equal(r.json.status, 'active', `create-account: ${r.text}`);
          const k = await onlyMockKey(main, u.id, 'create-account');
          assert.equal(k.hash, r.json.key_hash, 'the key at the mock is not the one tollgate keeps');
        },
      },
    ];

    // fault → what tollgate answers. `attempts`: how many requests tollgate
    // makes before it gives up (one more fault is armed than that, and must
    // be left over: no extra attempt). `ok` cases arm `count` and expect
    // every one taken and the call to succeed.
    // A key creation answered 5xx may have happened all the same: it is not
    // retried at once but left pending (the next attempt cleans up first).
    const cases = (idempotent) => [
      idempotent
        ? { fault: '500', attempts: 3, status: 502, code: 'upstream_error', messages: [/\(500\)/, /3 times/] }
        : { fault: '500', attempts: 1, status: 502, code: 'upstream_error', messages: [/\(500\)/] },
      ...(idempotent
        ? [{ fault: '500', count: 2, ok: true }, { fault: '502', count: 2, ok: true }]
        : [{ fault: '502', attempts: 1, status: 502, code: 'upstream_error', messages: [/\(502\)/] }]),
      { fault: '429', attempts: 3, status: 502, code: 'upstream_error', messages: [/\(429\)/, /3 times/] },
      { fault: '401', attempts: 1, status: 502, code: 'upstream_error', messages: [/provisioning key/, /401/] },
      { fault: '402', attempts: 1, status: 502, code: 'upstream_error', messages: [/credits/, /402/] },
      { fault: 'slow', delayMs: MANAGEMENT_TIMEOUT_MS + 500, attempts: idempotent ? 3 : 1, status: 504, code: 'upstream_timeout', messages: [/in time/] },
      { fault: 'stall', attempts: idempotent ? 3 : 1, status: 504, code: 'upstream_timeout', messages: [/in time/] },
      idempotent
        ? { fault: 'reset', count: 1, ok: true }
        : { fault: 'reset', attempts: 1, status: 502, code: 'upstream_error', messages: [/OpenRouter/] },
    ];

    for (const endpoint of endpoints) {
      for (const c of cases(endpoint.idempotent)) {
        const label = c.ok ? `${c.fault} ×${c.count}, then an answer: ${endpoint.okStatus}`
          : `${c.fault}${c.delayMs ? ` (${c.delayMs} ms)` : ''}: ${c.status} ${c.code} after ${c.attempts} attempt(s)`;
        it(`${endpoint.name}: ${label}`, async () => {
          const subject = await endpoint.prepare();
          assert.equal(await pendingFaults(main), 0, 'a fault is pending before the case');
          await armFault(main, c.fault, c.ok ? c.count : c.attempts + 1, c.delayMs);
          const r = await endpoint.call(subject);
          const left = await pendingFaults(main);
          await clearFaults(main);
          if (c.ok) {
            expectStatus(r, endpoint.okStatus, `${endpoint.name} after ${c.fault} ×${c.count}`);
            assert.equal(left, 0, `${endpoint.name}: expected tollgate to retry through all ${c.count} faults, ${left} left`);
            await endpoint.afterSuccess(subject, r);
            return;
          }
          expectStatus(r, c.status, `${endpoint.name} with ${c.fault}`, c.code);
          for (const m of c.messages) assert.match(r.json.error.message, m, `${endpoint.name} with ${c.fault}: the message does not say what happened`);
          assert.equal(left, 1, `${endpoint.name} with ${c.fault}: expected exactly ${c.attempts} attempt(s), ` +
            `but ${c.attempts + 1 - left} of the ${c.attempts + 1} armed faults were taken`);
          await endpoint.afterFailure(subject, r.json.error.message, c.fault);
        });
      }
    }

    it('a user created while OpenRouter is down (503) is 201 with the key pending; calls use the platform key; create-account retries', async () => {
      await armFault(main, '503', 2);
      const user = await createUser(main, 'starter');
      // The creation is not retried at once: a 5xx may have made the key.
      assert.equal(await pendingFaults(main), 1, 'POST /users with 503s: expected exactly 1 attempt');
      await clearFaults(main);
      const o = user.openrouter;
      assert.equal(o?.status, 'pending', `POST /users while OpenRouter is down: expected openrouter.status pending, got ${JSON.stringify(o)}`);
      assert.match(o.last_error ?? '', /\(503\)/, `expected last_error to say 503, got ${JSON.stringify(o)}`);
      assert.equal(o.key_masked, null, `a pending account shows a key: ${JSON.stringify(o)}`);
      assert.equal(o.key_hash, null, `a pending account has a key hash: ${JSON.stringify(o)}`);
      const a = await account(main, user.id);
      assert.equal(a.status, 'pending', `GET /openrouter/account: ${JSON.stringify(a)}`);
      assert.equal(a.last_error, o.last_error, `GET /openrouter/account: last_error ${JSON.stringify(a)}`);
      assert.deepEqual(await mockKeysNamed(main, keyName(main, user.id)), [], 'a failed creation left a key at the mock');
      // Syncing a pending key has nothing to read.
      const synced = expectStatus(await api(main, 'POST', '/openrouter/sync-balance', { token: user.apiKey }), 200, 'sync of a pending key');
      assert.equal(synced.json.status, 'pending', synced.text);

      await chat(main, user);
      assert.equal(await lastUpstreamKey(main), PLATFORM_KEY, 'a pending user\'s call did not go out with the platform key');

      const r = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 201, 'create-account for the pending user');
      assert.equal(r.json.status, 'active', r.text);
      assert.equal(r.json.last_error, null, `the error stayed after the key was made: ${r.text}`);
      const k = await onlyMockKey(main, user.id, 'create-account for the pending user');
      assert.equal(k.hash, r.json.key_hash, 'the key at the mock is not the one tollgate keeps');
      await chat(main, user);
      const key = await lastUpstreamKey(main);
      assertMaskOf(r.json.key_masked, key, 'the once-pending user\'s key_masked');
      seenKeys.set(user.id, key);
      assertLedgerOk(await main.checkLedger(), 'after calls of a pending user');
    });

    it('a revoked user whose new key could not be made: the pending account names no key (not the revoked one)', async () => {
      const user = await createUser(main, 'starter');
      const revoked = expectStatus(await api(main, 'DELETE', `/openrouter/account?user_id=${user.id}`), 200, 'revoke');
      await armFault(main, '500', 3);
      expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 502,
        'create-account with 500 ×3', 'upstream_error');
      await clearFaults(main);
      const a = await account(main, user.id);
      assert.equal(a.status, 'pending', JSON.stringify(a));
      // The revoked key no longer exists at OpenRouter.
      assert.deepEqual((await mockKeys(main)).filter((k) => k.hash === revoked.json.key_hash), [], 'the revoked key is still at the mock');
      try {
        // As docs/openrouter.md shows a pending account: no key, no figures.
        assert.equal(a.key_hash, null,
          `a pending account shows the hash of the key revoked before it (${revoked.json.key_hash.slice(0, 8)}…, gone at OpenRouter): ${JSON.stringify(a)}`);
        assert.equal(a.key_masked, null, `a pending account shows the revoked key's mask: ${JSON.stringify(a)}`);
        assert.equal(a.limit_micros, null, `a pending account shows the revoked key's limit: ${JSON.stringify(a)}`);
      } finally {
        // Whatever it shows, the retry makes one working key.
        const ok = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 201, 'create-account after the fault');
        assert.equal((await onlyMockKey(main, user.id, 'create-account after the fault')).hash, ok.json.key_hash);
      }
    });

    it('a reset on POST /keys: not retried (it may have happened), nothing made; the retry leaves exactly one key', async () => {
      await armFault(main, 'reset', 2);
      const user = await createUser(main, 'starter');
      assert.equal(await pendingFaults(main), 1, 'a key creation that went out and got no answer was sent again');
      await clearFaults(main);
      assert.equal(user.openrouter?.status, 'pending', `POST /users with a reset: ${JSON.stringify(user.openrouter)}`);
      assert.ok(user.openrouter.last_error, `POST /users with a reset: expected last_error, got ${JSON.stringify(user.openrouter)}`);
      assert.deepEqual(await mockKeysNamed(main, keyName(main, user.id)), [], 'the mock\'s reset made a key');
      expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 201, 'create-account after the reset');
      await onlyMockKey(main, user.id, 'create-account after the reset');
    });

    it('an answer lost after the key was made (slow POST /keys): the retry deletes the orphan first, leaving exactly one key', async () => {
      await armFault(main, 'slow', 1, MANAGEMENT_TIMEOUT_MS + 500);
      const user = await createUser(main, 'starter');
      assert.equal(await pendingFaults(main), 0, 'the slow fault was not taken');
      assert.equal(user.openrouter?.status, 'pending', `POST /users with a slow OpenRouter: ${JSON.stringify(user.openrouter)}`);
      assert.match(user.openrouter.last_error ?? '', /in time/, `POST /users with a slow OpenRouter: ${JSON.stringify(user.openrouter)}`);
      const orphan = await pollUntil(async () => (await mockKeysNamed(main, keyName(main, user.id)))[0], POLL);
      assert.ok(orphan, 'the mock never made the key whose answer tollgate gave up on');
      const r = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 201, 'create-account after the lost answer');
      const k = await onlyMockKey(main, user.id, 'create-account after the lost answer');
      assert.notEqual(k.hash, orphan.hash, 'the orphan key survived and the new one was not made');
      assert.equal(k.hash, r.json.key_hash, 'the key at the mock is not the one tollgate keeps');
    });

    it('two create-account calls at once for one user: one makes the key, the other is 409 provisioning_in_progress', async () => {
      const user = await createUser(main, 'starter');
      expectStatus(await api(main, 'DELETE', `/openrouter/account?user_id=${user.id}`), 200, 'revoke');
      // A slow (but in time) answer keeps the first attempt running while the second arrives.
      await armFault(main, 'slow', 1, 500);
      const both = await Promise.all([1, 2].map(() => api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } })));
      await clearFaults(main);
      const statuses = both.map((r) => r.status).sort();
      assert.deepEqual(statuses, [201, 409], `expected one 201 and one 409, got ${both.map((r) => `${r.status} ${r.text}`).join(' | ')}`);
      assert.equal(both.find((r) => r.status === 409).json.error.code, 'provisioning_in_progress', both.map((r) => r.text).join(' | '));
      await onlyMockKey(main, user.id, 'two create-account at once');
    });

    it('with more than 100 keys at OpenRouter, the retry still finds and deletes the orphan (key lists come in pages of 100)', async () => {
      // OpenRouter (and the mock) list keys 100 a page, oldest first
      // (upstream-apis.md §1c): an account with many users has its newest
      // keys, an orphan included, past the first page.
      const have = (await mockKeys(main)).length;
      for (let i = have; i < 120; i++) {
        const res = await httpFetch(`${main.mockUrl}/api/v1/keys`, {
          method: 'POST',
          headers: { authorization: `Bearer ${MANAGEMENT_KEY}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `e2e-filler-${i}` }),
        });
        assert.equal(res.status, 201, `mock POST /api/v1/keys (filler): ${res.status}`);
        await res.text();
      }
      await armFault(main, 'slow', 1, MANAGEMENT_TIMEOUT_MS + 500);
      const user = await createUser(main, 'starter');
      assert.equal(user.openrouter?.status, 'pending', `POST /users with a slow OpenRouter: ${JSON.stringify(user.openrouter)}`);
      const orphan = await pollUntil(async () => (await mockKeysNamed(main, keyName(main, user.id)))[0], POLL);
      assert.ok(orphan, 'the mock never made the key whose answer tollgate gave up on');
      assert.ok((await mockKeys(main)).findIndex((k) => k.hash === orphan.hash) >= 100, 'the orphan is not past the first page');
      const r = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 201, 'create-account after the lost answer');
      const keys = await mockKeysNamed(main, keyName(main, user.id));
      assert.equal(keys.length, 1,
        `the orphan key on page 2 of GET /keys survived the retry: user ${user.id} now holds ${keys.length} keys at OpenRouter ` +
        `(${keys.map((k) => k.hash.slice(0, 8)).join(', ')}; tollgate keeps ${r.json.key_hash.slice(0, 8)}). ` +
        'proxy/src/provisioning.cpp provision() lists only the first page of /keys before deleting same-name keys.');
    });
  });

  // ------------------------------------------------------------ 4
  describe('sync and tier changes', () => {
    it('sync-balance reads usage and limit from the mock; metering/free-tier shows the same figures', async () => {
      const user = await createUser(main, 'starter');
      const costs = [];
      costs.push(reportedPico((await chat(main, user, { maxTokens: 7 })).usage, 'call 1'));
      costs.push(reportedPico((await chat(main, user, { maxTokens: 11, stream: true })).usage, 'call 2'));
      const key = await lastUpstreamKey(main);
      assertMaskOf(user.openrouter.key_masked, key, 'key_masked');
      seenKeys.set(user.id, key);

      const k = await onlyMockKey(main, user.id, 'before the sync');
      assert.equal(usdToPico(k.usageText), sum(costs), `the mock's usage ${k.usageText} USD is not the sum of the calls' usage.cost`);
      const r = expectStatus(await api(main, 'POST', '/openrouter/sync-balance', { token: user.apiKey }), 200, 'sync-balance (user, no body)');
      const usage = usdTextToMicros(k.usageText);
      const limit = usdTextToMicros(k.limitText);
      assert.ok(usage > 0n, `the key's usage is 0 after two calls: ${k.usageText}`);
      assert.equal(BigInt(r.json.usage_micros), usage, `sync: usage_micros ${r.json.usage_micros}, the mock says ${k.usageText} USD`);
      assert.equal(BigInt(r.json.limit_micros), limit, `sync: limit_micros ${r.json.limit_micros}, the mock says ${k.limitText} USD`);
      assert.equal(BigInt(r.json.remaining_micros), limit - usage, `sync: remaining_micros ${r.text}`);
      assert.equal(r.json.last_error, null, r.text);

      assert.deepEqual(await account(main, user.id), r.json, 'GET /openrouter/account differs from the sync answer');
      const free = expectStatus(await api(main, 'GET', '/metering/free-tier', { token: user.apiKey }), 200, 'GET /metering/free-tier');
      assert.deepEqual(free.json.openrouter, r.json, `metering/free-tier: openrouter differs from the sync answer: ${free.text}`);
      // An admin syncs by naming the user.
      const byAdmin = expectStatus(await api(main, 'POST', '/openrouter/sync-balance', { body: { user_id: user.id } }), 200, 'sync-balance (admin)');
      assert.equal(byAdmin.json.usage_micros, r.json.usage_micros, byAdmin.text);
      assertLedgerOk(await main.checkLedger(), 'after sync-balance');
    });

    it('an admin tier change (PATCH /users/{id}): the key limit follows at the mock, both ways', async () => {
      const user = await createUser(main, 'starter');
      for (const tier of ['professional', 'free']) {
        expectStatus(await api(main, 'PATCH', `/users/${user.id}`, { body: { tier } }), 200, `PATCH /users/{id} {tier: ${tier}}`);
        const limit = 2n * await monthlyCredits(main, tier);
        const k = await pollUntil(async () => {
          const found = (await mockKeysNamed(main, keyName(main, user.id)))[0];
          return found && usdTextToMicros(found.limitText) === limit ? found : undefined;
        }, POLL);
        assert.ok(k, `after the change to ${tier}: the key limit at the mock did not become ${limit} micros within ${POLL.timeoutMs} ms ` +
          `(it is ${JSON.stringify((await mockKeysNamed(main, keyName(main, user.id)))[0]?.limitText)} USD)`);
        assert.equal(k.limit_reset, 'monthly', JSON.stringify(k));
        const a = await pollUntil(async () => {
          const got = await account(main, user.id);
          return BigInt(got.limit_micros ?? -1) === limit ? got : undefined;
        }, POLL);
        assert.ok(a, `after the change to ${tier}: GET /openrouter/account did not show limit ${limit} within ${POLL.timeoutMs} ms`);
      }
      assertLedgerOk(await main.checkLedger(), 'after tier changes');
    });

    it('the clean-up before a retry spares a key another tollgate named for a user of the same id', async () => {
      const user = await createUser(main, 'starter');
      expectStatus(await api(main, 'DELETE', `/openrouter/account?user_id=${user.id}`), 200, 'revoke');
      await armFault(main, '500', 1);
      expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 502,
        'create-account with a 500', 'upstream_error');
      assert.equal(await pendingFaults(main), 0, 'the creation did not take its fault');
      // Another deployment (a staging copy) sharing the OpenRouter account.
      const foreignName = `tollgate-00000000-user-${user.id}`;
      assert.notEqual(foreignName, keyName(main, user.id), 'the stack happens to use the foreign prefix');
      const res = await httpFetch(`${main.mockUrl}/api/v1/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${MANAGEMENT_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: foreignName, limit: 1 }),
      });
      assert.equal(res.status, 201, `mock POST /api/v1/keys: ${await res.text()}`);
      const r = expectStatus(await api(main, 'POST', '/openrouter/create-account', { body: { user_id: user.id } }), 201,
        'create-account after the failure (a retry: it cleans up first)');
      assert.equal((await onlyMockKey(main, user.id, 'after the retry')).hash, r.json.key_hash);
      assert.equal((await mockKeysNamed(main, foreignName)).length, 1, 'the retry deleted the other deployment\'s key');
    });

    it('a suspended user\'s key is disabled at OpenRouter, and enabled again when the user is active', async () => {
      const user = await createUser(main, 'starter');
      for (const [status, disabled] of [['suspended', true], ['active', false], ['deleted', true]]) {
        expectStatus(await api(main, 'PATCH', `/users/${user.id}`, { body: { status } }), 200, `PATCH /users/{id} {status: ${status}}`);
        const k = await pollUntil(async () => {
          const found = (await mockKeysNamed(main, keyName(main, user.id)))[0];
          return found && found.disabled === disabled ? found : undefined;
        }, POLL);
        assert.ok(k, `after status ${status}: the key at the mock did not become disabled=${disabled} within ${POLL.timeoutMs} ms`);
        const a = await pollUntil(async () => {
          const got = await account(main, user.id);
          return got.status === (disabled ? 'disabled' : 'active') ? got : undefined;
        }, POLL);
        assert.ok(a, `after status ${status}: GET /openrouter/account did not show the key's state within ${POLL.timeoutMs} ms`);
      }
    });

    it('an upgrade through tiers/switch: the key limit follows at once; a user\'s own downgrade waits for the period end', async () => {
      const user = await createUser(main, 'starter');
      const waitForLimit = async (limit) => pollUntil(async () => {
        const found = (await mockKeysNamed(main, keyName(main, user.id)))[0];
        return found && usdTextToMicros(found.limitText) === limit ? found : undefined;
      }, POLL);
      expectStatus(await api(main, 'POST', '/tiers/switch', { body: { user_id: user.id, tier: 'enterprise' } }), 200, 'tiers/switch → enterprise (admin)');
      const enterprise = 2n * await monthlyCredits(main, 'enterprise');
      assert.ok(await waitForLimit(enterprise), `after the upgrade the key limit did not become ${enterprise} micros within ${POLL.timeoutMs} ms`);
      // A downgrade is scheduled: until the period ends, the tier (and so
      // the limit a sync sets) stays enterprise.
      expectStatus(await api(main, 'POST', '/tiers/switch', { token: user.apiKey, body: { tier: 'starter' } }), 200, 'tiers/switch → starter (user)');
      const r = expectStatus(await api(main, 'POST', '/openrouter/sync-balance', { token: user.apiKey }), 200, 'sync after the scheduled downgrade');
      assert.equal(BigInt(r.json.limit_micros), enterprise, `a scheduled downgrade changed the limit before the period end: ${r.text}`);
      assertLedgerOk(await main.checkLedger(), 'after tiers/switch');
    });
  });

  // ------------------------------------------------------------ 5
  describe('the key limit: a safety net behind the ledger', () => {
    it('a key past its limit: 502 upstream_error "Key limit exceeded", nothing charged, counted in /metrics; a sync puts the limit right', async () => {
      const user = await createUser(main, 'starter');
      const limit = 2n * await monthlyCredits(main, 'starter');
      // One micro-USD: the next call is admitted (usage 0) and costs more.
      await mockPatchKey(main, user.openrouter.key_hash, { limit: 0.000001 });
      const first = await chat(main, user, { maxTokens: 8 });
      assert.ok(reportedPico(first.usage, 'the call under the limit') > 1_000_000n, 'the call cost no more than the limit');
      seenKeys.set(user.id, await lastUpstreamKey(main));

      const metricsBefore = metric(await metricsText(main), 'tollgate_upstream_failures_total{kind="key_limit"}');
      const balanceBefore = await main.balance(user.id);
      const lastId = await main.lastTransactionId(user.id);
      let thrown;
      try {
        await main.client(user.apiKey).chat.completions.create({ model: OR_PAID, messages: [{ role: 'user', content: 'Over the limit?' }], max_tokens: 4 });
      } catch (e) {
        thrown = e;
      }
      answers.push({ what: 'the key-limit error', text: `${thrown?.message} ${JSON.stringify(thrown?.error)}` });
      assert.ok(thrown instanceof APIError, `expected an APIError past the key limit, got ${thrown}`);
      assert.equal(thrown.status, 502, `past the key limit: expected HTTP 502, got ${thrown.status}: ${thrown.message}`);
      assert.equal(thrown.code ?? thrown.error?.code, 'upstream_error', `past the key limit: expected code upstream_error, got ${JSON.stringify(thrown.error)}`);
      assert.match(thrown.message, /Key limit exceeded/, `past the key limit: expected OpenRouter's message, got ${thrown.message}`);
      const metricsAfter = metric(await metricsText(main), 'tollgate_upstream_failures_total{kind="key_limit"}');
      assert.ok(metricsAfter >= 1n && metricsAfter > metricsBefore,
        `tollgate_upstream_failures_total{kind="key_limit"}: expected it to grow from ${metricsBefore}, got ${metricsAfter}`);
      const balanceAfter = await main.balance(user.id);
      assert.equal(balanceAfter.balance_micros, balanceBefore.balance_micros, 'the refused call moved the balance');
      assert.equal(balanceAfter.reserved_micros, 0n, 'the refused call left a hold');
      assert.deepEqual(await main.newTransactions(user.id, lastId), [], 'the refused call wrote transactions');

      // The sync sees the limit is not the tier's and sets it back.
      const r = expectStatus(await api(main, 'POST', '/openrouter/sync-balance', { body: { user_id: user.id } }), 200, 'sync after the limit change');
      assert.equal(BigInt(r.json.limit_micros), limit, `sync did not put the limit right: ${r.text}`);
      const k = await onlyMockKey(main, user.id, 'after the sync');
      assert.equal(usdTextToMicros(k.limitText), limit, `the mock's limit after the sync is ${k.limitText} USD`);
      await chat(main, user);
      assertLedgerOk(await main.checkLedger(), 'after a key-limit refusal');
    });
  });

  // ------------------------------------------------------------ 6
  describe('master key rotation', () => {
    it('POST /master-key/rotate re-encrypts every sealed key; tollgate keys and provisioned keys keep working', async () => {
      const keyFile = join(main.dir, 'master.key');
      const before = readFileSync(keyFile);
      // Sealed blobs: each active provisioned key, and the key-hashing key.
      let active = 0;
      for (const u of mainUsers) if ((await account(main, u.id)).status === 'active') active++;
      assert.ok(active >= 5, `expected several provisioned keys before the rotation, got ${active}`);

      const r = expectStatus(await api(main, 'POST', '/master-key/rotate'), 200, 'POST /master-key/rotate');
      assert.ok(Number.isInteger(r.json.resealed) && r.json.resealed >= active + 1,
        `rotate: expected resealed ≥ ${active} provisioned keys + the key-hashing key, got ${r.text}`);
      assert.ok(typeof r.json.rotated_at === 'string', r.text);

      const afterBytes = readFileSync(keyFile);
      assert.equal(afterBytes.length, 32, `the new key file holds ${afterBytes.length} bytes`);
      assert.ok(!afterBytes.equals(before), 'the key file did not change');
      assert.equal(statSync(keyFile).mode & 0o777, 0o600, `the key file's mode is ${(statSync(keyFile).mode & 0o777).toString(8)}`);
      assert.ok(!existsSync(`${keyFile}.new`), 'master.key.new was left behind');

      // Old tollgate keys, the admin token and the provisioned keys still work.
      const probe = alice;
      expectStatus(await api(main, 'GET', '/openrouter/account', { token: probe.apiKey }), 200, 'a tollgate key after the rotation');
      await chat(main, probe);
      assert.equal(await lastUpstreamKey(main), seenKeys.get(probe.id), 'after the rotation the call did not go out with the same provisioned key');
      // A key made after the rotation is sealed with the new master key.
      const fresh = await createUser(main, 'starter');
      assert.equal(fresh.openrouter?.status, 'active', JSON.stringify(fresh.openrouter));
      await chat(main, fresh);
      const freshKey = await lastUpstreamKey(main);
      assertMaskOf(fresh.openrouter.key_masked, freshKey, 'a key made after the rotation');
      seenKeys.set(fresh.id, freshKey);
      assertLedgerOk(await main.checkLedger(), 'after the rotation');
    });

    it('`tollgate rotate-master-key` is refused while the server holds the database, and changes nothing', async () => {
      const keyFile = join(main.dir, 'master.key');
      const before = readFileSync(keyFile);
      const env = { ...process.env, TOLLGATE_DB: main.dbPath, TOLLGATE_MASTER_KEY_FILE: keyFile };
      delete env.TOLLGATE_CONFIG;
      const out = await new Promise((resolve) => {
        execFile(TOLLGATE_BIN, ['rotate-master-key'], { env, timeout: 30_000 }, (error, stdout, stderr) => {
          resolve({ code: error ? (error.code ?? 'killed') : 0, stdout, stderr });
        });
      });
      captured.stdout += out.stdout;
      captured.stderr += out.stderr;
      assert.notEqual(out.code, 0, `rotate-master-key on a live database: expected a non-zero exit, got 0: ${out.stdout}`);
      assert.match(out.stderr, /lock|in use|running/i, `rotate-master-key: expected a message about the lock, got ${JSON.stringify(out.stderr)}`);
      assert.ok(readFileSync(keyFile).equals(before), 'a refused rotate-master-key changed the key file');
      assert.ok(!existsSync(`${keyFile}.new`), 'a refused rotate-master-key left master.key.new');
      // The server is unaffected.
      const u = alice;
      await chat(main, u);
      assert.equal(await lastUpstreamKey(main), seenKeys.get(u.id), 'after the refused CLI rotation');
    });
  });

  // ------------------------------------------------------------ 7
  describe('the provisioned keys never appear in clear', () => {
    it('the search finds a key planted in any form it looks for (self-test)', () => {
      const planted = `sk-or-v1-${'0123456789abcdef'.repeat(4)}`;
      for (let shift = 0; shift < 3; shift++) {
        const embedded = Buffer.concat([Buffer.from('x'.repeat(shift)), Buffer.from(planted), Buffer.from('tail')]);
        for (const text of [embedded, embedded.toString('hex'), embedded.toString('hex').toUpperCase(), embedded.toString('base64'), embedded.toString('base64url')]) {
          assert.throws(() => assertKeyNotIn(text, planted, 'self-test'), /found a provisioned OpenRouter key/, `the search missed ${text}`);
        }
      }
      assert.doesNotThrow(() => assertKeyNotIn('sk-or-v1-0123…cdef and nothing else', planted, 'self-test (mask)'));
    });

    it('no file of the data directory (database, WAL, shm, key file) holds one', () => {
      assert.ok(seenKeys.size >= 4, `expected several provisioned keys seen upstream, got ${seenKeys.size}`);
      const files = readdirSync(main.dir).filter((f) => statSync(join(main.dir, f)).isFile());
      assert.ok(files.includes('tollgate.db') && files.includes('master.key'), `files in ${main.dir}: ${files.join(', ')}`);
      const contents = files.map((f) => ({ f, data: readFileSync(join(main.dir, f)) }));
      // The search reads real content: a key hash (not a secret) is stored in clear.
      const someHash = mainUsers.find((u) => u.openrouter?.key_hash)?.openrouter.key_hash;
      assert.ok(contents.some(({ data }) => data.includes(Buffer.from(someHash))), `sanity: no file holds the key hash ${someHash}`);
      for (const key of seenKeys.values()) {
        for (const { f, data } of contents) assertKeyNotIn(data, key, `${join(main.dir, f)} (${data.length} bytes)`);
      }
    });

    it('no API answer and none of tollgate\'s output holds one', async () => {
      for (const u of mainUsers.slice(0, 20)) await account(main, u.id);
      await api(main, 'GET', '/users?limit=200');
      let cursor = null;
      for (let page = 0; page < 100; page++) {
        const r = expectStatus(await api(main, 'GET', `/audit?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`), 200, 'GET /audit');
        cursor = r.json.next_cursor;
        if (cursor === null || cursor === undefined) break;
      }
      await metricsText(main);
      assert.ok(answers.length > 100, `expected many answers recorded, got ${answers.length}`);
      for (const key of seenKeys.values()) {
        for (const a of answers) assertKeyNotIn(a.text, key, `the answer to ${a.what}`);
        assertKeyNotIn(captured.stdout, key, 'tollgate\'s stdout');
        assertKeyNotIn(captured.stderr, key, 'tollgate\'s stderr');
        assertKeyNotIn(main.tollgate.logs(), key, 'the harness\'s tail of tollgate\'s output');
      }
    });
  });
});

// ---------------------------------------------------------------- reconciliation

describe('reconciliation of a call billed on an estimate (own stack: generations visible after 1.5 s)', () => {
  let rs;
  before(async () => {
    rs = await startStack({ config: RECONCILE_CONFIG, env: PROVISIONING_ENV, mockArgs: ['--generation-visible-after-ms', '1500'] });
    capture(rs);
  });
  after(async () => {
    await rs?.stop();
  });

  // Long words: the mock counts one token per word, tollgate's o200k
  // estimate many, so the estimate is clearly off and a correction is due.
  const longWord = 'Pneumonoultramicroscopicsilicovolcanoconiosis';
  const messages = [{ role: 'user', content: Array.from({ length: 20 }, () => longWord).join(' ') }];

  // First in this stack: no key exists yet, so no periodic sync can take
  // the armed faults.
  it('a user created while OpenRouter is down becomes active by itself (the maintenance job retries the pending key)', async () => {
    await armFault(rs, '503', 1);
    const user = await createUser(rs, 'starter');
    assert.equal(await pendingFaults(rs), 0, 'POST /users did not make its attempt');
    assert.equal(user.openrouter?.status, 'pending', `POST /users while OpenRouter is down: ${JSON.stringify(user.openrouter)}`);
    assert.match(user.openrouter.last_error ?? '', /\(503\)/, JSON.stringify(user.openrouter));
    const a = await pollUntil(async () => {
      const got = await account(rs, user.id);
      return got.status === 'active' ? got : undefined;
    }, POLL);
    assert.ok(a, `the pending key was not made by the maintenance job within ${POLL.timeoutMs} ms: ${JSON.stringify(await account(rs, user.id))}`);
    assert.equal(a.last_error, null, JSON.stringify(a));
    assert.equal((await onlyMockKey(rs, user.id, 'after the background retry')).hash, a.key_hash, 'the key at the mock is not the one tollgate keeps');
    await chat(rs, user);
    const key = await lastUpstreamKey(rs);
    assertMaskOf(a.key_masked, key, 'the key the maintenance job made');
    seenKeys.set(`r${user.id}`, key);
    assertLedgerOk(await rs.checkLedger(), 'after the background retry');
  });

  it('a stream the upstream broke: billed on an estimate, then corrected once from /generation with the tier\'s markup', async () => {
    const user = await createUser(rs, 'starter');
    const balanceBefore = await rs.balance(user.id);
    const lastId = await rs.lastTransactionId(user.id);
    const client = rs.client(user.apiKey);
    const { data: stream, response } = await client.chat.completions.create(
      { model: OR_PAID, messages, stream: true, max_tokens: 16 },
      { headers: { 'x-mock-fault': 'reset', 'x-mock-fault-after': '3' } },
    ).withResponse();
    const generationId = response.headers.get('x-generation-id');
    assert.match(generationId ?? '', /^gen-/, `expected the upstream's X-Generation-Id on the stream, got ${generationId}`);
    const { contents, usages } = await readStream(stream);  // ends in the reset's error
    assert.equal(usages.at(-1), undefined, 'the broken stream reported usage');
    assert.deepEqual(contents, ['tok0 ', 'tok1 ', 'tok2 '], `expected the 3 chunks before the reset, got ${JSON.stringify(contents)}`);
    const key = await lastUpstreamKey(rs);
    seenKeys.set(`r${user.id}`, key);
    assertMaskOf(user.openrouter.key_masked, key, 'the streamed call went out with the user\'s key');

    // The estimate is billed first (the usage event carries the generation id).
    const charged = await pollUntil(async () => {
      const rows = (await rs.newTransactions(user.id, lastId)).filter((t) => t.type === 'charge');
      const b = await rs.balance(user.id);
      return rows.length > 0 && b.reserved_micros === 0n ? rows : undefined;
    }, POLL);
    assert.ok(charged, `no charge for the broken stream within ${POLL.timeoutMs} ms`);
    const eventId = charged[0].usage_event_id;
    assert.ok(charged.every((t) => t.usage_event_id === eventId), `charge rows of several events: ${JSON.stringify(charged)}`);
    const estimate = -sum(charged.map((t) => t.amount_micros));

    // What OpenRouter finally says the call cost (the mock hides it for 1.5 s).
    const generationText = await pollUntil(async () => {
      const res = await httpFetch(`${rs.mockUrl}/api/v1/generation?id=${encodeURIComponent(generationId)}`, { headers: { authorization: 'Bearer sk-or-v1-anyone' } });
      const text = await res.text();
      return res.status === 200 ? text : undefined;
    }, POLL);
    assert.ok(generationText, `the mock never showed generation ${generationId}`);
    const generation = JSON.parse(generationText).data;
    const costText = /"total_cost":([0-9][0-9.eE+-]*)/.exec(generationText)?.[1];
    assert.ok(costText, `no total_cost in ${generationText}`);
    assert.equal(generation.tokens_completion, 3, `the mock recorded ${generation.tokens_completion} completion tokens for 3 chunks`);
    const expected = expectedCharge({
      tier: 'starter', modelIsFree: false, providerPico: usdToPico(costText),
      totalTokens: generation.tokens_prompt + generation.tokens_completion,
    });
    assert.notEqual(estimate, expected.chargedMicros, `the estimate (${estimate}) happens to equal the real charge: the test proves nothing`);

    const corrections = await pollUntil(async () => {
      const r = expectStatus(await api(rs, 'GET', `/credits/transactions?user_id=${user.id}&type=reconcile&limit=200`), 200, 'transactions type=reconcile');
      const rows = r.json.data.filter((t) => t.usage_event_id === eventId);
      return rows.length > 0 ? rows : undefined;
    }, POLL);
    assert.ok(corrections, `no reconcile transaction for usage event ${eventId} within ${POLL.timeoutMs} ms`);
    assert.ok(corrections.every((t) => t.type === 'reconcile'), JSON.stringify(corrections));
    const correction = sum(corrections.map((t) => t.amount_micros));
    assert.equal(-estimate + correction, -expected.chargedMicros,
      `charge (${-estimate}) + reconcile (${correction}) should be −${expected.chargedMicros} ` +
      `(total_cost ${costText} USD + 10% markup), rows ${JSON.stringify(corrections)}`);
    const balanceAfter = await rs.balance(user.id);
    assert.equal(balanceAfter.balance_micros, balanceBefore.balance_micros - expected.chargedMicros,
      `balance: expected ${balanceBefore.balance_micros} − ${expected.chargedMicros}, got ${balanceAfter.balance_micros}`);

    // The daily totals carry the correction.
    const byModel = expectStatus(await api(rs, 'GET', `/metering/by-model?user_id=${user.id}`), 200, 'metering/by-model');
    const row = byModel.json.data.find((d) => d.model === OR_PAID);
    assert.equal(BigInt(row?.charged_micros ?? -1), expected.chargedMicros, `metering/by-model after the correction: ${byModel.text}`);

    // Exactly once: let the maintenance job run several more times (each
    // periodic sync moves synced_at; the reconciliation runs after it in
    // the same pass), then look again.
    let syncedAt = (await account(rs, user.id)).synced_at;
    for (let seen = 0; seen < 3; seen++) {
      const moved = await pollUntil(async () => {
        const now = (await account(rs, user.id)).synced_at;
        return now !== syncedAt ? now : undefined;
      }, POLL);
      assert.ok(moved, `the periodic sync did not run within ${POLL.timeoutMs} ms`);
      syncedAt = moved;
    }
    const again = expectStatus(await api(rs, 'GET', `/credits/transactions?user_id=${user.id}&type=reconcile&limit=200`), 200, 'transactions type=reconcile');
    assert.deepEqual(again.json.data.filter((t) => t.usage_event_id === eventId), corrections, 'the call was corrected more than once');
    const metrics = await metricsText(rs);
    assert.equal(metric(metrics, 'tollgate_reconciliations_total'), 1n, 'tollgate_reconciliations_total');
    assert.equal(metric(metrics, 'tollgate_reconciled_micros'), -correction, 'tollgate_reconciled_micros');
    assertLedgerOk(await rs.checkLedger(), 'after the reconciliation');
  });

  it('the periodic sync follows the key\'s usage and puts a changed limit back, unasked', async () => {
    const user = await createUser(rs, 'starter');
    await chat(rs, user, { maxTokens: 9 });
    seenKeys.set(`r${user.id}`, await lastUpstreamKey(rs));
    const k = await onlyMockKey(rs, user.id, 'after a call');
    const usage = usdTextToMicros(k.usageText);
    const synced = await pollUntil(async () => {
      const a = await account(rs, user.id);
      return BigInt(a.usage_micros) === usage ? a : undefined;
    }, POLL);
    assert.ok(synced, `GET /openrouter/account never showed usage ${usage} (the mock's ${k.usageText} USD) within ${POLL.timeoutMs} ms`);

    const limit = 2n * await monthlyCredits(rs, 'starter');
    await mockPatchKey(rs, k.hash, { limit: 1 });
    const restored = await pollUntil(async () => {
      const found = await onlyMockKey(rs, user.id, 'while waiting for the sync');
      return usdTextToMicros(found.limitText) === limit ? found : undefined;
    }, POLL);
    assert.ok(restored, `the periodic sync did not set the limit back to ${limit} micros within ${POLL.timeoutMs} ms`);
    assertLedgerOk(await rs.checkLedger(), 'after periodic syncs');
  });

  it('the reconciliation stack leaks no provisioned key either', () => {
    const files = readdirSync(rs.dir).filter((f) => statSync(join(rs.dir, f)).isFile());
    for (const [id, key] of seenKeys) {
      if (!String(id).startsWith('r')) continue;
      for (const f of files) assertKeyNotIn(readFileSync(join(rs.dir, f)), key, join(rs.dir, f));
      for (const a of answers) assertKeyNotIn(a.text, key, `the answer to ${a.what}`);
      assertKeyNotIn(captured.stdout + captured.stderr, key, 'tollgate\'s output');
    }
  });
});
