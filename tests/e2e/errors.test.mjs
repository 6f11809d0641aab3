// Every error tollgate answers itself, and the upstream failures it passes
// through or maps (SPEC §5 "Errors", "Limits"; brief items 5, 9). This stack
// runs with short first-byte and idle timeouts so the timeout cases finish
// quickly.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, APIError, rawPost, assertOpenAIError, assertLedgerOk, pollUntil, httpFetch, postEarlyAnswer, readStream,
} from './harness.mjs';

const FIRST_BYTE_MS = 1_000;
const IDLE_MS = 3_000;
const CONFIG = `
[timeouts]
first_byte_ms = ${FIRST_BYTE_MS}
idle_ms = ${IDLE_MS}
`;
const OR_PAID = 'openai/gpt-4o-mini';
const OR_EXPENSIVE = 'openai/o1-pro'; // $600 per million completion tokens
const MAX_BODY_BYTES = 8 * 1024 * 1024;
// Default rpm is 600; twice that, plus margin, bounds the burst even when a
// fixed one-minute window rolls over in the middle of it.
const RATE_LIMIT_REQUEST_CAP = 1_300;
const messages = [{ role: 'user', content: 'hello there' }];

let stack;
let starter; // a funded starter user shared by the cases that charge nothing
before(async () => {
  stack = await startStack({ config: CONFIG });
  starter = await stack.createUser({ tier: 'starter' });
});
after(async () => {
  await stack?.stop();
});

async function snapshot(user) {
  return { balance: await stack.balance(user.id), lastId: await stack.lastTransactionId(user.id) };
}

// Nothing moved: balance as before, no hold left, no new transaction.
async function assertNothingCharged(user, before, what) {
  const settled = await pollUntil(async () => {
    const b = await stack.balance(user.id);
    return b.reserved_micros === 0n ? b : undefined;
  }, { timeoutMs: 10_000 });
  assert.ok(settled, `${what}: the hold was not released within 10 s`);
  assert.equal(settled.balance_micros, before.balance.balance_micros,
    `${what}: expected the balance unchanged at ${before.balance.balance_micros}, got ${settled.balance_micros}`);
  const rows = await stack.newTransactions(user.id, before.lastId);
  assert.deepEqual(rows, [], `${what}: expected no new transaction, got ${JSON.stringify(rows)}`);
}

async function sdkError(promise) {
  try {
    const r = await promise;
    if (r && typeof r[Symbol.asyncIterator] === 'function') for await (const c of r) void c;
  } catch (e) {
    return e;
  }
  return undefined;
}

function assertSdkError(e, status, code, what) {
  assert.ok(e instanceof APIError, `${what}: expected the SDK to throw an APIError, got ${e}`);
  assert.equal(e.status, status, `${what}: expected status ${status}, got ${e.status} (${e.message})`);
  assert.equal(e.code, code, `${what}: expected code ${code}, got ${e.code} (${e.message})`);
}

// The last inference request the mock received (404 text when none yet).
async function lastUpstreamRequest() {
  const res = await httpFetch(`${stack.mockUrl}/mock/last-request`);
  return `${res.status} ${await res.text()}`;
}

describe('errors tollgate answers itself', () => {
  it('401 invalid_api_key: no key, and a wrong key through the SDK', async () => {
    const none = await rawPost(stack, '/v1/chat/completions', null, { model: OR_PAID, messages });
    assertOpenAIError(none, 401, 'invalid_api_key', 'no Authorization');
    const e = await sdkError(stack.client('tg_this-key-does-not-exist').chat.completions.create({ model: OR_PAID, messages }));
    assertSdkError(e, 401, 'invalid_api_key', 'wrong key');
  });

  it('403 model_not_allowed: a free-tier user asking for a paid model; nothing charged', async () => {
    const user = await stack.createUser({ tier: 'free' });
    const before = await snapshot(user);
    const e = await sdkError(stack.client(user.apiKey).chat.completions.create({ model: OR_PAID, messages }));
    assertSdkError(e, 403, 'model_not_allowed', 'free tier, paid model');
    const raw = await rawPost(stack, '/v1/chat/completions', user.apiKey, { model: 'gpt-4o-mini', messages, stream: true });
    assertOpenAIError(raw, 403, 'model_not_allowed', 'free tier, paid LiteLLM model (stream)');
    await assertNothingCharged(user, before, '403');
  });

  it('404 model_not_found: an unknown model goes nowhere', async () => {
    const before = await snapshot(starter);
    const upstreamBefore = await lastUpstreamRequest();
    const e = await sdkError(stack.client(starter.apiKey).chat.completions.create({ model: 'no-such-vendor/no-such-model', messages }));
    assertSdkError(e, 404, 'model_not_found', 'unknown model');
    const raw = await rawPost(stack, '/v1/embeddings', starter.apiKey, { model: 'no-such-embedder', input: 'x' });
    assertOpenAIError(raw, 404, 'model_not_found', 'unknown embedding model');
    assert.equal(await lastUpstreamRequest(), upstreamBefore, 'model_not_found: the upstream saw a request');
    await assertNothingCharged(starter, before, '404');
  });

  it('413 request_too_large: a body over 8 MiB', async () => {
    const filler = 'a'.repeat(MAX_BODY_BYTES + 1024);
    const body = Buffer.from(JSON.stringify({ model: OR_PAID, messages: [{ role: 'user', content: filler }] }));
    const r = await postEarlyAnswer(`${stack.url}/v1/chat/completions`, starter.apiKey, body);
    assertOpenAIError(r, 413, 'request_too_large', `a ${body.length}-byte body`);
  });

  it('402 insufficient_credits: the hold cannot be covered; the message states the amounts; nothing charged', async () => {
    const user = await stack.createUser({ tier: 'starter' }); // $30 of monthly credits
    const before = await snapshot(user);
    // Up to 100,000 completion tokens at $0.0006 each: a hold of about $66.
    const body = { model: OR_EXPENSIVE, messages, max_tokens: 100_000 };
    const raw = await rawPost(stack, '/v1/chat/completions', user.apiKey, body);
    assertOpenAIError(raw, 402, 'insufficient_credits', 'a $66 hold on $30');
    const message = raw.json.error.message;
    const available = before.balance.available_micros;
    const availableShown = [String(available), (Number(available) / 1e6).toFixed(2), (Number(available) / 1e6).toFixed(6)];
    assert.ok(availableShown.some((s) => message.includes(s)),
      `402: expected the message to state the available amount (${availableShown.join(' or ')}), got "${message}"`);
    const amounts = message.match(/\d[\d,]*(\.\d+)?/g) ?? [];
    assert.ok(amounts.length >= 2, `402: expected the available and the required amounts in "${message}"`);
    const e = await sdkError(stack.client(user.apiKey).chat.completions.create(body));
    assertSdkError(e, 402, 'insufficient_credits', 'SDK, a $66 hold on $30');
    await assertNothingCharged(user, before, '402');
  });

  it('429 rate_limited with Retry-After once a key passes its rpm (default 600/min)', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    // Cheap requests that still count: an unknown model is refused after
    // the rate limit, before any hold or upstream call.
    const body = { model: 'no-such-vendor/rate-probe', messages };
    let limited;
    let sent = 0;
    const worker = async () => {
      while (!limited && sent < RATE_LIMIT_REQUEST_CAP) {
        sent++;
        const r = await rawPost(stack, '/v1/chat/completions', user.apiKey, body);
        if (r.status === 429) limited ??= r;
        else assert.equal(r.status, 404, `rate probe: expected 404 or 429, got ${r.status}: ${r.text}`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    assert.ok(limited, `expected a 429 within ${RATE_LIMIT_REQUEST_CAP} requests, got none`);
    assert.ok(sent > 600, `429 came after only ${sent} requests; the default limit is 600 a minute`);
    assertOpenAIError(limited, 429, 'rate_limited', 'over the rpm');
    const retryAfter = limited.headers.get('retry-after');
    assert.match(retryAfter ?? '', /^[1-9]\d*$/, `429: expected Retry-After in whole seconds >= 1, got ${retryAfter}`);
    // The SDK sees it as a RateLimitError. The limit may refill a request's
    // worth meanwhile (a token bucket does), so probe until one is refused.
    let e;
    for (let i = 0; i < 200 && !(e instanceof APIError && e.status === 429); i++) {
      e = await sdkError(stack.client(user.apiKey).chat.completions.create(body));
    }
    assertSdkError(e, 429, 'rate_limited', 'SDK over the rpm');
  });
});

describe('upstream failures', () => {
  it('an upstream HTTP 500 is passed through with its status and body; the hold is released', async () => {
    for (const [model, path, key] of [[OR_PAID, '/api/v1/chat/completions', 'sk-or-v1-e2e-platform-key'], ['gpt-4o-mini', '/v1/chat/completions', 'sk-litellm-e2e']]) {
      const before = await snapshot(starter);
      const body = { model, messages };
      const faultHeaders = { 'x-mock-fault': '500' };
      const r = await rawPost(stack, '/v1/chat/completions', starter.apiKey, body, faultHeaders);
      const direct = await httpFetch(`${stack.mockUrl}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...faultHeaders },
        body: JSON.stringify(body),
      });
      const directText = await direct.text();
      assert.equal(r.status, 500, `${model}: expected the upstream's 500 passed through, got ${r.status}: ${r.text}`);
      assert.equal(r.text, directText, `${model}: expected the upstream's body unchanged:\n${directText}\ngot:\n${r.text}`);
      assert.ok(r.headers.get('x-request-id'), `${model}: expected x-request-id on a passed-through error`);
      await assertNothingCharged(starter, before, `${model} upstream 500`);
    }
    const e = await sdkError(stack.client(starter.apiKey).chat.completions.create(
      { model: OR_PAID, messages }, { headers: { 'x-mock-fault': '500' } }));
    assert.ok(e instanceof APIError && e.status === 500, `SDK: expected a 500 APIError, got ${e} (status ${e?.status})`);
  });

  it('garbage instead of HTTP: 502 upstream_error, nothing charged', async () => {
    const before = await snapshot(starter);
    const r = await rawPost(stack, '/v1/chat/completions', starter.apiKey, { model: OR_PAID, messages }, { 'x-mock-fault': 'garbage' });
    assertOpenAIError(r, 502, 'upstream_error', 'garbage');
    await assertNothingCharged(starter, before, 'garbage');
  });

  it(`slow headers beyond first_byte_ms (${FIRST_BYTE_MS} ms): 504 upstream_timeout, nothing charged`, async () => {
    const before = await snapshot(starter);
    const r = await rawPost(stack, '/v1/chat/completions', starter.apiKey, { model: OR_PAID, messages },
      { 'x-mock-fault': 'slow-headers', 'x-mock-delay-ms': String(FIRST_BYTE_MS * 10) });
    assertOpenAIError(r, 504, 'upstream_timeout', 'slow headers');
    await assertNothingCharged(starter, before, 'slow headers');
  });

  it('a stream that stalls after 3 chunks: the 3 chunks reach the client first (relayed as they arrive), then it ends and is billed', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const before = await snapshot(user);
    const stream = await stack.client(user.apiKey).chat.completions.create(
      { model: OR_PAID, messages, stream: true, max_tokens: 16 },
      { headers: { 'x-mock-fault': 'stall', 'x-mock-fault-after': '3' } },
    );
    const { contents, usages, thrown } = await readStream(stream);
    const usage = usages.at(-1);
    // Reaching this line at all means tollgate gave up on the stalled
    // upstream (idle_ms); the chunks before the stall must have been relayed.
    assert.deepEqual(contents, ['tok0 ', 'tok1 ', 'tok2 '], `stall: expected the 3 chunks sent before the stall, got ${JSON.stringify(contents)}`);
    assert.ok(thrown || !usage, `stall: expected an error or a cut-off stream, got usage ${JSON.stringify(usage)}`);
    const found = await pollUntil(async () => {
      const rows = await stack.newTransactions(user.id, before.lastId);
      const charges = rows.filter((t) => t.type === 'charge');
      return charges.length ? charges : undefined;
    }, { timeoutMs: 15_000 });
    assert.ok(found, 'stall: expected a charge for the relayed tokens, found none within 15 s');
    const charged = -found.reduce((a, t) => a + BigInt(t.amount_micros), 0n);
    assert.ok(charged > 0n, `stall: expected a charge > 0, got ${charged}`);
  });
});

describe('ledger', () => {
  it('check-ledger passes on the live database', async () => {
    assertLedgerOk(await stack.checkLedger(), 'after the error scenarios');
  });
});

