// 200 concurrent streams for users whose credit covers only part of them:
// admission by hold must never let a user overdraw (SPEC §4 rule 2; brief
// items 8, 9).
//
// Each user is a fresh starter ($30 of monthly credits) sending 40 streams
// to openai/o1-pro whose prompt alone costs about $0.90 (6,000 words at
// $0.00015 a token), so 40 calls would cost about $40: at most 30 can be
// paid for, whatever the timing, and the rest must be refused with 402.
// The completion is bounded (max_tokens 16, the mock answers 10), so the
// hold (prompt estimate + 16 tokens, + 10%) is never below the charge
// (6,003 prompt tokens by the mock's count + 10 tokens, + 10%) as long as
// tollgate's o200k count covers the 6,000 words it was sent.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, APIError, sum, pollUntil, assertLedgerOk } from './harness.mjs';
import { expectedCharge, openrouterPricePico, mockPromptTokens, usdToPico, numberToUsdText } from './money.mjs';

const USERS = 5;
const STREAMS_PER_USER = 40;
const MODEL = 'openai/o1-pro';
const PROMPT_WORDS = 6_000;
const MAX_TOKENS = 16;
const MOCK_TOKENS = 10;
const CHUNK_DELAY_MS = 20; // keeps the streams in flight together

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

describe('200 concurrent streams on limited balances', () => {
  it('some are refused with 402, none overdraws, balances equal their transactions, the ledger checks', async () => {
    const users = [];
    for (let i = 0; i < USERS; i++) users.push(await stack.createUser({ tier: 'starter' }));
    const startBalances = await Promise.all(users.map((u) => stack.balance(u.id)));

    const messages = [{ role: 'user', content: Array(PROMPT_WORDS).fill('a').join(' ') }];
    const promptTokens = mockPromptTokens(messages);
    const providerPico = BigInt(promptTokens) * openrouterPricePico(MODEL, 'prompt') +
      BigInt(MOCK_TOKENS) * openrouterPricePico(MODEL, 'completion');
    const perCall = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens + MOCK_TOKENS });
    const affordable = startBalances.map((b) => b.balance_micros / perCall.chargedMicros);
    assert.ok(affordable.every((n) => n < BigInt(STREAMS_PER_USER)),
      `setup: each user should afford fewer than ${STREAMS_PER_USER} calls of ${perCall.chargedMicros} micros, affords ${affordable}`);

    const outcomes = await Promise.all(users.flatMap((user) => {
      const client = stack.client(user.apiKey, { timeout: 120_000 });
      return Array.from({ length: STREAMS_PER_USER }, async () => {
        try {
          const stream = await client.chat.completions.create(
            { model: MODEL, messages, stream: true, max_tokens: MAX_TOKENS },
            { headers: { 'x-mock-tokens': String(MOCK_TOKENS), 'x-mock-delay-ms': String(CHUNK_DELAY_MS) } },
          );
          let usage;
          let content = 0;
          for await (const chunk of stream) {
            if (chunk.choices?.[0]?.delta?.content) content++;
            if (chunk.usage) usage = chunk.usage;
          }
          return { user: user.id, kind: 'ok', usage, content };
        } catch (e) {
          if (e instanceof APIError && e.status === 402) return { user: user.id, kind: '402', code: e.code, message: e.message };
          return { user: user.id, kind: 'error', error: `${e?.constructor?.name}: ${e?.message} (status ${e?.status})` };
        }
      });
    }));

    const unexpected = outcomes.filter((o) => o.kind === 'error');
    const tally = outcomes.reduce((t, o) => ({ ...t, [o.kind]: (t[o.kind] ?? 0) + 1 }), {});
    assert.ok(unexpected.length === 0,
      `expected every stream to succeed or get 402; outcomes ${JSON.stringify(tally)}, e.g. ${JSON.stringify(unexpected.slice(0, 3))}` +
      ` (tollgate: exit code ${stack.tollgate.child.exitCode}, signal ${stack.tollgate.child.signalCode})\n${stack.tollgate.logs()}`);
    for (const o of outcomes.filter((x) => x.kind === '402')) {
      assert.equal(o.code, 'insufficient_credits', `402: expected code insufficient_credits, got ${JSON.stringify(o)}`);
    }
    for (const o of outcomes.filter((x) => x.kind === 'ok')) {
      assert.equal(o.content, MOCK_TOKENS, `a successful stream: expected ${MOCK_TOKENS} content chunks, got ${o.content}`);
      assert.ok(o.usage, 'a successful stream: expected its usage chunk');
      assert.equal(o.usage.prompt_tokens, promptTokens, `usage: ${JSON.stringify(o.usage)}`);
      assert.equal(usdToPico(numberToUsdText(o.usage.cost)), providerPico, `usage.cost ${o.usage.cost}: expected ${providerPico} pico`);
    }

    for (const [i, user] of users.entries()) {
      const mine = outcomes.filter((o) => o.user === user.id);
      const ok = mine.filter((o) => o.kind === 'ok').length;
      const refused = mine.filter((o) => o.kind === '402').length;
      assert.ok(refused > 0, `user ${user.id}: expected some 402s (balance for ~${affordable[i]} of ${STREAMS_PER_USER}), got ${ok} ok / ${refused} refused`);
      assert.ok(ok > 0, `user ${user.id}: expected some calls admitted, got ${ok} ok / ${refused} refused`);

      const settled = await pollUntil(async () => {
        const b = await stack.balance(user.id);
        return b.reserved_micros === 0n ? b : undefined;
      }, { timeoutMs: 20_000, intervalMs: 100 });
      assert.ok(settled, `user ${user.id}: holds still reserved 20 s after every stream ended`);
      const floor = -settled.overage_limit_micros;
      assert.ok(settled.balance_micros >= floor,
        `user ${user.id}: overdrawn: balance ${settled.balance_micros} below -overage_limit ${floor} after ${ok} calls of ${perCall.chargedMicros}`);
      const rows = await stack.transactions(user.id);
      const total = sum(rows.map((t) => t.amount_micros));
      assert.equal(total, settled.balance_micros,
        `user ${user.id}: the transactions sum to ${total}, the balance says ${settled.balance_micros}`);
      const charged = -sum(rows.filter((t) => t.type === 'charge').map((t) => t.amount_micros));
      assert.equal(charged, BigInt(ok) * perCall.chargedMicros,
        `user ${user.id}: expected ${ok} charges of ${perCall.chargedMicros} micros = ${BigInt(ok) * perCall.chargedMicros}, the ledger charged ${charged}`);
      assert.equal(settled.balance_micros, startBalances[i].balance_micros - charged,
        `user ${user.id}: balance ${settled.balance_micros}, expected ${startBalances[i].balance_micros} - ${charged}`);
    }
    assertLedgerOk(await stack.checkLedger(), 'after 200 concurrent streams');
  });
});
