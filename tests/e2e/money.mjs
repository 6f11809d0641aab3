// What a call should cost, computed here from the fixtures' price text with
// BigInt, independently of tollgate's pricing library (SPEC §2, §3).
//
// Units: pico-USD (1e-12 USD) for prices and costs, micro-USD for charges,
// both as BigInt. No Number ever holds money.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const PICO_PER_MICRO = 1_000_000n;

// Decimal USD text ("0.00000015", "1.5e-07", "7.1e-05", "0") to pico-USD;
// digits past the 12th decimal round half-up (SPEC §2). Negative or
// malformed text throws: the tests never expect one.
export function usdToPico(text) {
  const m = /^(\d+)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(String(text).trim());
  if (!m) throw new Error(`not a non-negative decimal USD amount: ${JSON.stringify(text)}`);
  const digits = m[1] + (m[2] ?? '');
  // value = digits × 10^(exp - fraction length); pico = value × 10^12
  const shift = 12 + Number(m[3] ?? 0) - (m[2] ?? '').length;
  const n = BigInt(digits);
  if (shift >= 0) return n * 10n ** BigInt(shift);
  return divRoundHalfUp(n, 10n ** BigInt(-shift));
}

// A JSON number the SDK already parsed (usage.cost) back to its decimal
// text: JavaScript prints the shortest text that reads back as the same
// double, which is the upstream's text whenever it had at most 15
// significant digits. Longer text could not survive the double, so refuse it.
export function numberToUsdText(x) {
  if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) throw new Error(`not a cost: ${x}`);
  const text = String(x);
  const significant = text.replace(/e.*$/i, '').replace('.', '').replace(/^0+/, '');
  if (significant.length > 15) throw new Error(`cost ${text} has more digits than a double keeps exactly`);
  return text;
}

export function divRoundHalfUp(n, d) {
  if (n < 0n || d <= 0n) throw new Error(`divRoundHalfUp(${n}, ${d}): only non-negative / positive`);
  return (n * 2n + d) / (d * 2n);
}

// The tier policies of SPEC §3, in basis points on provider cost, and the
// free tier's flat per-token markup.
const PERCENT_MARKUP_BPS = { starter: 1000n, professional: 500n, enterprise: 0n };
const FREE_TIER_MARKUP_PICO_PER_TOKEN = 1_000_000n;

// {providerPico, markupPico, chargedMicros} of one call.
export function expectedCharge({ tier, modelIsFree, providerPico, totalTokens }) {
  let markupPico;
  if (tier === 'free') {
    if (!modelIsFree) throw new Error('the free tier only calls free models');
    markupPico = BigInt(totalTokens) * FREE_TIER_MARKUP_PICO_PER_TOKEN;
  } else if (tier === 'starter' && modelIsFree) {
    markupPico = 0n;
  } else {
    const bps = PERCENT_MARKUP_BPS[tier];
    if (bps === undefined) throw new Error(`unknown tier ${tier}`);
    markupPico = divRoundHalfUp(providerPico * bps, 10_000n);
  }
  return { providerPico, markupPico, chargedMicros: divRoundHalfUp(providerPico + markupPico, PICO_PER_MICRO) };
}

// ---------------------------------------------------------------- catalogs

export const OPENROUTER_FIXTURE = 'openrouter-models-anuran-roy-2026-08-19-all-modalities.json';
export const LITELLM_FIXTURE = 'litellm-model-prices.json';

export function fixturesDir() {
  const dir = process.env.TOLLGATE_FIXTURES_DIR;
  if (dir) return dir;
  return new URL('../../../shared/fixtures', import.meta.url).pathname;
}

let openrouterCache;
// id -> the model object of the OpenRouter fixture the mock serves.
export function openrouterModels() {
  if (!openrouterCache) {
    const doc = JSON.parse(readFileSync(join(fixturesDir(), OPENROUTER_FIXTURE), 'utf8'));
    openrouterCache = new Map(doc.data.map((m) => [m.id, m]));
  }
  return openrouterCache;
}

export function openrouterModel(id) {
  const m = openrouterModels().get(id);
  if (!m) throw new Error(`${id} is not in ${OPENROUTER_FIXTURE}`);
  return m;
}

// Pico per token of a price key of an OpenRouter model (OpenRouter prices
// are decimal strings). Absent keys are 0n.
export function openrouterPricePico(id, key) {
  const text = openrouterModel(id).pricing[key];
  return text === undefined ? 0n : usdToPico(text);
}

// SPEC §3: free when the id ends in ":free", or when every price key is
// zero and the model outputs only text or embeddings. A "-1" or any other
// non-zero price, or a missing prompt/completion, makes it not free.
export function isFreeModel(model) {
  if (model.id.endsWith(':free')) return true;
  const p = model.pricing ?? {};
  if (p.prompt === undefined || p.completion === undefined) return false;
  const priceKeys = Object.entries(p).filter(([k]) => k !== 'discount' && k !== 'overrides');
  const allZero = (entries) => entries.every(([, v]) => typeof v === 'string' && /^0(\.0*)?$/.test(v));
  if (!allZero(priceKeys)) return false;
  for (const o of p.overrides ?? []) {
    if (!allZero(Object.entries(o).filter(([k]) => !['min_prompt_tokens', 'utc_start', 'utc_end'].includes(k))))
      return false;
  }
  const outputs = model.architecture?.output_modalities ?? [];
  return outputs.length > 0 && outputs.every((o) => o === 'text' || o === 'embeddings');
}

let litellmText;
// The text of one numeric field of a LiteLLM price-map entry, read from the
// file's own bytes (a JSON number such as 1.5e-07 must not go through a
// double before it becomes pico).
export function litellmPricePico(model, key) {
  litellmText ??= readFileSync(join(fixturesDir(), LITELLM_FIXTURE), 'utf8');
  const start = litellmText.indexOf(`\n    ${JSON.stringify(model)}: {`);
  if (start < 0) throw new Error(`${model} is not in ${LITELLM_FIXTURE}`);
  const end = litellmText.indexOf('\n    }', start);
  const entry = litellmText.slice(start, end);
  const m = new RegExp(`\\n        ${JSON.stringify(key)}: ([0-9.eE+-]+)`).exec(entry);
  if (!m) throw new Error(`${LITELLM_FIXTURE}: ${model} has no ${key}`);
  return usdToPico(m[1]);
}

// ---------------------------------------------------------------- the mock's counting rules

// The mock's prompt tokens (its README): whitespace-separated words of every
// message's content, plus 3 per message.
export function mockPromptTokens(messages) {
  let n = 0;
  for (const m of messages) n += words(m.content) + 3;
  return Math.max(n, 1);
}

function words(text) {
  const t = String(text).trim();
  return t === '' ? 0 : t.split(/[ \t\n\r\f\v]+/).length;
}

// Python's str.isspace (what LiteLLM and SPEC §2 count TTS characters by):
// Unicode White_Space-like characters of bidi class WS/B/S or category Zs.
const PYTHON_WHITESPACE = new Set([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
  0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

export function ttsCharacters(text) {
  let n = 0;
  for (const ch of text) if (!PYTHON_WHITESPACE.has(ch.codePointAt(0))) n++;
  return n;
}
