// Tiers, switches, BYOK and periods through the real server (SPEC §3, §6):
// who may switch where (an upgrade only by an admin or a `billing` service
// token, at once, with the prorated difference of the monthly credits; a
// user's downgrade scheduled for the period end), Idempotency-Key replays
// of an upgrade, BYOK end to end with the OpenAI SDK (the user's own key
// goes upstream, calls are metered at the upstream inference cost, charged
// 0 and admitted at a zero balance; the key is never stored, answered or
// logged in clear), periods/roll, and tiers/compare.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  startStack, httpFetch, ADMIN_TOKEN, assertLedgerOk, sum, jsonOrUndefined, assertNotInClear, readStream,
} from './harness.mjs';
import {
  usdToPico, numberToUsdText, divRoundHalfUp, PICO_PER_MICRO, openrouterPricePico, mockPromptTokens,
} from './money.mjs';

const API = '/api/v1';
const OR_PAID = 'openai/gpt-4o-mini';

// SPEC §3's table (the defaults a fresh database holds).
const SPEC_TIERS = {
  free: { price_micros: 0, monthly_credits_micros: 10_000_000, models: 'free', byok_available: false, rollover_percent: 0 },
  starter: { price_micros: 30_000_000, monthly_credits_micros: 30_000_000, models: 'all', byok_available: false, rollover_percent: 0 },
  professional: { price_micros: 50_000_000, monthly_credits_micros: 50_000_000, models: 'all', byok_available: true, rollover_percent: 25 },
  enterprise: { price_micros: 99_000_000, monthly_credits_micros: 100_000_000, models: 'all', byok_available: true, rollover_percent: 100 },
};

let stack;
// Everything tollgate writes to stdout and stderr from start to stop (the
// harness keeps only a tail).
const captured = { stdout: '', stderr: '' };
// Every admin API answer body this file received (searched for BYOK keys).
const answers = [];
// Every BYOK key this file sent to the server.
const byokKeys = [];

before(async () => {
  stack = await startStack();
  stack.tollgate.child.stdout.on('data', (d) => { captured.stdout += d; });
  stack.tollgate.child.stderr.on('data', (d) => { captured.stderr += d; });
});
after(async () => {
  await stack?.stop();
});

// ---------------------------------------------------------------- helpers

let counter = 0;
const unique = (what) => `${what}-${process.pid}-${Date.now()}-${++counter}`;
const day = (offsetDays) => new Date(Date.now() + offsetDays * 86_400_000).toISOString().slice(0, 10);

// One admin API call with any credential and extra headers; the answer is
// kept for the BYOK key search.
async function api(method, path, { token = ADMIN_TOKEN, body, headers = {} } = {}) {
  const res = await httpFetch(`${stack.url}${API}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = jsonOrUndefined(text);
  answers.push({ what: `${method} ${path}`, text, headers: [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n') });
  return { status: res.status, headers: res.headers, text, json };
}

function expectStatus(r, status, what, { code, param } = {}) {
  assert.equal(r.status, status, `${what}: expected HTTP ${status}${code ? ` ${code}` : ''}, got ${r.status}: ${r.text}`);
  if (code !== undefined) assert.equal(r.json?.error?.code, code, `${what}: expected error.code ${code}, got ${r.text}`);
  if (param !== undefined) assert.equal(r.json?.error?.param, param, `${what}: expected error.param ${param}, got ${r.text}`);
  return r;
}

const switchTier = (body, { token = ADMIN_TOKEN, headers } = {}) => api('POST', '/tiers/switch', { token, body, headers });

async function serviceToken(scopes) {
  const r = expectStatus(await api('POST', '/service-tokens', { body: { name: unique(`tiers ${scopes.join('+')}`), scopes } }), 201,
    `POST /service-tokens ${JSON.stringify(scopes)}`);
  assert.ok(typeof r.json?.token === 'string' && r.json.token.length > 0, `POST /service-tokens: expected {id, token}, got ${r.text}`);
  return r.json.token;
}

async function userRecord(id) {
  return expectStatus(await api('GET', `/users/${id}`), 200, `GET /users/${id}`).json;
}

async function compare(token = ADMIN_TOKEN, query = '') {
  return expectStatus(await api('GET', `/tiers/compare${query}`, { token }), 200, `GET /tiers/compare${query}`).json;
}

let tierTable;
async function tiers() {
  if (!tierTable) tierTable = new Map((await compare()).tiers.map((t) => [t.id, t]));
  return tierTable;
}

// The upgrade's prorated grant bounds: the server's switch instant lies in
// [t0, t1] (Date.now() before and after the call), and the grant is
// floor((new − old) × (end − at) / (end − start)) micros.
function proratedBounds(differenceMicros, subscription, t0, t1) {
  const start = Date.parse(subscription.period_start);
  const end = Date.parse(subscription.period_end);
  assert.ok(Number.isFinite(start) && Number.isFinite(end) && end > start,
    `subscription: expected RFC 3339 period_start < period_end, got ${JSON.stringify(subscription)}`);
  assert.ok(start <= t0 && end > t1,
    `subscription: expected the current period to hold the call's instant [${t0}, ${t1}], got ${subscription.period_start} .. ${subscription.period_end}`);
  const d = BigInt(differenceMicros);
  const len = BigInt(end - start);
  const at = (t) => BigInt(Math.max(0, end - t));
  return { low: (d * at(t1)) / len, high: (d * at(t0)) / len, start, end };
}

function assertSwitchShape(r, what) {
  const j = r.json;
  assert.ok(j && typeof j.subscription === 'object' && j.subscription !== null, `${what}: expected {subscription, …}, got ${r.text}`);
  for (const k of ['tier', 'option', 'period_start', 'period_end', 'pending_tier'])
    assert.ok(k in j.subscription, `${what}: expected subscription.${k}, got ${r.text}`);
  assert.ok(['upgrade', 'downgrade', 'option', 'none'].includes(j.change), `${what}: expected a change kind, got ${r.text}`);
  assert.ok(Number.isInteger(j.granted_micros), `${what}: expected an integer granted_micros, got ${r.text}`);
  assert.ok(j.grant_id === null || Number.isInteger(j.grant_id), `${what}: expected grant_id an integer or null, got ${r.text}`);
}

// An admin upgrade with the proration checked; returns the answer.
async function upgradeChecked(user, fromTier, toTier, { token = ADMIN_TOKEN, headers, what }) {
  const t = await tiers();
  const before = await stack.balance(user.id);
  const lastId = await stack.lastTransactionId(user.id);
  const t0 = Date.now();
  const r = await switchTier({ tier: toTier, user_id: user.id }, { token, headers });
  const t1 = Date.now();
  expectStatus(r, 200, what);
  assertSwitchShape(r, what);
  const j = r.json;
  assert.equal(j.change, 'upgrade', `${what}: expected change "upgrade", got ${r.text}`);
  assert.equal(j.subscription.tier, toTier, `${what}: expected subscription.tier ${toTier} at once, got ${r.text}`);
  assert.equal(j.subscription.pending_tier, null, `${what}: expected no pending tier, got ${r.text}`);
  const difference = t.get(toTier).monthly_credits_micros - t.get(fromTier).monthly_credits_micros;
  const { low, high } = proratedBounds(difference, j.subscription, t0, t1);
  const granted = BigInt(j.granted_micros);
  assert.ok(granted >= low && granted <= high,
    `${what}: expected granted_micros = floor(${difference} × remaining / period) in [${low}, ${high}] ` +
    `(period ${j.subscription.period_start} .. ${j.subscription.period_end}, call between ${new Date(t0).toISOString()} and ${new Date(t1).toISOString()}), got ${granted}`);
  assert.ok(Number.isInteger(j.grant_id), `${what}: expected a grant_id for the prorated grant, got ${r.text}`);
  const after = await stack.balance(user.id);
  assert.equal(after.balance_micros, before.balance_micros + granted,
    `${what}: expected the balance to grow by exactly granted_micros ${granted}: ${before.balance_micros} → ${before.balance_micros + granted}, got ${after.balance_micros}`);
  const rows = await stack.newTransactions(user.id, lastId);
  assert.equal(rows.length, 1, `${what}: expected exactly one new transaction (the prorated grant), got ${JSON.stringify(rows)}`);
  assert.deepEqual([rows[0].type, rows[0].kind, BigInt(rows[0].amount_micros), rows[0].grant_id],
    ['grant', 'allocated', granted, j.grant_id],
    `${what}: expected a grant transaction (kind allocated, ${granted} micros, grant ${j.grant_id}), got ${JSON.stringify(rows[0])}`);
  assert.equal((await userRecord(user.id)).tier, toTier, `${what}: GET /users/${user.id} still shows the old tier`);
  return r;
}

// Provider cost of a chat call at fixture prices (no cache, no reasoning).
function openrouterCostPico(model, promptTokens, completionTokens) {
  return BigInt(promptTokens) * openrouterPricePico(model, 'prompt') +
    BigInt(completionTokens) * openrouterPricePico(model, 'completion') +
    openrouterPricePico(model, 'request');
}

// The BYOK usage the client saw → upstream_inference_cost in pico, checked
// against the fixture prices and OpenRouter's 5% BYOK fee in usage.cost.
function byokUsagePico(usage, promptTokens, completionTokens, what) {
  assert.ok(usage && typeof usage === 'object', `${what}: expected usage in the answer, got ${JSON.stringify(usage)}`);
  assert.equal(usage.prompt_tokens, promptTokens, `${what}: usage.prompt_tokens ${JSON.stringify(usage)}`);
  assert.equal(usage.completion_tokens, completionTokens, `${what}: usage.completion_tokens ${JSON.stringify(usage)}`);
  assert.equal(usage.is_byok, true, `${what}: expected usage.is_byok true (the user's own key went upstream), got ${JSON.stringify(usage)}`);
  const upstream = usage.cost_details?.upstream_inference_cost;
  assert.equal(typeof upstream, 'number', `${what}: expected usage.cost_details.upstream_inference_cost, got ${JSON.stringify(usage)}`);
  const pico = usdToPico(numberToUsdText(upstream));
  const expected = openrouterCostPico(OR_PAID, promptTokens, completionTokens);
  assert.equal(pico, expected, `${what}: upstream_inference_cost ${upstream} is ${pico} pico, expected ${expected} (tokens × fixture prices)`);
  assert.equal(usdToPico(numberToUsdText(usage.cost)), expected / 20n,
    `${what}: expected usage.cost to be the 5% BYOK fee ${expected / 20n} pico, got ${usage.cost}`);
  return pico;
}

async function byModelRow(userId, model) {
  const r = expectStatus(await api('GET', `/metering/by-model?user_id=${userId}&from=${day(-1)}&to=${day(1)}`), 200, 'GET /metering/by-model');
  assert.ok(Array.isArray(r.json?.data), `by-model: expected {data:[…]}, got ${r.text}`);
  return { row: r.json.data.find((x) => x.model === model), text: r.text };
}

// Deducts everything available (admin), leaving balance 0.
async function drain(user) {
  const b = await stack.balance(user.id);
  assert.ok(b.available_micros > 0n, `drain: nothing available for user ${user.id}`);
  const r = expectStatus(await api('POST', '/credits/deduct', {
    headers: { 'Idempotency-Key': unique('drain') },
    body: { user_id: user.id, amount_micros: Number(b.available_micros), reason: 'e2e: spend everything', event_id: unique('drain') },
  }), 201, 'POST /credits/deduct (everything available)');
  assert.equal(r.json.balance_micros, 0, `drain: expected balance 0 after deducting ${b.available_micros}, got ${r.text}`);
  const after = await stack.balance(user.id);
  assert.equal(after.available_micros, 0n, `drain: expected available 0, got ${after.available_micros}`);
}

function assertKeyNotIn(haystack, key, where) {
  assertNotInClear(haystack, key, where, { name: 'the BYOK key', prefix: 'sk-or-byok-' });
}

const messages = [
  { role: 'system', content: 'You answer in few words.' },
  { role: 'user', content: 'Count the tokens of this polite request.' },
];
const promptTokens = mockPromptTokens(messages);

// ---------------------------------------------------------------- 1. switch rules

describe('tiers/switch: who may switch where (SPEC §3)', () => {
  it('a user asking for an upgrade gets 403 forbidden naming who can make it; nothing changes', async () => {
    const user = await stack.createUser({ tier: 'free' });
    const before = await stack.balance(user.id);
    const lastId = await stack.lastTransactionId(user.id);
    const r = await switchTier({ tier: 'starter' }, { token: user.apiKey });
    expectStatus(r, 403, 'user free → starter', { code: 'forbidden' });
    const message = String(r.json?.error?.message ?? '');
    assert.match(message, /admin/i, `403 message: expected it to name an admin, got ${JSON.stringify(message)}`);
    assert.match(message, /billing/i, `403 message: expected it to name a billing service token, got ${JSON.stringify(message)}`);
    assert.equal((await userRecord(user.id)).tier, 'free', 'a refused upgrade changed the tier');
    assert.equal((await compare(user.apiKey)).current?.tier, 'free', 'tiers/compare: a refused upgrade changed the current tier');
    assert.equal((await stack.balance(user.id)).balance_micros, before.balance_micros, 'a refused upgrade moved money');
    assert.deepEqual(await stack.newTransactions(user.id, lastId), [], 'a refused upgrade wrote transactions');
    // Same for an admin naming a user through the user's own key: the body's
    // user_id does not lend the user an admin's rights.
    expectStatus(await switchTier({ tier: 'professional', user_id: user.id }, { token: user.apiKey }), 403,
      'user free → professional naming itself', { code: 'forbidden' });
  });

  it('an admin upgrade (free → starter) is at once: change "upgrade", the prorated credits granted, the balance grows by exactly that', async () => {
    const user = await stack.createUser({ tier: 'free' });
    await upgradeChecked(user, 'free', 'starter', { what: 'admin free → starter' });
    const current = (await compare(user.apiKey)).current;
    assert.equal(current?.tier, 'starter', `tiers/compare after the upgrade: expected current.tier starter, got ${JSON.stringify(current)}`);
  });

  it('a service token with scope billing may upgrade; one with only meter gets 403', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const meter = await serviceToken(['meter']);
    const before = await stack.balance(user.id);
    expectStatus(await switchTier({ tier: 'professional', user_id: user.id }, { token: meter }), 403,
      'meter token starter → professional', { code: 'forbidden' });
    assert.equal((await userRecord(user.id)).tier, 'starter', 'a meter token\'s refused upgrade changed the tier');
    assert.equal((await stack.balance(user.id)).balance_micros, before.balance_micros, 'a meter token\'s refused upgrade moved money');
    const billing = await serviceToken(['billing']);
    await upgradeChecked(user, 'starter', 'professional', { token: billing, what: 'billing token starter → professional' });
  });

  it('a user downgrade is scheduled for the period end: change "downgrade", pending_tier set, tier unchanged, no money', async () => {
    const user = await stack.createUser({ tier: 'professional' });
    const before = await stack.balance(user.id);
    const lastId = await stack.lastTransactionId(user.id);
    const r = await switchTier({ tier: 'starter' }, { token: user.apiKey });
    expectStatus(r, 200, 'user professional → starter');
    assertSwitchShape(r, 'user professional → starter');
    const j = r.json;
    assert.equal(j.change, 'downgrade', `expected change "downgrade", got ${r.text}`);
    assert.equal(j.subscription.tier, 'professional', `expected the tier unchanged until the period end, got ${r.text}`);
    assert.equal(j.subscription.pending_tier, 'starter', `expected pending_tier starter, got ${r.text}`);
    assert.equal(j.granted_micros, 0, `a downgrade grants nothing, got ${r.text}`);
    assert.equal(j.grant_id, null, `a downgrade grants nothing, got ${r.text}`);
    assert.equal((await userRecord(user.id)).tier, 'professional', 'GET /users: the downgrade took effect at once');
    const current = (await compare(user.apiKey)).current;
    assert.equal(current?.tier, 'professional', `tiers/compare: expected current.tier professional until the period end, got ${JSON.stringify(current)}`);
    assert.equal(current?.period_end, j.subscription.period_end, `tiers/compare: current.period_end vs the subscription's, got ${JSON.stringify(current)}`);
    assert.equal((await stack.balance(user.id)).balance_micros, before.balance_micros, 'a downgrade moved money');
    assert.deepEqual(await stack.newTransactions(user.id, lastId), [], 'a downgrade wrote transactions');
  });

  it('option byok on starter is 400 with param option', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const key = `sk-or-byok-${randomBytes(24).toString('hex')}`;
    byokKeys.push(key);
    expectStatus(await switchTier({ tier: 'starter', option: 'byok', byok_key: key }, { token: user.apiKey }), 400,
      'user starter option byok', { param: 'option' });
    expectStatus(await switchTier({ tier: 'starter', option: 'byok', byok_key: key, user_id: user.id }), 400,
      'admin starter option byok', { param: 'option' });
    const current = (await compare(user.apiKey)).current;
    assert.deepEqual([current?.tier, current?.option], ['starter', 'credits'], `after the refusals: ${JSON.stringify(current)}`);
  });

  it('an Idempotency-Key replay of an admin upgrade answers the same grant_id and moves money once', async () => {
    const user = await stack.createUser({ tier: 'free' });
    const key = unique('upgrade');
    const first = await upgradeChecked(user, 'free', 'enterprise', { headers: { 'Idempotency-Key': key }, what: 'admin free → enterprise (first)' });
    const afterFirst = await stack.balance(user.id);
    const lastId = await stack.lastTransactionId(user.id);
    const replay = await switchTier({ tier: 'enterprise', user_id: user.id }, { headers: { 'Idempotency-Key': key } });
    expectStatus(replay, 200, 'admin free → enterprise (replay)');
    assertSwitchShape(replay, 'replay');
    assert.deepEqual([replay.json.change, replay.json.grant_id, replay.json.granted_micros],
      [first.json.change, first.json.grant_id, first.json.granted_micros],
      `replay: expected the first answer's change, grant_id and granted_micros, got ${replay.text} (first: ${first.text})`);
    assert.equal(replay.json.subscription.tier, 'enterprise', `replay: ${replay.text}`);
    assert.equal((await stack.balance(user.id)).balance_micros, afterFirst.balance_micros, 'the replay moved money again');
    assert.deepEqual(await stack.newTransactions(user.id, lastId), [], 'the replay wrote transactions');
    const grants = (await stack.transactions(user.id)).filter((t) => t.type === 'grant' && t.grant_id === first.json.grant_id);
    assert.equal(grants.length, 1, `expected one grant transaction for grant ${first.json.grant_id}, got ${JSON.stringify(grants)}`);
    // The same key with another body is a conflict, and moves nothing.
    expectStatus(await switchTier({ tier: 'professional', user_id: user.id }, { headers: { 'Idempotency-Key': key } }), 409,
      'same Idempotency-Key, other tier', { code: 'idempotency_conflict' });
    assert.equal((await stack.balance(user.id)).balance_micros, afterFirst.balance_micros, 'the conflicting replay moved money');
    assert.equal((await userRecord(user.id)).tier, 'enterprise', 'the conflicting replay changed the tier');
  });

  it('check-ledger passes after the switches', async () => {
    assertLedgerOk(await stack.checkLedger(), 'after the tier switches');
  });
});

// ---------------------------------------------------------------- 2. BYOK

describe('BYOK end to end (professional, OpenAI SDK)', () => {
  let user;
  let control; // professional on credits: the zero-balance contrast
  let byokKey;
  const upstreamPicos = []; // upstream_inference_cost of every BYOK call, in pico
  const completions = []; // completion tokens of every BYOK call
  let subscriptionAfterSwitch;

  before(async () => {
    user = await stack.createUser({ tier: 'professional' });
    control = await stack.createUser({ tier: 'professional' });
    byokKey = `sk-or-byok-${randomBytes(24).toString('hex')}`;
    byokKeys.push(byokKey);
  });

  it('option byok needs a key: 400 byok_key_required (param byok_key) without one, 200 change "option" with one', async () => {
    const without = await switchTier({ tier: 'professional', option: 'byok' }, { token: user.apiKey });
    expectStatus(without, 400, 'byok without byok_key', { code: 'byok_key_required', param: 'byok_key' });
    assert.equal((await compare(user.apiKey)).current?.option, 'credits', 'a refused BYOK switch changed the option');

    const r = await switchTier({ tier: 'professional', option: 'byok', byok_key: byokKey }, { token: user.apiKey });
    expectStatus(r, 200, 'byok with byok_key');
    assertSwitchShape(r, 'byok with byok_key');
    assert.equal(r.json.change, 'option', `expected change "option", got ${r.text}`);
    assert.deepEqual([r.json.subscription.tier, r.json.subscription.option, r.json.subscription.pending_tier],
      ['professional', 'byok', null], `expected professional / byok / no pending tier, got ${r.text}`);
    assert.equal(r.json.granted_micros, 0, `an option change grants nothing, got ${r.text}`);
    assertKeyNotIn(r.text, byokKey, 'the tiers/switch answer');
    subscriptionAfterSwitch = r.json.subscription;
  });

  it('non-stream chat: answers normally with the user\'s key upstream, x-tollgate-charged-micros 0, balance unchanged', async () => {
    const before = await stack.balance(user.id);
    const lastId = await stack.lastTransactionId(user.id);
    const completionTokens = 9;
    const { data, response } = await stack.client(user.apiKey).chat.completions
      .create({ model: OR_PAID, messages, max_tokens: completionTokens })
      .withResponse();
    const expectedText = Array.from({ length: completionTokens }, (_, i) => `tok${i} `).join('');
    assert.equal(data.choices?.[0]?.message?.content, expectedText, `expected the mock's words, got ${JSON.stringify(data.choices)}`);
    upstreamPicos.push(byokUsagePico(data.usage, promptTokens, completionTokens, 'BYOK non-stream'));
    completions.push(completionTokens);
    assert.equal(response.headers.get('x-tollgate-charged-micros'), '0',
      `expected x-tollgate-charged-micros: 0 on a BYOK call, got ${response.headers.get('x-tollgate-charged-micros')}`);
    assert.equal(response.headers.get('x-tollgate-balance-micros'), String(before.balance_micros),
      `expected x-tollgate-balance-micros ${before.balance_micros} (unchanged), got ${response.headers.get('x-tollgate-balance-micros')}`);
    const last = await stack.mockLastRequest();
    assert.equal(last.headers.authorization, `Bearer ${byokKey}`,
      'upstream Authorization: expected the user\'s own BYOK key, not the platform key');
    const after = await stack.balance(user.id);
    assert.equal(after.balance_micros, before.balance_micros, `BYOK non-stream: balance moved from ${before.balance_micros} to ${after.balance_micros}`);
    assert.equal(after.reserved_micros, 0n, `BYOK non-stream: expected no hold, got reserved ${after.reserved_micros}`);
    assert.deepEqual(await stack.newTransactions(user.id, lastId), [], 'BYOK non-stream: expected no transaction');
  });

  it('streamed chat: content and usage reach the client; nothing charged', async () => {
    const before = await stack.balance(user.id);
    const lastId = await stack.lastTransactionId(user.id);
    const completionTokens = 5;
    const stream = await stack.client(user.apiKey).chat.completions.create(
      { model: OR_PAID, messages, stream: true, max_tokens: completionTokens },
      { headers: { 'x-mock-delay-ms': '5' } },
    );
    const { contents, usages, thrown } = await readStream(stream);
    if (thrown) throw thrown;
    assert.deepEqual(contents, Array.from({ length: completionTokens }, (_, i) => `tok${i} `),
      `expected one content delta per token, got ${JSON.stringify(contents)}`);
    assert.equal(usages.length, 1, `expected one usage chunk, got ${JSON.stringify(usages)}`);
    upstreamPicos.push(byokUsagePico(usages[0], promptTokens, completionTokens, 'BYOK stream'));
    completions.push(completionTokens);
    const last = await stack.mockLastRequest();
    assert.equal(last.headers.authorization, `Bearer ${byokKey}`, 'stream: upstream Authorization is not the user\'s BYOK key');
    const after = await stack.balance(user.id);
    assert.equal(after.balance_micros, before.balance_micros, `BYOK stream: balance moved from ${before.balance_micros} to ${after.balance_micros}`);
    assert.equal(after.reserved_micros, 0n, `BYOK stream: expected no hold, got reserved ${after.reserved_micros}`);
    assert.deepEqual(await stack.newTransactions(user.id, lastId), [], 'BYOK stream: expected no transaction');
  });

  it('metering/by-model shows the calls at their upstream inference cost, charged 0', async () => {
    const { row, text } = await byModelRow(user.id, OR_PAID);
    assert.ok(row, `by-model: expected a row for ${OR_PAID}, got ${text}`);
    const expectedCost = sum(upstreamPicos.map((p) => divRoundHalfUp(p, PICO_PER_MICRO)));
    assert.deepEqual(
      { requests: row.requests, prompt_tokens: row.prompt_tokens, completion_tokens: row.completion_tokens,
        provider_cost_micros: BigInt(row.provider_cost_micros), markup_micros: row.markup_micros, charged_micros: row.charged_micros },
      { requests: upstreamPicos.length, prompt_tokens: promptTokens * upstreamPicos.length, completion_tokens: completions.reduce((a, b) => a + b, 0),
        provider_cost_micros: expectedCost, markup_micros: 0, charged_micros: 0 },
      `by-model row: expected provider_cost_micros = Σ round_half_up(upstream_inference_cost) = ${expectedCost} ` +
      `(${upstreamPicos.join(', ')} pico), markup and charge 0; got ${JSON.stringify(row)}`);
  });

  it('with the balance driven to 0 the BYOK user is still admitted (a credits user is refused 402)', async () => {
    await drain(control);
    const refused = await stack.client(control.apiKey).chat.completions
      .create({ model: OR_PAID, messages, max_tokens: 4 })
      .catch((e) => e);
    assert.equal(refused?.status, 402, `contrast: a professional credits user at balance 0 should get 402, got ${refused?.status ?? 'an answer'} ${refused?.message ?? ''}`);

    await drain(user);
    const lastId = await stack.lastTransactionId(user.id);
    const completionTokens = 4;
    let answer;
    try {
      answer = await stack.client(user.apiKey).chat.completions
        .create({ model: OR_PAID, messages, max_tokens: completionTokens })
        .withResponse();
    } catch (e) {
      assert.fail(`BYOK at balance 0: expected an answer (no 402), got ${e.status} ${e.message}`);
    }
    const { data, response } = answer;
    upstreamPicos.push(byokUsagePico(data.usage, promptTokens, completionTokens, 'BYOK at balance 0'));
    completions.push(completionTokens);
    assert.equal(response.headers.get('x-tollgate-charged-micros'), '0', 'BYOK at balance 0: expected x-tollgate-charged-micros 0');
    assert.equal(response.headers.get('x-tollgate-balance-micros'), '0', 'BYOK at balance 0: expected x-tollgate-balance-micros 0');
    const after = await stack.balance(user.id);
    assert.deepEqual([after.balance_micros, after.reserved_micros, after.debt_micros], [0n, 0n, 0n],
      `BYOK at balance 0: expected balance, holds and debt all 0, got ${JSON.stringify(after, (k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
    assert.deepEqual(await stack.newTransactions(user.id, lastId), [], 'BYOK at balance 0: expected no transaction');
    const { row, text } = await byModelRow(user.id, OR_PAID);
    assert.equal(row?.requests, upstreamPicos.length, `by-model after the zero-balance call: ${text}`);
    assert.equal(BigInt(row.provider_cost_micros), sum(upstreamPicos.map((p) => divRoundHalfUp(p, PICO_PER_MICRO))), `by-model: ${text}`);
    assert.equal(row.charged_micros, 0, `by-model: ${text}`);
  });

  it('a refused upgrade carrying a new byok_key leaves the stored key as it was', async () => {
    // A user may not upgrade professional → enterprise (403): the request
    // must change nothing, the key it carries included.
    const other = `sk-or-byok-${randomBytes(24).toString('hex')}`;
    byokKeys.push(other);
    expectStatus(await switchTier({ tier: 'enterprise', option: 'byok', byok_key: other }, { token: user.apiKey }), 403,
      'user professional → enterprise with a new byok_key', { code: 'forbidden' });
    // A new tollgate key of the user is not in tollgate's key cache, so the
    // call reads the BYOK key from the database (the old key's cached
    // caller would still carry the key opened before the request).
    const fresh = expectStatus(await api('POST', '/keys', { token: user.apiKey, body: { name: 'after the refused upgrade' } }), 201, 'POST /keys');
    const freshKey = fresh.json?.key?.secret ?? fresh.json?.api_key ?? fresh.json?.secret;
    assert.ok(typeof freshKey === 'string' && freshKey.startsWith('tg_'), `POST /keys: expected the new secret, got ${fresh.text}`);
    const d = await stack.client(freshKey).chat.completions.create({ model: OR_PAID, messages, max_tokens: 2 });
    upstreamPicos.push(byokUsagePico(d.usage, promptTokens, 2, 'BYOK after the refused upgrade'));
    completions.push(2);
    const last = await stack.mockLastRequest();
    assert.equal(last.headers.authorization, `Bearer ${byokKey}`,
      'after POST /tiers/switch {tier: enterprise, option: byok, byok_key: <new>} by the user was refused 403, ' +
      'the next call went upstream with the key of the refused request instead of the stored one');
  });

  it('the key is not stored in clear: database, WAL and every file of the data directory', async () => {
    // The search finds every form it looks for (a self-test of the matcher).
    for (let shift = 0; shift < 3; shift++) {
      const embedded = Buffer.concat([Buffer.from('x'.repeat(shift)), Buffer.from(byokKey), Buffer.from('tail')]);
      for (const text of [embedded, embedded.toString('hex'), embedded.toString('hex').toUpperCase(), embedded.toString('base64'), embedded.toString('base64url')]) {
        assert.throws(() => assertKeyNotIn(text, byokKey, 'self-test'), /found the BYOK key/, `matcher self-test missed ${text}`);
      }
    }
    const files = readdirSync(stack.dir).filter((f) => statSync(join(stack.dir, f)).isFile());
    assert.ok(files.includes('tollgate.db'), `expected tollgate.db in ${stack.dir}, got ${files.join(', ')}`);
    const contents = files.map((f) => ({ f, data: readFileSync(join(stack.dir, f)) }));
    // The scan reads real content: the user's e-mail is stored in clear somewhere.
    const dbAndWal = contents.filter(({ f }) => f === 'tollgate.db' || f === 'tollgate.db-wal');
    assert.ok(dbAndWal.some(({ data }) => data.includes(Buffer.from(user.email))),
      `sanity: expected the user's e-mail in tollgate.db or its WAL (files: ${files.join(', ')})`);
    for (const key of byokKeys) {
      for (const { f, data } of contents) assertKeyNotIn(data, key, `${join(stack.dir, f)} (${data.length} bytes)`);
    }
  });

  it('the key appears in no API answer and in none of tollgate\'s output', async () => {
    // A fresh look at the answers that describe this user.
    await api('GET', `/users/${user.id}`);
    await api('GET', `/users?limit=200`);
    await api('GET', `/keys?user_id=${user.id}`);
    await api('GET', '/keys', { token: user.apiKey });
    await api('GET', `/tiers/compare?user_id=${user.id}`);
    await api('GET', '/tiers/compare', { token: user.apiKey });
    await api('GET', `/openrouter/account?user_id=${user.id}`);
    await api('GET', `/credits/transactions?user_id=${user.id}&limit=200`);
    let cursor = null;
    for (let page = 0; page < 100; page++) {
      const r = expectStatus(await api('GET', `/audit?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`), 200, 'GET /audit');
      cursor = r.json.next_cursor;
      if (cursor === null || cursor === undefined) break;
    }
    const metrics = await httpFetch(`${stack.url}/metrics`);
    answers.push({ what: 'GET /metrics', text: await metrics.text(), headers: '' });
    for (const key of byokKeys) {
      for (const a of answers) {
        assertKeyNotIn(a.text, key, `the answer to ${a.what}`);
        assertKeyNotIn(a.headers, key, `the headers of the answer to ${a.what}`);
      }
      assertKeyNotIn(captured.stdout, key, 'tollgate\'s stdout');
      assertKeyNotIn(captured.stderr, key, 'tollgate\'s stderr');
      assertKeyNotIn(stack.tollgate.logs(), key, 'tollgate\'s logs (harness tail)');
    }
  });

  it('tiers/compare: current shows the switch (professional, byok, the tier price)', async () => {
    const t = await tiers();
    for (const [label, doc] of [['as the user', await compare(user.apiKey)], ['as admin with user_id', await compare(ADMIN_TOKEN, `?user_id=${user.id}`)]]) {
      const c = doc.current;
      assert.ok(c && typeof c === 'object', `tiers/compare ${label}: expected current, got ${JSON.stringify(doc.current)}`);
      assert.deepEqual(
        { tier: c.tier, option: c.option, effective_price_micros: c.effective_price_micros, discount_percent: c.discount_percent, period_end: c.period_end },
        { tier: 'professional', option: 'byok', effective_price_micros: t.get('professional').price_micros, discount_percent: 0, period_end: subscriptionAfterSwitch.period_end },
        `tiers/compare ${label}: ${JSON.stringify(c)}`);
    }
  });

  it('check-ledger passes after the BYOK calls', async () => {
    assertLedgerOk(await stack.checkLedger(), 'after the BYOK calls');
  });
});

// ---------------------------------------------------------------- 3. periods/roll

describe('periods/roll', () => {
  it('admin: 200 {rolled: 0, at} when no boundary has passed; nothing moves', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const before = await stack.balance(user.id);
    const lastId = await stack.lastTransactionId(user.id);
    const t0 = Date.now();
    const r = expectStatus(await api('POST', '/periods/roll', { body: {} }), 200, 'POST /periods/roll (admin)');
    const t1 = Date.now();
    assert.deepEqual(Object.keys(r.json ?? {}).sort(), ['at', 'rolled'], `expected exactly {rolled, at}, got ${r.text}`);
    assert.equal(r.json.rolled, 0, `expected rolled 0 (every period began today), got ${r.text}`);
    assert.match(r.json.at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, `expected "at" as RFC 3339 UTC, got ${r.text}`);
    const at = Date.parse(r.json.at);
    assert.ok(at >= t0 - 1000 && at <= t1 + 1000, `expected "at" ≈ now (${new Date(t0).toISOString()} .. ${new Date(t1).toISOString()}), got ${r.json.at}`);
    assert.equal((await stack.balance(user.id)).balance_micros, before.balance_micros, 'a roll with nothing due moved money');
    assert.deepEqual(await stack.newTransactions(user.id, lastId), [], 'a roll with nothing due wrote transactions');
    // A second roll at once finds nothing either.
    assert.equal(expectStatus(await api('POST', '/periods/roll'), 200, 'POST /periods/roll (again, no body)').json.rolled, 0);
  });

  it('a user, a billing token and a meter token get 403 forbidden', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    for (const [label, token] of [['user', user.apiKey], ['billing token', await serviceToken(['billing'])], ['meter token', await serviceToken(['meter'])]]) {
      expectStatus(await api('POST', '/periods/roll', { token, body: {} }), 403, `POST /periods/roll as ${label}`, { code: 'forbidden' });
    }
  });
});

// ---------------------------------------------------------------- 4. tiers/compare

describe('tiers/compare', () => {
  it('lists SPEC §3\'s tiers; an admin without user_id has current null', async () => {
    const doc = await compare();
    assert.equal(doc.current, null, `admin without user_id: expected current null, got ${JSON.stringify(doc.current)}`);
    const byId = Object.fromEntries(doc.tiers.map((t) => [t.id, t]));
    assert.deepEqual(Object.keys(byId).sort(), Object.keys(SPEC_TIERS).sort(), `tiers: ${JSON.stringify(doc.tiers)}`);
    for (const [id, want] of Object.entries(SPEC_TIERS)) {
      for (const [k, v] of Object.entries(want)) assert.equal(byId[id][k], v, `tier ${id}.${k}: expected ${v}, got ${JSON.stringify(byId[id])}`);
    }
    assert.deepEqual(
      Object.fromEntries(doc.tiers.map((t) => [t.id, [t.markup_paid_bps, t.markup_free_micros_per_token]])),
      { free: [0, 1], starter: [1000, 0], professional: [500, 0], enterprise: [0, 0] },
      `markups: ${JSON.stringify(doc.tiers)}`);
    const service = await compare(await serviceToken(['billing']));
    assert.equal(service.current, null, `a service token without user_id: expected current null, got ${JSON.stringify(service.current)}`);
  });

  it('current follows a switch: the user sees its new tier, option and the tier\'s price', async () => {
    const user = await stack.createUser({ tier: 'free' });
    const t = await tiers();
    let c = (await compare(user.apiKey)).current;
    assert.deepEqual([c?.tier, c?.option, c?.effective_price_micros], ['free', 'credits', 0], `before: ${JSON.stringify(c)}`);
    const r = await upgradeChecked(user, 'free', 'professional', { what: 'admin free → professional' });
    for (const doc of [await compare(user.apiKey), await compare(ADMIN_TOKEN, `?user_id=${user.id}`)]) {
      c = doc.current;
      assert.deepEqual(
        { tier: c?.tier, option: c?.option, effective_price_micros: c?.effective_price_micros, discount_percent: c?.discount_percent, period_end: c?.period_end },
        { tier: 'professional', option: 'credits', effective_price_micros: t.get('professional').price_micros, discount_percent: 0, period_end: r.json.subscription.period_end },
        `tiers/compare after the upgrade: ${JSON.stringify(c)}`);
    }
  });
});

describe('ledger', () => {
  it('check-ledger passes at the end', async () => {
    assertLedgerOk(await stack.checkLedger(), 'after the tier scenarios');
  });
});
