// Embeddings, speech and the model list through the OpenAI SDK
// (SPEC §2 TTS pricing, §3 free models, §5; brief items 3, 4, 9).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStack, sum, rawPost, assertLedgerOk, httpFetch } from './harness.mjs';
import {
  expectedCharge, litellmPricePico, openrouterModels, isFreeModel, ttsCharacters, usdToPico,
} from './money.mjs';

const EMBEDDING_MODEL = 'text-embedding-3-small'; // LiteLLM
const TTS_MODEL = 'tts-1'; // LiteLLM, priced per character
const LITELLM_MODELS = ['gpt-4o-mini', 'text-embedding-3-small', 'tts-1'];

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

async function chargesSince(userId, afterId) {
  const rows = await stack.newTransactions(userId, afterId);
  return { rows, charged: -sum(rows.filter((t) => t.type === 'charge').map((t) => t.amount_micros)) };
}

describe('embeddings (LiteLLM) through the SDK', () => {
  it('the SDK asks for base64, the vectors decode to the mock\'s floats, and the call is charged', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    const input = ['the quick brown fox', 'jumps over the lazy dog today'];
    const lastId = await stack.lastTransactionId(user.id);

    const { data, response } = await client.embeddings.create({ model: EMBEDDING_MODEL, input }).withResponse();

    // What went upstream: the SDK's default encoding, unchanged.
    const last = await stack.mockLastRequest();
    assert.equal(JSON.parse(last.body).encoding_format, 'base64',
      `expected the SDK's encoding_format "base64" forwarded unchanged, got ${last.body}`);

    // The same call asking for floats: the SDK's decoded vectors must equal them.
    const floats = await rawPost(stack, '/v1/embeddings', user.apiKey, { model: EMBEDDING_MODEL, input, encoding_format: 'float' });
    assert.equal(floats.status, 200, `float embeddings: expected 200, got ${floats.status}: ${floats.text}`);
    assert.equal(data.data.length, input.length, `expected ${input.length} vectors, got ${data.data.length}`);
    for (let i = 0; i < input.length; i++) {
      const decoded = data.data[i].embedding;
      const expected = floats.json.data[i].embedding;
      assert.ok(Array.isArray(decoded) && decoded.length > 0, `vector ${i}: expected decoded numbers, got ${JSON.stringify(decoded)}`);
      assert.deepEqual(decoded, expected, `vector ${i}: SDK-decoded base64 differs from the float answer`);
      for (const v of decoded) {
        assert.ok(Number.isInteger(v * 512) && Math.abs(v) <= 1, `vector ${i}: ${v} is not one of the mock's k/512 values`);
      }
    }

    // Price: usage.prompt_tokens × input_cost_per_token, + 10% (starter, paid model).
    const promptTokens = data.usage?.prompt_tokens;
    const words = input.reduce((n, s) => n + s.split(/\s+/).length, 0);
    assert.equal(promptTokens, words, `expected the mock's prompt_tokens ${words} (words), got ${JSON.stringify(data.usage)}`);
    const providerPico = BigInt(promptTokens) * litellmPricePico(EMBEDDING_MODEL, 'input_cost_per_token');
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: promptTokens });
    assert.equal(response.headers.get('x-tollgate-charged-micros'), String(expected.chargedMicros),
      `embeddings: x-tollgate-charged-micros expected ${expected.chargedMicros} (${providerPico} pico + markup), got ${response.headers.get('x-tollgate-charged-micros')}`);
    // Two calls were made (base64, then float): each charged the same.
    const { rows, charged } = await chargesSince(user.id, lastId);
    assert.equal(charged, 2n * expected.chargedMicros,
      `embeddings: expected two charges of ${expected.chargedMicros} micros, got ${charged} (${JSON.stringify(rows)})`);
  });
});

describe('speech (LiteLLM tts-1) through the SDK', () => {
  it('returns the binary body intact and charges non-whitespace code points × input_cost_per_character + markup', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const client = stack.client(user.apiKey);
    // ASCII, accents, CJK, an emoji (one code point, two UTF-16 units) and
    // whitespace Python counts as such (tab, newline, NBSP, em space, ideographic space).
    const input = 'Hello, wörld!\tTollgate\nmeters 語音 😀 speech\u00a0here\u2003and\u3000there.';
    const characters = ttsCharacters(input);
    const lastId = await stack.lastTransactionId(user.id);

    const { data: audio, response } = await client.audio.speech
      .create({ model: TTS_MODEL, input, voice: 'alloy', response_format: 'mp3' })
      .withResponse();
    const bytes = Buffer.from(await audio.arrayBuffer());

    // The same request straight to the mock gives the reference bytes.
    const direct = await httpFetch(`${stack.mockUrl}/v1/audio/speech`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-litellm-e2e', 'content-type': 'application/json' },
      body: JSON.stringify({ model: TTS_MODEL, input, voice: 'alloy', response_format: 'mp3' }),
    });
    assert.equal(direct.status, 200, `mock speech: ${direct.status}`);
    const reference = Buffer.from(await direct.arrayBuffer());
    assert.ok(reference.length > 0, 'the mock returned no audio');
    assert.equal(response.headers.get('content-type'), 'audio/mpeg', `expected audio/mpeg, got ${response.headers.get('content-type')}`);
    assert.ok(bytes.equals(reference), `speech body: expected the mock's ${reference.length} bytes intact, got ${bytes.length} bytes that differ`);

    const pricePico = litellmPricePico(TTS_MODEL, 'input_cost_per_character');
    assert.equal(pricePico, usdToPico('0.000015'), 'the fixture prices tts-1 at 1.5e-05 per character');
    const providerPico = BigInt(characters) * pricePico;
    const expected = expectedCharge({ tier: 'starter', modelIsFree: false, providerPico, totalTokens: 0 });
    assert.equal(response.headers.get('x-tollgate-charged-micros'), String(expected.chargedMicros),
      `speech: expected ${characters} characters × ${pricePico} pico + 10% = ${expected.chargedMicros} micros, got header ${response.headers.get('x-tollgate-charged-micros')}`);
    const { rows, charged } = await chargesSince(user.id, lastId);
    assert.equal(charged, expected.chargedMicros, `speech: ledger charged ${charged}, expected ${expected.chargedMicros} (${JSON.stringify(rows)})`);
  });
});

describe('models.list()', () => {
  const catalog = [...openrouterModels().values()];
  const freeIds = new Set(catalog.filter(isFreeModel).map((m) => m.id));

  it('a free-tier user sees exactly the free models', async () => {
    const user = await stack.createUser({ tier: 'free' });
    const ids = [];
    for await (const m of stack.client(user.apiKey).models.list()) ids.push(m.id);
    const got = new Set(ids);
    assert.equal(got.size, ids.length, `models.list(): duplicate ids in ${JSON.stringify(ids)}`);
    const extra = ids.filter((id) => !freeIds.has(id));
    const missing = [...freeIds].filter((id) => !got.has(id));
    assert.deepEqual(extra, [], `free tier: models that are not free were listed: ${JSON.stringify(extra)}`);
    assert.deepEqual(missing, [], `free tier: free models missing from the list: ${JSON.stringify(missing)}`);
    assert.ok(freeIds.size > 0);
  });

  it('a starter user also sees paid models, from both upstreams', async () => {
    const user = await stack.createUser({ tier: 'starter' });
    const ids = new Set();
    for await (const m of stack.client(user.apiKey).models.list()) ids.add(m.id);
    for (const id of ['openai/gpt-4o-mini', 'openai/o1-pro', ...LITELLM_MODELS, ...freeIds]) {
      assert.ok(ids.has(id), `starter: expected ${id} in models.list(), not there (got ${ids.size} ids)`);
    }
  });

  it('an unknown key gets 401', async () => {
    const res = await httpFetch(`${stack.url}/v1/models`, { headers: { authorization: 'Bearer tg_not-a-key' } });
    assert.equal(res.status, 401, `expected 401, got ${res.status}: ${await res.text()}`);
  });
});

describe('ledger', () => {
  it('check-ledger passes on the live database', async () => {
    assertLedgerOk(await stack.checkLedger(), 'after the endpoint scenarios');
  });
});
