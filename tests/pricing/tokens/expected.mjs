// Writes the expected token ids of every case below, as gpt-tokenizer 4.0.0
// encodes them, for tokens_test.cpp to compare with. Run by ctest as a
// fixture: node expected.mjs GPT_TOKENIZER_DIR OUT_FILE
//
// Output, one case per line, tab-separated, text as hex of its bytes:
//   text  ENCODING  HEX  COUNT  ID,ID,...
//   chat  ENCODING  ROLE_HEX:CONTENT_HEX[:NAME_HEX];...  COUNT
// Invalid UTF-8 cases are given as bytes and decoded with TextDecoder, which
// replaces each ill-formed subsequence with U+FFFD, the rule tollgate follows.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [dir, out] = process.argv.slice(2);
if (!dir || !out) {
  console.error('usage: node expected.mjs GPT_TOKENIZER_DIR OUT_FILE');
  process.exit(2);
}
const encodings = {};
for (const name of ['o200k_base', 'cl100k_base']) {
  encodings[name] = await import(pathToFileURL(join(dir, 'esm', 'encoding', `${name}.js`)).href);
}

// A seeded generator, so the long cases are the same on every run.
let seed = 20261124;
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
};
const pick = (alphabet, n) => Array.from({ length: n }, () => alphabet[Math.floor(random() * alphabet.length)]).join('');

const texts = [
  '',
  'a',
  'Hello, world!',
  'The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say we've done what you'd've wanted; it's JOHN'S car, isn't it? DON'T",
  "l'homme qu'il aime",
  '    four spaces, then\ttab\t\tand   three',
  'line one\nline two\r\nline three\n\n\nafter blanks\n   \n  indented',
  'trailing spaces   ',
  '\n',
  '   ',
  '1 12 123 1234 12345 123456789012345678901234567890 3.14159 1,000,000 -42 0x1F',
  '٣٤٥ ١٢٣٤٥ ൧൨൩ 四五六 Ⅻ ½',
  '日本語のテキストです。東京は大きな都市です。',
  '中文分词测试：我们今天去公园散步，天气很好！',
  '한국어 문장도 토큰으로 나뉩니다.',
  'नमस्ते दुनिया, यह हिन्दी का वाक्य है।',
  'क्षत्रिय द्वारा स्त्री',
  'بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ',
  'مرحبا بالعالم، كيف حالك؟',
  'שָׁלוֹם עוֹלָם',
  'Привет, мир! Ёжик в тумане.',
  'Ελληνικά γράμματα ΑΒΓ',
  'ภาษาไทยไม่มีช่องว่าง',
  'Zürich, São Paulo, Ærøskøbing, naïve café, Straße',
  'e\u0301 a\u0308 n\u0303 combining marks',
  'emoji: 😀 👍🏽 🇩🇪 ❤️ 👨‍👩‍👧‍👦 🧑🏿‍💻 🏳️‍🌈',
  '😀😀😀😀😀',
  'mixed 日本語 and English and हिन्दी and 😀 in one line',
  'int main(int argc, char** argv) {\n    return argc > 1 ? 0 : -1; // done\n}\n',
  'def f(x):\n\treturn [i**2 for i in range(x) if i % 3 == 0]\n',
  '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}',
  'https://example.com/a/b?c=d&e=f#g path/to/file.txt a//b',
  '<|endoftext|> is ordinary text here <|im_start|>',
  '!!! ??? ... --- *** ### $$$ %%% ^^^',
  'CamelCaseWords and snake_case_words and SCREAMING_CASE',
  'Ǆemal ǅemal ǆemal ᾈ titlecase',
  '\u00a0non-breaking\u2003em space\u3000ideographic',
  'tab\there\vvertical\fform feed',
  'a'.repeat(1000),
  ' '.repeat(1000) + 'x',
  '\n'.repeat(300),
  '9'.repeat(1001),
  pick('abcdefghijklmnopqrstuvwxyz', 3000),
  pick('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;\'"!?\n', 5000),
  pick('日本語中文한국어नमस्तेمرحبا😀👍 ', 2000),
];

// Bytes that are not UTF-8.
const invalid = [
  [0xff],
  [0x61, 0x80, 0x62],
  [0xe2, 0x82],
  [0xe2, 0x82, 0x41, 0xf0, 0x9f, 0x98],
  [0xc0, 0xaf, 0xed, 0xa0, 0x80, 0xf4, 0x90, 0x80, 0x80],
  [0x48, 0x69, 0x20, 0xf0, 0x9f, 0x98, 0x80, 0xfe, 0x20, 0x74, 0x68, 0x65, 0x72, 0x65],
  Array(700).fill(0xff),
];

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const lines = [];
const encodeText = (enc, text) => enc.encode(text, { disallowedSpecial: new Set() });
for (const [name, enc] of Object.entries(encodings)) {
  for (const text of texts) {
    const ids = encodeText(enc, text);
    lines.push(['text', name, hex(Buffer.from(text, 'utf8')), ids.length, ids.join(',')].join('\t'));
  }
  for (const bytes of invalid) {
    const ids = encodeText(enc, new TextDecoder('utf-8').decode(Uint8Array.from(bytes)));
    lines.push(['text', name, hex(bytes), ids.length, ids.join(',')].join('\t'));
  }
}

// Chat: the OpenAI cookbook's num_tokens_from_messages (3 per message, 1 per
// name, 3 to prime the reply) over gpt-tokenizer's counts.
const chats = [
  [],
  [{ role: 'user', content: 'Hello!' }],
  [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', name: 'example_user', content: 'New synergies will help drive top-line growth.' },
    { role: 'assistant', name: 'example_assistant', content: 'Things working well together will increase revenue.' },
    { role: 'user', content: 'こんにちは 😀' },
  ],
  [{ role: 'user', name: '', content: '' }],
];
for (const [name, enc] of Object.entries(encodings)) {
  for (const messages of chats) {
    let count = 3;
    const fields = [];
    for (const m of messages) {
      count += 3 + encodeText(enc, m.role).length + encodeText(enc, m.content).length;
      const parts = [hex(Buffer.from(m.role)), hex(Buffer.from(m.content))];
      if (m.name !== undefined) {
        count += 1 + encodeText(enc, m.name).length;
        parts.push(hex(Buffer.from(m.name)));
      }
      fields.push(parts.join(':'));
    }
    lines.push(['chat', name, fields.join(';'), count].join('\t'));
  }
}

writeFileSync(out, lines.join('\n') + '\n');
console.log(`wrote ${lines.length} cases to ${out}`);
