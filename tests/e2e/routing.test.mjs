// Routers and fallbacks (SPEC §5): a router model priced "-1" is held at the
// configured router cap and settled with the upstream-reported cost; a
// request listing fallback `models` is held at its dearest candidate.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, rawPost, assertOpenAIError, assertLedgerOk, sum } from './harness.mjs';
import { usdToPico, numberToUsdText, expectedCharge } from './money.mjs';

// $40: above a starter user's $30, so the cap decides admission.
const ROUTER_CAP_MICROS = 40_000_000n;
const CONFIG = `[hold]\nrouter_cap_micros = ${ROUTER_CAP_MICROS}\n`;

let stack;
before(async () => {
  stack = await startStack({ config: CONFIG });
});
after(async () => {
  await stack?.stop();
});

const messages = [{ role: 'user', content: 'route me somewhere good' }];

async function charges(userId, afterId) {
  const rows = await stack.newTransactions(userId, afterId);
  return -sum(rows.filter((t) => t.type === 'charge').map((t) => t.amount_micros));
}

describe('a router model priced "-1" (openrouter/auto)', () => {
  it('is refused when the router cap is not available', async () => {
    const user = await stack.createUser({ tier: 'starter' });  // $30 < $40 cap
    const before = await stack.balance(user.id);
    const r = await rawPost(stack, '/v1/chat/completions', user.apiKey, { model: 'openrouter/auto', messages });
    assertOpenAIError(r, 402, 'insufficient_credits', 'router call without the cap available');
    assert.match(r.json.error.message, /\$40\.000000/, `the message should state the $40 hold: ${r.json.error.message}`);
    const after = await stack.balance(user.id);
    assert.equal(after.balance_micros, before.balance_micros, 'nothing may be charged');
  });

  it('is admitted at the cap and charged the upstream-reported cost plus markup, not the cap', async () => {
    const user = await stack.createUser({ tier: 'starter', extraMicros: 20_000_000n });  // $50 >= $40
    const lastId = await stack.lastTransactionId(user.id);
    const client = stack.client(user.apiKey);
    const { data, response } = await client.chat.completions
      .create({ model: 'openrouter/auto', messages, max_tokens: 5 })
      .withResponse();
    assert.equal(data.model, 'openai/gpt-4o-mini', `the mock routes to openai/gpt-4o-mini, got ${data.model}`);
    const providerPico = usdToPico(numberToUsdText(data.usage.cost));
    assert.ok(providerPico > 0n, `expected a reported cost, got ${JSON.stringify(data.usage)}`);
    const expected = expectedCharge({
      tier: 'starter', modelIsFree: false, providerPico,
      totalTokens: data.usage.prompt_tokens + data.usage.completion_tokens,
    });
    assert.equal(response.headers.get('x-tollgate-charged-micros'), String(expected.chargedMicros),
      `charged header: expected ${expected.chargedMicros} (usage.cost + 10%)`);
    assert.equal(await charges(user.id, lastId), expected.chargedMicros, 'ledger charge rows');
    const after = await stack.balance(user.id);
    assert.equal(after.reserved_micros, 0n, 'the $40 hold is fully released after settlement');
  });
});

describe('fallback models', () => {
  it('every candidate must exist: an unknown fallback is 404 model_not_found', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const r = await rawPost(stack, '/v1/chat/completions', user.apiKey, {
      model: 'openai/gpt-4o-mini', models: ['openai/gpt-4o-mini', 'nobody/no-such-model'], messages,
    });
    assertOpenAIError(r, 404, 'model_not_found', 'unknown fallback');
    assert.equal(r.json.error.param, 'models');
  });

  it('the hold covers the dearest candidate: o1-pro as a fallback needs more than gpt-4o-mini alone', async () => {
    // o1-pro completion is $600 per million tokens: 60,000 tokens are $36,
    // more than a starter user's $30; gpt-4o-mini's 20,000 are $0.012.
    const user = await stack.createUser({ tier: 'starter' });
    const cheap = await rawPost(stack, '/v1/chat/completions', user.apiKey, {
      model: 'openai/gpt-4o-mini', messages, max_tokens: 20_000,
    });
    assert.equal(cheap.status, 200, `gpt-4o-mini alone fits in $30: ${cheap.text}`);
    const dear = await rawPost(stack, '/v1/chat/completions', user.apiKey, {
      model: 'openai/gpt-4o-mini', models: ['openai/gpt-4o-mini', 'openai/o1-pro'], messages, max_tokens: 60_000,
    });
    assertOpenAIError(dear, 402, 'insufficient_credits', 'a fallback list with o1-pro at 60,000 tokens ($36+)');
  });
});

describe('ledger', () => {
  it('check-ledger passes on the live database', async () => {
    assertLedgerOk(await stack.checkLedger(), 'after routing');
  });
});
