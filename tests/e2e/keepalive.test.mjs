// The SDK as people use it: one client, Node's pooled fetch, so calls follow
// each other on a kept-alive connection (SPEC §5 "Keep-alive on both
// sides"), streams and whole answers mixed, each charged exactly.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, sum } from './harness.mjs';
import { expectedCharge, openrouterPricePico, litellmPricePico, mockPromptTokens } from './money.mjs';

const CALLS = 6;
const messages = [{ role: 'user', content: 'one connection for everything' }];

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

describe('keep-alive', () => {
  it(`${CALLS} streamed calls in a row on one pooled client, then admin calls: all answered, all charged, server alive`, async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey, { fetch: globalThis.fetch });
    const promptTokens = mockPromptTokens(messages);
    let expectedTotal = 0n;
    for (let i = 0; i < CALLS; i++) {
      const openrouter = i % 2 === 0;
      const model = openrouter ? 'openai/gpt-4o-mini' : 'gpt-4o-mini';
      const completionTokens = 2 + i;
      let stream;
      try {
        stream = await client.chat.completions.create({ model, messages, stream: true, max_tokens: completionTokens });
        let content = 0;
        for await (const chunk of stream) if (chunk.choices?.[0]?.delta?.content) content++;
        assert.equal(content, completionTokens, `call ${i + 1} (${model}): expected ${completionTokens} content chunks, got ${content}`);
      } catch (e) {
        assert.fail(`call ${i + 1} of ${CALLS} (${model}) on a kept-alive connection failed: ${e?.message}` +
          ` (tollgate exit: code ${stack.tollgate.child.exitCode}, signal ${stack.tollgate.child.signalCode})\n${stack.tollgate.logs()}`);
      }
      const costPico = openrouter
        ? BigInt(promptTokens) * openrouterPricePico(model, 'prompt') + BigInt(completionTokens) * openrouterPricePico(model, 'completion')
        : BigInt(promptTokens) * litellmPricePico(model, 'input_cost_per_token') + BigInt(completionTokens) * litellmPricePico(model, 'output_cost_per_token');
      expectedTotal += expectedCharge({ tier: 'starter', modelIsFree: false, providerPico: costPico, totalTokens: 0 }).chargedMicros;
    }
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    assert.ok(models.includes('openai/gpt-4o-mini'), 'models.list() after the streams');

    const rows = await stack.transactions(user.id);
    const charged = -sum(rows.filter((t) => t.type === 'charge').map((t) => t.amount_micros));
    assert.equal(charged, expectedTotal, `expected ${CALLS} charges summing to ${expectedTotal} micros, got ${charged}`);
    const health = await fetch(`${stack.url}/healthz`);
    assert.equal(health.status, 200, `healthz after the calls: ${health.status}`);
  });
});
