// Chat through tollgate with the OpenAI SDK: what the client sees and what
// the ledger charges, for whole answers, streams, aborted streams and
// streams that break (SPEC §2, §3, §5; brief items 1, 2, 6, 7, 9).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStack, APIError, sum, pollUntil, sseData, rawPost, assertLedgerOk, readStream,
} from './harness.mjs';
import {
  usdToPico, numberToUsdText, expectedCharge, openrouterPricePico, litellmPricePico, mockPromptTokens,
} from './money.mjs';

const OR_PAID = 'openai/gpt-4o-mini';
const OR_FREE = 'liquid/lfm-2.5-2.6b:free';
const LITELLM_CHAT = 'gpt-4o-mini';
const POLL = { timeoutMs: 15_000, intervalMs: 50 };

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

// Provider cost of a chat call at fixture prices (no cache, no reasoning).
function openrouterCostPico(model, promptTokens, completionTokens) {
  return BigInt(promptTokens) * openrouterPricePico(model, 'prompt') +
    BigInt(completionTokens) * openrouterPricePico(model, 'completion') +
    openrouterPricePico(model, 'request');
}
function litellmCostPico(model, promptTokens, completionTokens) {
  return BigInt(promptTokens) * litellmPricePico(model, 'input_cost_per_token') +
    BigInt(completionTokens) * litellmPricePico(model, 'output_cost_per_token');
}

// The reported usage.cost must be what the fixture prices give.
function assertReportedCost(usage, expectedPico, what) {
  assert.ok(usage && typeof usage.cost === 'number', `${what}: expected usage.cost in the answer, got ${JSON.stringify(usage)}`);
  const reported = usdToPico(numberToUsdText(usage.cost));
  assert.equal(reported, expectedPico,
    `${what}: usage.cost ${usage.cost} is ${reported} pico, expected ${expectedPico} pico (tokens × fixture prices)`);
}

// The ledger rows a call left: every new transaction, and the charge sum.
async function ledgerSince(userId, afterId) {
  const rows = await stack.newTransactions(userId, afterId);
  const charges = rows.filter((t) => t.type === 'charge');
  return { rows, charges, charged: -sum(charges.map((t) => t.amount_micros)) };
}

async function snapshot(user) {
  return { balance: await stack.balance(user.id), lastId: await stack.lastTransactionId(user.id) };
}

async function assertChargedExactly(user, before, expectedMicros, what) {
  const { rows, charges, charged } = await ledgerSince(user.id, before.lastId);
  assert.ok(charges.length >= 1 || expectedMicros === 0n,
    `${what}: expected charge transaction(s) of ${expectedMicros} micros, got rows ${JSON.stringify(rows)}`);
  assert.equal(charged, expectedMicros,
    `${what}: expected the charge rows to sum to -${expectedMicros} micros, got -${charged} (${JSON.stringify(rows)})`);
  const after = await stack.balance(user.id);
  assert.equal(after.balance_micros, before.balance.balance_micros - expectedMicros,
    `${what}: expected balance ${before.balance.balance_micros} - ${expectedMicros}, got ${after.balance_micros}`);
  assert.equal(after.reserved_micros, 0n, `${what}: expected no hold left, got reserved_micros ${after.reserved_micros}`);
  return after;
}

// Waits (bounded) until the user has a charge row newer than `afterId`.
async function waitForCharge(user, afterId, what) {
  const found = await pollUntil(async () => {
    const l = await ledgerSince(user.id, afterId);
    const b = await stack.balance(user.id);
    return l.charges.length > 0 && b.reserved_micros === 0n ? { ...l, balance: b } : undefined;
  }, POLL);
  assert.ok(found, `${what}: expected a charge in the ledger within ${POLL.timeoutMs} ms, found none ` +
    `(transactions: ${JSON.stringify(await stack.newTransactions(user.id, afterId))})`);
  return found;
}

const messages = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Say hello to the metering proxy, please.' },
];
const promptTokens = mockPromptTokens(messages);

describe('non-stream chat (OpenRouter, starter)', () => {
  it('answers, charges tokens × fixture prices + 10%, and the headers match the ledger', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const before = await snapshot(user);
    const completionTokens = 12;

    const { data, response } = await client.chat.completions
      .create({ model: OR_PAID, messages, max_tokens: completionTokens })
      .withResponse();

    const expectedText = Array.from({ length: completionTokens }, (_, i) => `tok${i} `).join('');
    assert.equal(data.choices?.[0]?.message?.content, expectedText,
      `expected the mock's ${completionTokens} words, got ${JSON.stringify(data.choices)}`);
    assert.equal(data.usage?.prompt_tokens, promptTokens, `expected prompt_tokens ${promptTokens}, got ${JSON.stringify(data.usage)}`);
    assert.equal(data.usage?.completion_tokens, completionTokens, `expected completion_tokens ${completionTokens}, got ${JSON.stringify(data.usage)}`);
    const providerPico = openrouterCostPico(OR_PAID, promptTokens, completionTokens);
    assertReportedCost(data.usage, providerPico, 'non-stream chat');
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens + completionTokens });

    assert.ok(response.headers.get('x-request-id'), 'expected an x-request-id header');
    const chargedHeader = response.headers.get('x-tollgate-charged-micros');
    const balanceHeader = response.headers.get('x-tollgate-balance-micros');
    assert.equal(chargedHeader, String(expected.chargedMicros),
      `x-tollgate-charged-micros: expected ${expected.chargedMicros} (cost ${providerPico} pico + markup ${expected.markupPico} pico), got ${chargedHeader}`);
    const after = await assertChargedExactly(user, before, expected.chargedMicros, 'non-stream chat');
    assert.equal(balanceHeader, String(after.balance_micros),
      `x-tollgate-balance-micros: expected the ledger's balance ${after.balance_micros}, got ${balanceHeader}`);

    // Transparent: the body went upstream as the SDK sent it, with the
    // platform credential instead of the tollgate key.
    const last = await stack.mockLastRequest();
    assert.equal(last.target, '/api/v1/chat/completions', `upstream target: got ${last.target}`);
    assert.equal(last.headers.authorization, 'Bearer sk-or-v1-e2e-platform-key',
      `upstream Authorization: expected the platform key, got ${last.headers.authorization}`);
    assert.deepEqual(JSON.parse(last.body), { model: OR_PAID, messages, max_tokens: completionTokens },
      `upstream body: expected the client's body unchanged, got ${last.body}`);
  });
});

describe('streamed chat', () => {
  it('OpenRouter: content chunk by chunk, usage reaches the client, the ledger has the charge when the stream ends', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const before = await snapshot(user);
    const completionTokens = 5;

    const stream = await client.chat.completions.create(
      { model: OR_PAID, messages, stream: true, max_tokens: completionTokens },
      { headers: { 'x-mock-delay-ms': '10' } },
    );
    const { contents, usages, thrown } = await readStream(stream);
    if (thrown) throw thrown;
    assert.deepEqual(contents, Array.from({ length: completionTokens }, (_, i) => `tok${i} `),
      `expected one content delta per token, got ${JSON.stringify(contents)}`);
    assert.equal(usages.length, 1, `expected exactly one usage chunk, got ${JSON.stringify(usages)}`);
    const usage = usages[0];
    assert.equal(usage.prompt_tokens, promptTokens, `usage.prompt_tokens: expected ${promptTokens}, got ${JSON.stringify(usage)}`);
    assert.equal(usage.completion_tokens, completionTokens, `usage.completion_tokens: expected ${completionTokens}, got ${JSON.stringify(usage)}`);
    const providerPico = openrouterCostPico(OR_PAID, promptTokens, completionTokens);
    assertReportedCost(usage, providerPico, 'OpenRouter stream');
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens + completionTokens });
    // The final chunk is written only after the charge is committed: no polling.
    await assertChargedExactly(user, before, expected.chargedMicros, 'OpenRouter stream (checked as soon as it ended)');
  });

  it('LiteLLM without stream_options: no usage member reaches the client (raw SSE), yet the ledger is charged', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const completionTokens = 4;
    const before = await snapshot(user);
    const r = await rawPost(stack, '/v1/chat/completions', user.apiKey,
      { model: LITELLM_CHAT, messages, stream: true, max_tokens: completionTokens });
    assert.equal(r.status, 200, `expected 200, got ${r.status}: ${r.text}`);
    assert.match(r.headers.get('content-type') ?? '', /^text\/event-stream/, 'expected an SSE answer');
    assert.ok(!/"usage"/.test(r.text), `expected no "usage" member anywhere in the relayed SSE, got:\n${r.text}`);
    const data = sseData(r.text);
    assert.equal(data.at(-1), '[DONE]', `expected the stream to end with [DONE], got ${JSON.stringify(data.at(-1))}`);
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    const text = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    assert.equal(text, 'tok0 tok1 tok2 tok3 ', `expected the mock's words, got ${JSON.stringify(text)}`);
    for (const c of chunks) {
      assert.ok(Array.isArray(c.choices) && c.choices.length === 1,
        `expected every LiteLLM chunk to keep its one choice (only the usage member is removed), got ${JSON.stringify(c)}`);
    }

    const last = await stack.mockLastRequest();
    const forwarded = JSON.parse(last.body);
    assert.equal(forwarded.stream_options?.include_usage, true,
      `expected tollgate to force stream_options.include_usage upstream, got ${last.body}`);
    assert.equal(last.headers.authorization, 'Bearer sk-litellm-e2e', `upstream Authorization: got ${last.headers.authorization}`);

    const providerPico = litellmCostPico(LITELLM_CHAT, promptTokens, completionTokens);
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens + completionTokens });
    await assertChargedExactly(user, before, expected.chargedMicros, 'LiteLLM stream without include_usage');
  });

  it('LiteLLM without stream_options through the SDK: no chunk has a usage member; charged', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const completionTokens = 3;
    const before = await snapshot(user);
    const stream = await client.chat.completions.create({ model: LITELLM_CHAT, messages, stream: true, max_tokens: completionTokens });
    const contents = [];
    for await (const chunk of stream) {
      assert.ok(!Object.hasOwn(chunk, 'usage'), `expected no usage member in any chunk, got ${JSON.stringify(chunk)}`);
      const c = chunk.choices?.[0]?.delta?.content;
      if (c) contents.push(c);
    }
    assert.deepEqual(contents, ['tok0 ', 'tok1 ', 'tok2 '], `expected 3 content deltas, got ${JSON.stringify(contents)}`);
    const providerPico = litellmCostPico(LITELLM_CHAT, promptTokens, completionTokens);
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens + completionTokens });
    await assertChargedExactly(user, before, expected.chargedMicros, 'LiteLLM SDK stream without include_usage');
  });

  it('LiteLLM with include_usage: the client gets the usage it asked for', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const completionTokens = 6;
    const before = await snapshot(user);
    const stream = await client.chat.completions.create({
      model: LITELLM_CHAT, messages, stream: true, max_tokens: completionTokens, stream_options: { include_usage: true },
    });
    const usages = [];
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) usages.push(chunk.usage);
    }
    assert.equal(usages.length, 1, `expected one usage chunk among ${chunks}, got ${JSON.stringify(usages)}`);
    assert.equal(usages[0].prompt_tokens, promptTokens, `usage: ${JSON.stringify(usages[0])}`);
    assert.equal(usages[0].completion_tokens, completionTokens, `usage: ${JSON.stringify(usages[0])}`);
    const providerPico = litellmCostPico(LITELLM_CHAT, promptTokens, completionTokens);
    assertReportedCost(usages[0], providerPico, 'LiteLLM stream usage');
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens + completionTokens });
    await assertChargedExactly(user, before, expected.chargedMicros, 'LiteLLM stream with include_usage');
  });

  it('free models: the free tier pays 1 micro-USD per token, starter pays nothing', async () => {
    const completionTokens = 7;
    const totalTokens = promptTokens + completionTokens;
    for (const [tier, expectedMicros] of [['free', BigInt(totalTokens)], ['starter', 0n]]) {
      const user = await stack.createUser({ tier });
      const client = stack.client(user.apiKey);
      const before = await snapshot(user);
      const stream = await client.chat.completions.create({ model: OR_FREE, messages, stream: true, max_tokens: completionTokens });
      let usage;
      for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
      assert.equal(usage?.prompt_tokens, promptTokens, `${tier}: usage ${JSON.stringify(usage)}`);
      assert.equal(usage?.completion_tokens, completionTokens, `${tier}: usage ${JSON.stringify(usage)}`);
      assertReportedCost(usage, 0n, `${tier} on ${OR_FREE}`);
      const expected = expectedCharge({ tier, modelIsFree: true, providerPico: 0n, totalTokens });
      assert.equal(expected.chargedMicros, expectedMicros);
      await assertChargedExactly(user, before, expectedMicros, `${tier} tier streaming ${OR_FREE}`);
    }
  });
});

describe('a client that aborts mid-stream', () => {
  it('is billed for the full usage: tollgate drains the upstream to its usage chunk', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const before = await snapshot(user);
    const completionTokens = 16;
    const stream = await client.chat.completions.create(
      { model: OR_PAID, messages, stream: true, max_tokens: completionTokens },
      { headers: { 'x-mock-delay-ms': '100' } },
    );
    let contentChunks = 0;
    for await (const chunk of stream) {
      assert.ok(!chunk.usage, 'the usage chunk arrived before the client left: the stream was not still going');
      if (chunk.choices?.[0]?.delta?.content) contentChunks++;
      if (contentChunks === 2) break; // aborts the HTTP request
    }
    assert.equal(contentChunks, 2);
    const providerPico = openrouterCostPico(OR_PAID, promptTokens, completionTokens);
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens + completionTokens });
    const found = await waitForCharge(user, before.lastId, 'aborted stream');
    assert.equal(found.charged, expected.chargedMicros,
      `aborted stream: expected the full usage's charge ${expected.chargedMicros} micros (all ${completionTokens} tokens), got ${found.charged}`);
    assert.equal(found.balance.balance_micros, before.balance.balance_micros - expected.chargedMicros,
      `aborted stream: balance ${found.balance.balance_micros}, expected ${before.balance.balance_micros - expected.chargedMicros}`);
  });
});

describe('streams that fail upstream', () => {
  it('midstream-error after 3 chunks: the SDK throws the relayed error, and the generated tokens are billed', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const before = await snapshot(user);
    const stream = await client.chat.completions.create(
      { model: OR_PAID, messages, stream: true, max_tokens: 16 },
      { headers: { 'x-mock-fault': 'midstream-error', 'x-mock-fault-after': '3' } },
    );
    const { contents, thrown } = await readStream(stream);
    assert.ok(thrown instanceof APIError, `expected the SDK to throw an APIError for the error chunk, got ${thrown}`);
    assert.match(String(thrown.message), /Provider returned error/, `expected the upstream's error message, got ${thrown.message}`);
    assert.deepEqual(contents, ['tok0 ', 'tok1 ', 'tok2 '], `expected the 3 chunks before the error, got ${JSON.stringify(contents)}`);
    const found = await waitForCharge(user, before.lastId, 'midstream-error');
    assert.ok(found.charged > 0n, `midstream-error: expected a charge > 0 for the generated tokens, got ${found.charged}`);
    // Usage is absent, so tollgate counts tokens itself (o200k, its own
    // prompt count): bound it loosely by a whole 16-token answer with four
    // times the mock's prompt count.
    const ceiling = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico: openrouterCostPico(OR_PAID, promptTokens * 4, 16), totalTokens: 0 });
    assert.ok(found.charged <= ceiling.chargedMicros, `midstream-error: charged ${found.charged}, more than a full answer's ${ceiling.chargedMicros}`);
  });

  it('reset after 3 chunks: the client sees a broken stream, and a charge > 0 is recorded', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const before = await snapshot(user);
    const stream = await client.chat.completions.create(
      { model: OR_PAID, messages, stream: true, max_tokens: 16 },
      { headers: { 'x-mock-fault': 'reset', 'x-mock-fault-after': '3' } },
    );
    const { contents, finished, usages, thrown } = await readStream(stream);
    const usage = usages.at(-1);
    assert.ok(thrown || (!finished && !usage),
      `reset: expected an error or a stream cut short (no finish_reason, no usage), got a complete stream ${JSON.stringify({ contents, usage })}`);
    assert.deepEqual(contents, ['tok0 ', 'tok1 ', 'tok2 '], `reset: expected the 3 chunks before the reset, got ${JSON.stringify(contents)}`);
    const found = await waitForCharge(user, before.lastId, 'reset');
    assert.ok(found.charged > 0n, `reset: expected a charge > 0, got ${found.charged}`);
  });

  it('HTTP 500 before any byte: passed through, nothing charged', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const before = await snapshot(user);
    let thrown;
    try {
      const stream = await client.chat.completions.create(
        { model: OR_PAID, messages, stream: true, max_tokens: 16 },
        { headers: { 'x-mock-fault': '500' } },
      );
      for await (const chunk of stream) void chunk;
    } catch (e) {
      thrown = e;
    }
    assert.ok(thrown instanceof APIError && thrown.status === 500,
      `expected the SDK to throw a 500 APIError, got ${thrown} (status ${thrown?.status})`);
    const settled = await pollUntil(async () => {
      const b = await stack.balance(user.id);
      return b.reserved_micros === 0n ? b : undefined;
    }, POLL);
    assert.ok(settled, 'HTTP 500: the hold was not released');
    assert.equal(settled.balance_micros, before.balance.balance_micros,
      `HTTP 500: expected balance unchanged at ${before.balance.balance_micros}, got ${settled.balance_micros}`);
    const rows = await stack.newTransactions(user.id, before.lastId);
    assert.deepEqual(rows, [], `HTTP 500: expected no new transaction, got ${JSON.stringify(rows)}`);
  });
});

describe('ledger', () => {
  it('check-ledger passes on the live database', async () => {
    assertLedgerOk(await stack.checkLedger(), 'after the chat scenarios');
  });
});
