// Coupons through the real server (SPEC §3, §6): each kind's effect on the
// balance, the grants and tiers/compare; the refusal reasons and their
// order; validate changing nothing; per-user limits; codes typed in any
// case; Idempotency-Key replays; 500 users racing for a code with
// max_uses 50; deactivation. Every answer is validated against
// proxy/openapi.json (the source tree's document, ajv), and every scenario
// that moves money ends with check-ledger.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  startStack, httpFetch, ADMIN_TOKEN, assertLedgerOk, documentChecker, jsonOrUndefined,
} from './harness.mjs';

const API = '/api/v1';
const DOCUMENT = JSON.parse(readFileSync(new URL('../../proxy/openapi.json', import.meta.url), 'utf8'));
const DAY_MS = 86_400_000;
// SPEC §3's defaults.
const PRICE = { free: 0, starter: 30_000_000, professional: 50_000_000, enterprise: 99_000_000 };
const CREDITS = { free: 10_000_000, starter: 30_000_000, professional: 50_000_000, enterprise: 100_000_000 };
const REFUSALS = ['not_found', 'inactive', 'expired', 'exhausted', 'already_redeemed', 'not_applicable'];

let stack;
let checkAnswer;

before(async () => {
  checkAnswer = documentChecker(DOCUMENT);
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

// ---------------------------------------------------------------- helpers

// One admin API call, its answer checked against the document.
async function api(method, path, { token = ADMIN_TOKEN, body, headers = {} } = {}) {
  const h = { authorization: `Bearer ${token}`, ...headers };
  if (body !== undefined) h['content-type'] = 'application/json';
  const res = await httpFetch(`${stack.url}${API}${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const json = jsonOrUndefined(text);
  const r = { method, path, status: res.status, headers: res.headers, text, json };
  checkAnswer(method, path, r, `${method} ${path}${body === undefined ? '' : ` ${JSON.stringify(body)}`}`);
  return r;
}

function expectStatus(r, status, { code, param, what } = {}) {
  const label = what ?? `${r.method} ${r.path}`;
  assert.equal(r.status, status, `${label}: expected ${status}${code ? ` ${code}` : ''}${param ? ` (param ${param})` : ''}, got ${r.status}: ${r.text.slice(0, 500)}`);
  if (code !== undefined) assert.equal(r.json?.error?.code, code, `${label}: expected error.code ${code}, got ${r.text.slice(0, 500)}`);
  if (param !== undefined) assert.equal(r.json?.error?.param, param, `${label}: expected error.param ${JSON.stringify(param)}, got ${r.text.slice(0, 500)}`);
  return r;
}

let counter = 0;
const unique = (what) => `${what}-${process.pid}-${Date.now()}-${++counter}`;

async function newUser(tier) {
  const r = expectStatus(await api('POST', '/users', { body: { email: `${unique(`coupons-${tier}`)}@example.com`, tier } }), 201);
  return { id: r.json.user.id, apiKey: r.json.api_key, tier };
}

async function createCoupon(body) {
  const r = expectStatus(await api('POST', '/coupons/create', { body }), 201, { what: `create ${JSON.stringify(body)}` });
  assert.equal(r.json.coupon.code, body.code.toUpperCase(), `create ${body.code}: the code is answered upper case: ${r.text}`);
  assert.equal(r.json.coupon.uses, 0);
  assert.equal(r.json.coupon.active, true);
  return r.json.coupon;
}

// A redemption as the user (their own key), or as the admin naming them.
function redeem(user, code, { asAdmin = false, key } = {}) {
  const headers = key === undefined ? {} : { 'Idempotency-Key': key };
  return asAdmin
    ? api('POST', '/coupons/redeem', { body: { code, user_id: user.id }, headers })
    : api('POST', '/coupons/redeem', { token: user.apiKey, body: { code }, headers });
}

async function redeemOk(user, code, options) {
  return expectStatus(await redeem(user, code, options), 200, { what: `redeem ${code} for user ${user.id} (${user.tier})` }).json;
}

async function refused(user, code, reason, options) {
  assert.ok(REFUSALS.includes(reason));
  return expectStatus(await redeem(user, code, options), 409, { code: reason, param: 'code', what: `redeem ${code} for user ${user.id} (${user.tier})` });
}

async function validate(user, code, { asAdmin = false } = {}) {
  const q = `code=${encodeURIComponent(code)}`;
  const r = asAdmin
    ? await api('GET', `/coupons/validate?${q}&user_id=${user.id}`)
    : await api('GET', `/coupons/validate?${q}`, { token: user.apiKey });
  return expectStatus(r, 200, { what: `validate ${code} for user ${user.id}` }).json;
}

async function expectValidation(user, code, reason) {
  const v = await validate(user, code);
  assert.equal(v.valid, reason === null, `validate ${code} for user ${user.id}: expected valid ${reason === null}, got ${JSON.stringify(v)}`);
  assert.equal(v.reason, reason, `validate ${code} for user ${user.id}: expected reason ${reason}, got ${JSON.stringify(v)}`);
  return v;
}

async function balanceOf(user) {
  return expectStatus(await api('GET', `/credits/balance?user_id=${user.id}`), 200).json;
}

async function transactionsOf(user) {
  const all = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const r = expectStatus(await api('GET', `/credits/transactions?user_id=${user.id}&limit=200${cursor === null ? '' : `&cursor=${cursor}`}`), 200);
    all.push(...r.json.data);
    cursor = r.json.next_cursor;
    if (cursor === null) return all;
  }
  throw new Error('more than 50 pages of transactions');
}

async function compare(user) {
  const r = expectStatus(await api('GET', '/tiers/compare', { token: user.apiKey }), 200);
  assert.ok(r.json.current, `tiers/compare as a user: expected current, got ${r.text}`);
  return r.json.current;
}

async function listed(code) {
  const all = expectStatus(await api('GET', '/coupons/list'), 200).json.data;
  return all.find((c) => c.code === code.toUpperCase());
}

async function ledgerOk(when) {
  assertLedgerOk(await stack.checkLedger(), when);
}

// `fn` over `items` with at most `limit` calls in flight; the results in order.
async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

const ms = (t) => Date.parse(t);

// ---------------------------------------------------------------- 1. the three kinds

describe('1. each kind\'s effect (SPEC §3 coupons table)', () => {
  before(async () => {
    await createCoupon({ code: 'WELCOME10', kind: 'credit', amount_micros: 10_000_000 });
    await createCoupon({ code: 'TRIAL5', kind: 'credit', amount_micros: 5_000_000, credit_expires_days: 30 });
    await createCoupon({ code: 'EARLYBIRD', kind: 'percent_off', percent_off: 20, duration_months: 3 });
    await createCoupon({ code: 'HALFOFF', kind: 'percent_off', percent_off: 50, duration_months: 1 });
    await createCoupon({ code: 'FREEMONTH', kind: 'free_month' });
  });

  it('the created coupon answers its terms, nulls for what its kind does not take', async () => {
    const c = await listed('EARLYBIRD');
    assert.deepEqual(
      { ...c, created_at: undefined },
      { code: 'EARLYBIRD', kind: 'percent_off', amount_micros: null, credit_expires_days: null, percent_off: 20, duration_months: 3, tier: null, max_uses: null, per_user_limit: 1, uses: 0, expires_at: null, active: true, created_at: undefined },
    );
    const w = await listed('WELCOME10');
    assert.equal(w.amount_micros, 10_000_000);
    assert.equal(w.percent_off, null);
    assert.equal(w.credit_expires_days, null);
  });

  it('credit (WELCOME10): a bonus grant of amount_micros, never expiring, in by_kind.bonus and the transactions', async () => {
    const user = await newUser('free');
    const before = await balanceOf(user);
    const a = await redeemOk(user, 'WELCOME10');
    assert.equal(a.coupon.code, 'WELCOME10');
    assert.equal(a.coupon.uses, 1);
    assert.equal(a.effect.type, 'credit');
    assert.equal(a.effect.amount_micros, 10_000_000);
    assert.ok(Number.isInteger(a.effect.grant_id), `a credit names its grant: ${JSON.stringify(a.effect)}`);
    assert.equal(a.effect.percent_off, null);
    assert.equal(a.effect.periods, null);
    assert.equal(a.effect.tier, null);
    assert.equal(a.effect.until, null, `a credit coupon without credit_expires_days never expires: ${JSON.stringify(a.effect)}`);
    assert.equal(a.balance_micros, before.balance_micros + 10_000_000);
    const after = await balanceOf(user);
    assert.equal(after.balance_micros, before.balance_micros + 10_000_000);
    assert.equal(after.by_kind.bonus, before.by_kind.bonus + 10_000_000, `by_kind.bonus: ${JSON.stringify(after)}`);
    assert.equal(after.by_kind.allocated, before.by_kind.allocated);
    const grants = (await transactionsOf(user)).filter((t) => t.grant_id === a.effect.grant_id);
    assert.equal(grants.length, 1, `one transaction for the coupon's grant: ${JSON.stringify(grants)}`);
    assert.equal(grants[0].type, 'grant');
    assert.equal(grants[0].kind, 'bonus');
    assert.equal(grants[0].amount_micros, 10_000_000);
    assert.equal(grants[0].balance_after_micros, a.balance_micros);
    await ledgerOk('after a credit coupon');
  });

  it('credit with credit_expires_days (TRIAL5): the bonus grant expires that many days after the redemption', async () => {
    const user = await newUser('starter');
    const t0 = Date.now();
    const a = await redeemOk(user, 'trial5');
    const t1 = Date.now();
    assert.equal(a.effect.type, 'credit');
    assert.equal(a.effect.amount_micros, 5_000_000);
    assert.ok(a.effect.until !== null, `expected until, got ${JSON.stringify(a.effect)}`);
    const until = ms(a.effect.until);
    assert.ok(until >= t0 + 30 * DAY_MS - 1_000 && until <= t1 + 30 * DAY_MS + 1_000,
      `until ${a.effect.until}: expected 30 days after the redemption (${new Date(t0 + 30 * DAY_MS).toISOString()} .. ${new Date(t1 + 30 * DAY_MS).toISOString()})`);
    const b = await balanceOf(user);
    assert.equal(b.balance_micros, CREDITS.starter + 5_000_000);
    assert.equal(b.by_kind.bonus, 5_000_000);
    await ledgerOk('after a credit coupon with an expiry');
  });

  it('percent_off (EARLYBIRD) on starter: tiers/compare shows 20% off, 24000000; no money moves', async () => {
    const user = await newUser('starter');
    const before = await compare(user);
    assert.equal(before.discount_percent, 0);
    assert.equal(before.effective_price_micros, PRICE.starter);
    const a = await redeemOk(user, 'EarlyBird');
    assert.equal(a.effect.type, 'percent_off');
    assert.equal(a.effect.percent_off, 20);
    assert.equal(a.effect.periods, 3);
    assert.equal(a.effect.amount_micros, 0);
    assert.equal(a.effect.grant_id, null);
    assert.equal(a.effect.tier, null);
    assert.equal(a.balance_micros, CREDITS.starter, 'a discount moves no money');
    // The third discounted period ends two periods after the current one.
    assert.ok(a.effect.until !== null, `expected until, got ${JSON.stringify(a.effect)}`);
    const gap = ms(a.effect.until) - ms(before.period_end);
    assert.ok(gap >= 58 * DAY_MS && gap <= 63 * DAY_MS, `until ${a.effect.until}: expected two months after period_end ${before.period_end}`);
    const now = await compare(user);
    assert.equal(now.tier, 'starter');
    assert.equal(now.discount_percent, 20, `tiers/compare current: ${JSON.stringify(now)}`);
    assert.equal(now.effective_price_micros, 24_000_000, `tiers/compare current: ${JSON.stringify(now)}`);
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.starter);

    // One discount at a time.
    await expectValidation(user, 'HALFOFF', 'not_applicable');
    await refused(user, 'HALFOFF', 'not_applicable');
    const still = await compare(user);
    assert.equal(still.discount_percent, 20, 'a refused second discount changed the first');
    assert.equal(still.effective_price_micros, 24_000_000);
    assert.equal((await listed('HALFOFF')).uses, 0);
    await ledgerOk('after percent_off');
  });

  it('percent_off on the free tier is not_applicable (nothing to discount)', async () => {
    const user = await newUser('free');
    await expectValidation(user, 'EARLYBIRD', 'not_applicable');
    await refused(user, 'EARLYBIRD', 'not_applicable');
    const now = await compare(user);
    assert.equal(now.discount_percent, 0);
    assert.equal(now.effective_price_micros, 0);
  });

  it('free_month (FREEMONTH) on the free tier: starter at once, its full $30 granted now, nothing to pay', async () => {
    const user = await newUser('free');
    const before = await balanceOf(user);
    const period = await compare(user);
    assert.equal(period.tier, 'free');
    const a = await redeemOk(user, 'freemonth');
    assert.equal(a.effect.type, 'free_month');
    assert.equal(a.effect.tier, 'starter');
    assert.equal(a.effect.amount_micros, CREDITS.starter, 'the full monthly credits, no proration');
    assert.ok(Number.isInteger(a.effect.grant_id), `the starter credits are a grant: ${JSON.stringify(a.effect)}`);
    assert.equal(a.effect.percent_off, null);
    assert.equal(a.effect.periods, null);
    // The rest of this period and one full period.
    assert.ok(a.effect.until !== null && ms(a.effect.until) > ms(period.period_end) + 27 * DAY_MS,
      `until ${a.effect.until}: expected the end of the period after ${period.period_end}`);
    assert.equal(a.balance_micros, before.balance_micros + 30_000_000);
    const after = await balanceOf(user);
    assert.equal(after.balance_micros, before.balance_micros + 30_000_000);
    assert.equal(after.by_kind.allocated, before.by_kind.allocated + 30_000_000);
    const now = await compare(user);
    assert.equal(now.tier, 'starter', `tiers/compare current after FREEMONTH: ${JSON.stringify(now)}`);
    assert.equal(now.effective_price_micros, 0, `the trial is free: ${JSON.stringify(now)}`);
    const grant = (await transactionsOf(user)).find((t) => t.grant_id === a.effect.grant_id);
    assert.equal(grant?.type, 'grant');
    assert.equal(grant?.kind, 'allocated');
    assert.equal(grant?.amount_micros, 30_000_000);
    await ledgerOk('after free_month on the free tier');
  });

  it('free_month on professional: the next period waived, no money now', async () => {
    const user = await newUser('professional');
    const period = await compare(user);
    const a = await redeemOk(user, 'FREEMONTH', { asAdmin: true });
    assert.equal(a.effect.type, 'free_month');
    assert.equal(a.effect.amount_micros, 0);
    assert.equal(a.effect.grant_id, null);
    assert.equal(a.balance_micros, CREDITS.professional, 'balance unchanged');
    assert.ok(a.effect.until !== null && ms(a.effect.until) > ms(period.period_end), `until ${a.effect.until}: the end of the waived (next) period`);
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.professional);
    const now = await compare(user);
    assert.equal(now.tier, 'professional');
    assert.equal(now.effective_price_micros, PRICE.professional, 'this period is still paid; the next one is waived');
    await ledgerOk('after free_month on professional');
  });
});

// ---------------------------------------------------------------- 2. limits and refusals

describe('2. limits, refusals and their order (SPEC §3)', () => {
  it('not_found: redeem is 409 not_found; validate says so with coupon null', async () => {
    const user = await newUser('starter');
    await refused(user, 'NO-SUCH-CODE', 'not_found');
    const v = await expectValidation(user, 'no-such-code', 'not_found');
    assert.equal(v.coupon, null);
  });

  it('exhausted comes before already_redeemed: max_uses 1 used, the same user again is exhausted', async () => {
    await createCoupon({ code: 'ONEUSE', kind: 'credit', amount_micros: 1_000_000, max_uses: 1 });
    const a = await newUser('starter');
    const b = await newUser('starter');
    await redeemOk(a, 'ONEUSE');
    await expectValidation(a, 'ONEUSE', 'exhausted');
    await refused(a, 'ONEUSE', 'exhausted');
    await refused(b, 'ONEUSE', 'exhausted');
    assert.equal((await listed('ONEUSE')).uses, 1);
    assert.equal((await balanceOf(b)).balance_micros, CREDITS.starter);
    await ledgerOk('after exhausted');
  });

  it('already_redeemed comes before not_applicable: EARLYBIRD twice by one user', async () => {
    await createCoupon({ code: 'EARLY-ORDER', kind: 'percent_off', percent_off: 10, duration_months: 2 });
    const user = await newUser('starter');
    await redeemOk(user, 'EARLY-ORDER');
    // Both apply now (per_user_limit 1 reached, and a discount is running).
    await expectValidation(user, 'EARLY-ORDER', 'already_redeemed');
    await refused(user, 'EARLY-ORDER', 'already_redeemed');
  });

  it('per_user_limit 2: twice, then already_redeemed; another user still may', async () => {
    await createCoupon({ code: 'TWICE', kind: 'credit', amount_micros: 1_000_000, per_user_limit: 2 });
    assert.equal((await listed('TWICE')).per_user_limit, 2);
    const user = await newUser('starter');
    const first = await redeemOk(user, 'TWICE');
    const second = await redeemOk(user, 'twice');
    assert.notEqual(first.effect.grant_id, second.effect.grant_id, 'each redemption is its own grant');
    assert.equal(second.balance_micros, CREDITS.starter + 2_000_000);
    await expectValidation(user, 'TWICE', 'already_redeemed');
    await refused(user, 'TWICE', 'already_redeemed');
    const other = await newUser('starter');
    await redeemOk(other, 'TWICE');
    assert.equal((await listed('TWICE')).uses, 3);
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.starter + 2_000_000);
    await ledgerOk('after per_user_limit 2');
  });

  it('validate answers {valid, reason, coupon} and changes nothing', async () => {
    await createCoupon({ code: 'LOOKONLY', kind: 'credit', amount_micros: 2_000_000, max_uses: 1 });
    const user = await newUser('starter');
    const txBefore = (await transactionsOf(user)).length;
    for (let i = 0; i < 5; i++) {
      const v = await expectValidation(user, i % 2 ? 'lookonly' : 'LOOKONLY', null);
      assert.equal(v.coupon?.code, 'LOOKONLY');
      assert.equal(v.coupon?.uses, 0, 'validate counted a use');
    }
    // The admin validates for a user too.
    const byAdmin = await validate(user, 'LOOKONLY', { asAdmin: true });
    assert.deepEqual({ valid: byAdmin.valid, reason: byAdmin.reason }, { valid: true, reason: null });
    assert.equal((await listed('LOOKONLY')).uses, 0);
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.starter);
    assert.equal((await transactionsOf(user)).length, txBefore);
    // Still redeemable once: validating took nothing.
    await redeemOk(user, 'LOOKONLY');
    const after = await expectValidation(user, 'LOOKONLY', 'exhausted');
    assert.equal(after.coupon.uses, 1);
    assert.equal((await listed('LOOKONLY')).uses, 1);
  });

  it('codes are case-insensitive: stored upper case, one code whatever the case', async () => {
    const c = await createCoupon({ code: 'MixedCase-1', kind: 'credit', amount_micros: 1_000_000 });
    assert.equal(c.code, 'MIXEDCASE-1');
    expectStatus(await api('POST', '/coupons/create', { body: { code: 'mixedcase-1', kind: 'credit', amount_micros: 5 } }), 409, { code: 'coupon_exists' });
    const user = await newUser('starter');
    const v = await expectValidation(user, 'mIxEdCaSe-1', null);
    assert.equal(v.coupon.code, 'MIXEDCASE-1');
    const a = await redeemOk(user, 'mixedcase-1');
    assert.equal(a.coupon.code, 'MIXEDCASE-1');
    await refused(user, 'MIXEDCASE-1', 'already_redeemed');
  });

  it('create: bad input is 400 naming the field; an existing code is 409 coupon_exists', async () => {
    const future = new Date(Date.now() + 30 * DAY_MS).toISOString();
    const cases = [
      [{ kind: 'credit', amount_micros: 1 }, 'code'],
      [{ code: 'NOKIND' }, 'kind'],
      [{ code: 'BADKIND', kind: 'gold' }, 'kind'],
      [{ code: 'ab', kind: 'credit', amount_micros: 1 }, 'code'],
      [{ code: 'HAS SPACE', kind: 'credit', amount_micros: 1 }, 'code'],
      [{ code: 'X'.repeat(33), kind: 'credit', amount_micros: 1 }, 'code'],
      [{ code: 'NOAMOUNT', kind: 'credit' }, 'amount_micros'],
      [{ code: 'ZEROAMOUNT', kind: 'credit', amount_micros: 0 }, 'amount_micros'],
      [{ code: 'TEXTAMOUNT', kind: 'credit', amount_micros: '1000' }, 'amount_micros'],
      [{ code: 'NOPERCENT', kind: 'percent_off', duration_months: 3 }, 'percent_off'],
      [{ code: 'BIGPERCENT', kind: 'percent_off', percent_off: 101, duration_months: 3 }, 'percent_off'],
      [{ code: 'NOMONTHS', kind: 'percent_off', percent_off: 20 }, 'duration_months'],
      [{ code: 'NOTIER', kind: 'free_month', tier: 'platinum' }, 'tier'],
      [{ code: 'PASTDATE', kind: 'credit', amount_micros: 1, expires_at: '2020-01-01' }, 'expires_at'],
      [{ code: 'BADDATE', kind: 'credit', amount_micros: 1, expires_at: 'tomorrow' }, 'expires_at'],
      [{ code: 'ZEROUSES', kind: 'credit', amount_micros: 1, max_uses: 0 }, 'max_uses'],
      [{ code: 'ZEROPERUSER', kind: 'credit', amount_micros: 1, per_user_limit: 0 }, 'per_user_limit'],
    ];
    for (const [body, param] of cases) {
      expectStatus(await api('POST', '/coupons/create', { body }), 400, { param, what: `create ${JSON.stringify(body)}` });
    }
    const codes = new Set((expectStatus(await api('GET', '/coupons/list'), 200).json.data).map((c) => c.code));
    for (const [body] of cases) assert.ok(!codes.has(String(body.code).toUpperCase()), `a refused create stored ${body.code}`);
    const ok = await createCoupon({ code: 'FUTURE', kind: 'credit', amount_micros: 1, expires_at: future, max_uses: 10 });
    assert.equal(ms(ok.expires_at), ms(future));
    assert.equal(ok.max_uses, 10);
    expectStatus(await api('POST', '/coupons/create', { body: { code: 'FUTURE', kind: 'free_month' } }), 409, { code: 'coupon_exists', param: 'code' });
  });

  it('redeem and validate: missing code, an admin naming no user, an unknown user', async () => {
    const user = await newUser('starter');
    expectStatus(await api('POST', '/coupons/redeem', { token: user.apiKey, body: {} }), 400, { param: 'code' });
    expectStatus(await api('POST', '/coupons/redeem', { token: user.apiKey, body: { code: 42 } }), 400, { param: 'code' });
    expectStatus(await api('POST', '/coupons/redeem', { body: { code: 'WELCOME10' } }), 400, { param: 'user_id' });
    expectStatus(await api('POST', '/coupons/redeem', { body: { code: 'WELCOME10', user_id: 999_999_999 } }), 404, { code: 'user_not_found' });
    expectStatus(await api('GET', '/coupons/validate', { token: user.apiKey }), 400, { param: 'code' });
    expectStatus(await api('GET', '/coupons/validate?code=WELCOME10'), 400, { param: 'user_id' });
    expectStatus(await api('GET', '/coupons/validate?code=WELCOME10&user_id=999999999'), 404, { code: 'user_not_found' });
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.starter);
  });
});

// ---------------------------------------------------------------- 3. idempotency

describe('3. Idempotency-Key on redeem (SPEC §4.3)', () => {
  it('a replay answers the first redemption (same grant) and moves money once; another code under the key is 409', async () => {
    await createCoupon({ code: 'REPLAY5', kind: 'credit', amount_micros: 5_000_000, per_user_limit: 3 });
    await createCoupon({ code: 'REPLAY-OTHER', kind: 'credit', amount_micros: 1_000_000 });
    const user = await newUser('starter');
    const key = unique('redeem');
    const first = await redeemOk(user, 'REPLAY5', { key });
    const again = await redeemOk(user, 'replay5', { key });
    assert.deepEqual(again.effect, first.effect, 'the replay answers the first effect');
    assert.equal(again.balance_micros, first.balance_micros);
    assert.equal(again.coupon.code, 'REPLAY5');
    const concurrent = await Promise.all([1, 2, 3].map(() => redeem(user, 'REPLAY5', { key })));
    for (const r of concurrent) {
      expectStatus(r, 200, { what: 'a concurrent replay' });
      assert.equal(r.json.effect.grant_id, first.effect.grant_id, `a concurrent replay made another grant: ${r.text}`);
    }
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.starter + 5_000_000, 'the replays moved money');
    assert.equal((await listed('REPLAY5')).uses, 1, 'the replays counted uses');
    const grants = (await transactionsOf(user)).filter((t) => t.type === 'grant' && t.kind === 'bonus');
    assert.equal(grants.length, 1, `one bonus grant: ${JSON.stringify(grants)}`);
    assert.equal(grants[0].grant_id, first.effect.grant_id);
    expectStatus(await redeem(user, 'REPLAY-OTHER', { key }), 409, { code: 'idempotency_conflict' });
    assert.equal((await listed('REPLAY-OTHER')).uses, 0);
    // Without the key it is a new redemption (per_user_limit 3).
    const fresh = await redeemOk(user, 'REPLAY5');
    assert.notEqual(fresh.effect.grant_id, first.effect.grant_id);
    assert.equal(fresh.balance_micros, CREDITS.starter + 10_000_000);
    // The admin's keys are its own: the same key text is a new redemption.
    const byAdmin = await redeemOk(user, 'REPLAY5', { asAdmin: true, key });
    assert.notEqual(byAdmin.effect.grant_id, first.effect.grant_id, 'Idempotency-Keys are scoped to the caller');
    await ledgerOk('after replays');
  });

  it('10 concurrent first uses of one key: one redemption, every answer names its grant', async () => {
    await createCoupon({ code: 'RACEKEY', kind: 'credit', amount_micros: 3_000_000, per_user_limit: 10 });
    const user = await newUser('free');
    const key = unique('race');
    const answers = await Promise.all(Array.from({ length: 10 }, () => redeem(user, 'RACEKEY', { key })));
    for (const r of answers) expectStatus(r, 200, { what: 'a concurrent first use of one Idempotency-Key' });
    const grants = new Set(answers.map((r) => r.json.effect.grant_id));
    assert.equal(grants.size, 1, `one grant for one key, got ${[...grants].join(', ')}`);
    assert.equal((await listed('RACEKEY')).uses, 1);
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.free + 3_000_000);
    await ledgerOk('after concurrent first uses of a key');
  });
});

// ---------------------------------------------------------------- 4. concurrency

describe('4. 500 users race for a code with max_uses 50 (SPEC §6: atomic)', () => {
  it('exactly 50 redeem, 450 are exhausted, uses is 50 and the ledger holds', async () => {
    await createCoupon({ code: 'RUSH50', kind: 'credit', amount_micros: 1_000_000, max_uses: 50 });
    const users = await mapLimit(Array.from({ length: 500 }, (_, i) => i), 50, () => newUser('free'));
    assert.equal(new Set(users.map((u) => u.id)).size, 500);
    const answers = await mapLimit(users, 50, (u) => redeem(u, 'RUSH50'));
    const byStatus = {};
    for (const r of answers) {
      const k = r.status === 200 ? '200' : `${r.status} ${r.json?.error?.code}`;
      byStatus[k] = (byStatus[k] ?? 0) + 1;
    }
    assert.deepEqual(byStatus, { 200: 50, '409 exhausted': 450 }, `the answers: ${JSON.stringify(byStatus)}`);
    const uses = answers.filter((r) => r.status === 200).map((r) => r.json.coupon.uses).sort((a, b) => a - b);
    assert.deepEqual(uses, Array.from({ length: 50 }, (_, i) => i + 1), 'each winner saw its own use count');
    const coupon = await listed('RUSH50');
    assert.equal(coupon.uses, 50, `coupons/list: ${JSON.stringify(coupon)}`);
    const balances = await mapLimit(users, 50, (u) => balanceOf(u));
    const winners = new Set(users.filter((_, i) => answers[i].status === 200).map((u) => u.id));
    for (const [i, b] of balances.entries()) {
      const expected = CREDITS.free + (winners.has(users[i].id) ? 1_000_000 : 0);
      assert.equal(b.balance_micros, expected, `user ${users[i].id} (${winners.has(users[i].id) ? 'redeemed' : 'refused'}): ${JSON.stringify(b)}`);
    }
    await ledgerOk('after 500 concurrent redemptions');
  });
});

// ---------------------------------------------------------------- 5. deactivation

describe('5. deactivation (DELETE /coupons/{code})', () => {
  it('inactive comes before expired, expired before exhausted; history kept, the code stays taken', async () => {
    const expiresAt = new Date(Date.now() + 2_000).toISOString();
    await createCoupon({ code: 'SHORTLIVED', kind: 'credit', amount_micros: 1_000_000, max_uses: 1, expires_at: expiresAt });
    const a = await newUser('starter');
    const b = await newUser('starter');
    await redeemOk(a, 'SHORTLIVED');
    await refused(b, 'SHORTLIVED', 'exhausted');
    await new Promise((resolve) => { setTimeout(resolve, Math.max(0, ms(expiresAt) - Date.now()) + 300); });
    // Expired and exhausted both hold: expired is first.
    await expectValidation(b, 'SHORTLIVED', 'expired');
    await refused(b, 'SHORTLIVED', 'expired');
    const d = expectStatus(await api('DELETE', '/coupons/shortlived'), 200).json.coupon;
    assert.equal(d.code, 'SHORTLIVED');
    assert.equal(d.active, false);
    assert.equal(d.uses, 1, 'deactivation keeps the history');
    // Deactivated, expired and exhausted: inactive is first.
    await expectValidation(b, 'SHORTLIVED', 'inactive');
    await refused(b, 'SHORTLIVED', 'inactive');
    const l = await listed('SHORTLIVED');
    assert.deepEqual({ active: l?.active, uses: l?.uses }, { active: false, uses: 1 });
    expectStatus(await api('POST', '/coupons/create', { body: { code: 'SHORTLIVED', kind: 'credit', amount_micros: 1 } }), 409, { code: 'coupon_exists' });
    await ledgerOk('after deactivation');
  });

  it('a deactivated code is inactive to everyone at once; an unknown code is 404 coupon_not_found', async () => {
    await createCoupon({ code: 'STOPME', kind: 'credit', amount_micros: 1_000_000 });
    const user = await newUser('free');
    await expectValidation(user, 'STOPME', null);
    const d = expectStatus(await api('DELETE', '/coupons/StopMe'), 200).json.coupon;
    assert.equal(d.active, false);
    assert.equal(d.uses, 0);
    await refused(user, 'stopme', 'inactive');
    assert.equal((await balanceOf(user)).balance_micros, CREDITS.free);
    expectStatus(await api('DELETE', '/coupons/NO-SUCH-CODE'), 404, { code: 'coupon_not_found' });
    // Deactivating twice is harmless.
    expectStatus(await api('DELETE', '/coupons/STOPME'), 200);
    // The server is still whole afterwards: creating, listing and redeeming work.
    await createCoupon({ code: 'AFTERSTOP', kind: 'credit', amount_micros: 1_000_000, expires_at: new Date(Date.now() + DAY_MS).toISOString() });
    assert.ok((await listed('AFTERSTOP'))?.active);
    await redeemOk(user, 'AFTERSTOP');
    await ledgerOk('after deactivations');
  });
});
