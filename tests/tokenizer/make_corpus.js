#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// make_corpus.js - writes tests/tokenizer/corpus.jsonl, the strings the
// tokenizer oracle test (tests/test_tokenizer_oracle.sh) encodes with the
// reference tokenizers and with engine/vocab.c. Deterministic: the same file
// every run (a fixed-seed generator, no clock, no locale).
//
//   node tests/tokenizer/make_corpus.js [OUT]    (default: next to this file)
//
// One JSON value per line: a string, or {"b64": "..."} for byte strings that
// are not valid UTF-8. Every string is well-formed UTF-16 (no lone
// surrogates) and holds no NUL, so it means the same to JSON, to JavaScript
// and to C. Categories and their minimum counts are checked at the end.
'use strict';

const fs = require('fs');
const path = require('path');

let seed = 0x9e3779b9;
function rnd() { // xorshift32
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed / 4294967296;
}
function pick(a) { return a[Math.floor(rnd() * a.length)]; }

const out = [];
const counts = {};
function add(cat, s) {
    counts[cat] = (counts[cat] || 0) + 1;
    out.push(typeof s === 'string' ? s : s);
}

// ---- English prose, punctuation, contractions ----
const prose = [
    'Hello world',
    'The quick brown fox jumps over the lazy dog.',
    "Don't stop believing; it's only the beginning.",
    "I'M NOT SHOUTING, YOU'RE SHOUTING!",
    "They'll say we'd've done it if we'd known.",
    "She's got the cat's toy, and the dog's bone's gone.",
    "WE'VE BEEN HERE BEFORE; WE'LL BE BACK. HE'D AGREE.",
    "rock 'n' roll isn't dead, y'all",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D 'Ll 'rE",
    'Mr. Smith went to Washington, D.C., on Jan. 3rd -- or was it the 4th?',
    'Wait... what?! Are you sure?? Yes!!! (Really.) [Definitely.] {Absolutely.}',
    'e.g., i.e., etc., vs. & so on; 100% sure — or maybe 99.9%…',
    '"Quoted text," she said, \'and single quotes\' too.',
    'A sentence with    several   spaces between words.',
    'Punctuation runs: ?!?!... ;;; ::: --- ___ *** ### @@@ $$$ %%% ^^^ &&& |||',
    'Email me at someone@example.com or visit https://example.org/path?q=1&r=2#frag.',
    'The year 1984 was not like "1984".',
    'Capitalized Words In A Title Case Sentence Are Common.',
    'lowercase only text without punctuation at all',
    'ALLCAPS TEXT WITH NUMBERS 123 AND SYMBOLS #!',
    'It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.',
    'Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse...',
    'To be, or not to be, that is the question:',
    'The café served crème brûlée and a piña colada to the naïve façade designer.',
    'Résumé, déjà vu, über, coöperate, Zürich, São Paulo, Kraków, Øresund, Ærø.',
    'Temperatures ranged from -40°C to +45°C (−40 °F to 113 °F).',
    'Math: ∀x ∈ ℝ, x² ≥ 0; ∑_{i=1}^{n} i = n(n+1)/2; √2 ≈ 1.41421; π ≠ 3.',
    'Arrows → ← ↑ ↓ ⇒ ⇐ and boxes ┌─┐ │ │ └─┘',
    'Currency: $5, €10, £20, ¥30, ₹40, ₩50, ₿0.001',
    'Tab\tseparated\tvalues\there',
    "It's 5 o'clock somewhere, isn't it?",
    "O'Brien's and McDonald's aren't the same.",
    'hello',
    'a',
    'I',
    '.',
    'ok.',
    'The End',
    'naïve coöperation',
    'Ünïcödé ÄÖÜ äöü ß ẞ',
];
for (const s of prose) add('prose', s);
const words = ['time', 'people', 'year', 'way', 'day', 'thing', 'man', 'world', 'life', 'hand', 'part',
    'child', 'eye', 'woman', 'place', 'work', 'week', 'case', 'point', 'government', 'company', 'number',
    'group', 'problem', 'fact', 'be', 'have', 'do', 'say', 'get', 'make', 'go', 'know', 'take', 'see',
    'come', 'think', 'look', 'want', 'give', 'use', 'find', 'tell', 'ask', 'seem', 'feel', 'try', 'leave',
    'call', 'good', 'new', 'first', 'last', 'long', 'great', 'little', 'own', 'other', 'old', 'right',
    'big', 'high', 'different', 'small', 'large', 'next', 'early', 'young', 'important', 'few', 'public',
    'bad', 'same', 'able', 'antidisestablishmentarianism', 'internationalization', 'tokenizer', "isn't",
    "can't", "won't", "we're", "they've", "I'd", "you'll", "it's"];
for (let i = 0; i < 40; i++) {
    const n = 3 + Math.floor(rnd() * 14);
    let s = '';
    for (let k = 0; k < n; k++) {
        let w = pick(words);
        if (rnd() < 0.15) w = w[0].toUpperCase() + w.slice(1);
        if (rnd() < 0.05) w = w.toUpperCase();
        s += (k ? ' ' : '') + w;
        if (rnd() < 0.1) s += pick([',', ';', ':', ' -', '!', '?']);
    }
    add('prose', s + pick(['.', '!', '?', '', '...', '."']));
}

// ---- CJK ----
const cjk = [
    '你好，世界！', '机器学习是人工智能的一个分支。', '我今天去商店买了一些苹果和香蕉。',
    '中华人民共和国成立于1949年10月1日。', '这是一个测试句子，用来检查分词器是否正确。',
    '北京是中国的首都，上海是最大的城市。', '請問洗手間在哪裡？', '繁體中文與簡體中文有些不同。',
    '学而时习之，不亦说乎？有朋自远方来，不亦乐乎？', '人工智能（AI）正在改变世界。',
    'こんにちは、世界！', '東京は日本の首都です。', '私は毎朝コーヒーを飲みます。',
    'カタカナとひらがなと漢字が混ざった文章です。', 'ありがとうございました。またお越しください。',
    'ﾊﾝｶｸｶﾀｶﾅ も あります', '吾輩は猫である。名前はまだ無い。', '日本語のテキスト',
    '안녕하세요, 세계!', '한국어는 한글로 씁니다.', '저는 학생입니다. 만나서 반갑습니다.',
    '대한민국의 수도는 서울입니다.', '오늘 날씨가 정말 좋네요!', '中文English混合text测试',
    'Python是一种编程语言，由Guido van Rossum创建。', '价格：￥1,299.00（含税）',
    '全角：ＡＢＣ１２３！？', '「引用」と『二重引用』', '【重要】お知らせ',
    '一二三四五六七八九十百千万亿', '𠀀𠀁𠀂 rare CJK extension B', '龘靐齉 complex characters',
];
for (const s of cjk) add('cjk', s);
const zh = '的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持音医拉刚';
for (let i = 0; i < 24; i++) {
    let s = '';
    const n = 4 + Math.floor(rnd() * 20);
    for (let k = 0; k < n; k++) s += zh[Math.floor(rnd() * zh.length)];
    if (rnd() < 0.4) s = pick(['', ' ', '  ', '\n']) + s + pick(['。', '，', '！', '？', ' ', '']);
    if (rnd() < 0.3) s += String(Math.floor(rnd() * 100000));
    add('cjk', s);
}

// ---- emoji ----
const emoji = [
    '😀', '😀😃😄😁', 'I ❤️ NY', '👍🏽', '👍🏻👍🏼👍🏽👍🏾👍🏿', '👨‍👩‍👧‍👦', '👩‍💻 coding', '🧑🏾‍🚀',
    '🏳️‍🌈', '🏴‍☠️', '🇯🇵🇺🇸🇫🇷🇩🇪', '🇬🇧 flag', '🏴󠁧󠁢󠁳󠁣󠁴󠁿 Scotland', '1️⃣2️⃣3️⃣ #️⃣ *️⃣', '🤷🏽‍♀️',
    '👨🏻‍🤝‍👨🏿', '❤️‍🔥', '😶‍🌫️', '🐕‍🦺', 'Party 🎉🎊🥳 time!', '☕️ and 🍰', '✔️ done ✅', '⚠️ warning',
    '🔥🔥🔥 hot', 'Text with emoji 🙂 in the middle.', '👋 Hello, 🌍!', '🧑‍🤝‍🧑', '👁️‍🗨️', '🫠🫡🫶',
    '🤖 + 🧠 = 💡', 'emoji😀without😀spaces', '👩🏽‍❤️‍💋‍👨🏿', '🇺🇳🇪🇺', '©️®️™️', '♻️⚛️☢️',
];
for (const s of emoji) add('emoji', s);

// ---- source code ----
const code = [
    '#include <stdio.h>\n\nint main(void)\n{\n    printf("hello, world\\n");\n    return 0;\n}\n',
    'static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }',
    'for (size_t i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}',
    'struct node { struct node *next; int value; };',
    '#define MAX(a, b) ((a) > (b) ? (a) : (b))',
    'if (rc < 0 && errno != EINTR) { perror("read"); goto fail; }',
    'char *p = malloc(n + 1);\nif (!p)\n    return -ENOMEM;\nmemcpy(p, s, n);\np[n] = \'\\0\';',
    'switch (c) {\ncase \'a\': x++; break;\ndefault: break;\n}',
    '/* a block comment */ // and a line comment\nint x = 0x7fffffff; unsigned long y = 18446744073709551615UL;',
    'typedef void (*cb_t)(void *ctx, int status);',
    'while(*s&&*s!=\' \')s++;',
    'x->y.z[i][j] = (float)w / 3.0f + 1e-6f;',
    'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
    'import numpy as np\nx = np.arange(10).reshape(2, 5)\nprint(x.T @ x)',
    'class Foo(Bar):\n    """Docstring."""\n\n    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n',
    'with open("data.txt", encoding="utf-8") as f:\n    lines = [l.rstrip("\\n") for l in f]',
    'print(f"{name!r}: {value:>10.3f}")',
    'lambda x: x ** 2 if x > 0 else -x',
    'try:\n    pass\nexcept (KeyError, ValueError) as e:\n    raise RuntimeError("bad") from e',
    '@decorator(arg=1)\nasync def handler(request):\n    await asyncio.sleep(0.1)',
    'd = {"a": 1, \'b\': [2, 3], "c": {"d": None}}',
    'if __name__ == "__main__":\n    main()',
    'const add = (a, b) => a + b;\nconsole.log(add(1, 2));',
    'function debounce(fn, ms) {\n  let t;\n  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };\n}',
    'let s = `template ${x + 1} literal`;',
    'document.querySelectorAll(\'.item\').forEach(el => el.classList.toggle("active"));',
    'export default class App extends React.Component { render() { return <div className="app">{this.props.children}</div>; } }',
    'const re = /^(?:[a-z0-9!#$%&\'*+/=?^_`{|}~-]+)@example\\.com$/i;',
    'fetch("/api/v1/items?limit=10").then(r => r.json()).catch(console.error);',
    'x ??= y?.z ?? 0; a ||= b; c &&= d;',
    'async function* gen() { yield* [1, 2, 3]; }',
    'JSON.stringify({a: [1, 2, {b: null}]}, null, 2)',
    '#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do\n  echo "$f"\ndone',
    'grep -rn "TODO" src/ | sort | uniq -c | sort -rn | head -20',
    'if [ -z "${VAR:-}" ]; then echo "unset" >&2; exit 1; fi',
    'find . -name \'*.o\' -print0 | xargs -0 rm -f',
    'awk \'{ s += $3 } END { printf "%.2f\\n", s / NR }\' data.tsv',
    'export PATH="$HOME/.local/bin:$PATH"',
    'curl -sSL -H "Authorization: Bearer $TOKEN" https://api.example.com/v1/models | jq .data[0].id',
    'tar -czf backup-$(date +%Y%m%d).tar.gz ~/docs 2>/dev/null || true',
    'SELECT id, name FROM users WHERE age >= 18 ORDER BY name LIMIT 10;',
    '<html><head><title>Test</title></head><body><p class="x">Hi &amp; bye</p></body></html>',
    '{"key": "value", "list": [1, 2.5, -3e10, true, false, null], "nested": {"a": "b"}}',
    'fn main() {\n    let v: Vec<i32> = (0..10).filter(|x| x % 2 == 0).collect();\n    println!("{:?}", v);\n}',
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}',
    'public static void main(String[] args) { System.out.println("Hello"); }',
    'SELECT COUNT(*) AS n FROM t GROUP BY k HAVING n > 1;',
    '    indented with four spaces\n        and eight',
    '\tindented with a tab\n\t\tand two tabs',
    'a=1;b=2;c=$((a+b));echo $c',
    'x = [i for i in range(100) if i % 3 == 0]  # comment',
    '```python\nprint("markdown fence")\n```',
    'key: value\nlist:\n  - one\n  - two\nnested:\n  a: 1',
    'diff --git a/f.c b/f.c\n--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n-int x;\n+long x;',
    'std::vector<std::unique_ptr<Foo>> v; v.emplace_back(std::make_unique<Foo>(42));',
];
for (const s of code) add('code', s);

// ---- whitespace ----
const ws = [
    ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '\r\n\r\n', ' \n ', '\t\t\n\t',
    ' leading space', '  two leading spaces', 'trailing space ', 'trailing spaces   ', '\nleading newline',
    'trailing newline\n', 'line one\nline two\nline three', 'crlf line one\r\nline two\r\n',
    'mixed \t \n \r\n whitespace', 'a\u00a0b non-breaking space', 'ideographic\u3000space',
    'en\u2002em\u2003thin\u2009spaces', 'line\u2028separator and paragraph\u2029separator',
    'vertical\u000btab and form\u000cfeed', 'next\u0085line (NEL)', '\ufeffbyte order mark at start',
    'zero\u200bwidth\u200cjoiners\u200d here', 'mongolian\u180evowel separator', 'ogham\u1680space',
    '                                                                                 long run of spaces',
    'word\n\n\n\n\nafter five newlines', '\t\t\t\ttabs before text', '   \n   \n   ',
    'x  \n  y', 'end with tab\t', ' \u00a0 \u00a0 mixed nbsp',
];
for (const s of ws) add('whitespace', s);

// ---- not NFC ----
const nonnfc = [
    'cafe\u0301', 'Cafe\u0301 au lait', 're\u0301sume\u0301', 'n\u0303o', 'pin\u0303a colada',
    'A\u030angstro\u0308m', 'u\u0308ber', 'Zu\u0308rich', 'a\u0300 la carte', 'e\u0302tre',
    '\u1100\u1161\u11a8', '\u1112\u1161\u11ab\u1100\u1173\u11af', '\u1109\u1165\u110b\u116e\u11af',
    'Vie\u0323\u0302t Nam', 'Ohm sign \u2126 and Angstrom sign \u212b', 'o\u0301\u0328 stacked marks',
    's\u0323\u0307 dot below and above', '\u0041\u030a\u0301 A ring acute', 'CJK compat \uf900\uf901',
    'Greek \u03b1\u0301\u03b5\u0301', 'Cyrillic \u0438\u0306 short i', 'e\u0301e\u0301e\u0301e\u0301',
    'ﬁ ligature stays, ① stays', '\u0301 leading combining mark', 'x\u0338 not-slash',
];
for (const s of nonnfc) add('non_nfc', s);

// ---- special-token lookalikes ----
const spec = [
    '<|im_start|>', '<|im_end|>', '<|endoftext|>', '<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n',
    '<|im_', '<|im_start', 'im_start|>', '<|endoftext', '<|endoftext|><|endoftext|>',
    '<s>', '</s>', '<s>Hello</s>', '<s> spaced </s>', '<unk>', '< s >', '<<s>>', '</s', 's>',
    '<think>\nreasoning\n</think>\n\nanswer', '<tool_call>{"name": "f"}</tool_call>', '<|fim_prefix|>def<|fim_suffix|>',
    'text<|im_end|>more text', ' <|im_start|> spaced', '<|IM_START|>', '<|im_start|><|im_start|>',
    '<|vision_start|><|image_pad|><|vision_end|>', '<<|im_start|>>', '|<|>|', '<s><s></s></s>',
];
for (const s of spec) add('special', s);

// ---- long numbers ----
const nums = [
    '1234567890', '3.14159265358979323846264338327950288419716939937510', '0000000000000001',
    '18446744073709551615', '-9223372036854775808', '1,000,000,000', '1e-300', '6.02214076e23',
    '192.168.100.254', '2024-01-31T23:59:59.999Z', '+1 (555) 010-9999', '0xDEADBEEFCAFEBABE',
    '4111 1111 1111 1111', '١٢٣٤٥٦٧٨٩٠ Arabic-Indic digits', '１２３４５ fullwidth digits',
    '12345678901234567890123456789012345678901234567890', '99.99%', '$1,234,567.89', '3/4 + 5/8 = 11/8',
    'v1.2.3-rc.4+build.567',
];
for (const s of nums) add('numbers', s);
for (let i = 0; i < 6; i++) {
    let s = '';
    const n = 8 + Math.floor(rnd() * 40);
    for (let k = 0; k < n; k++) s += String(Math.floor(rnd() * 10));
    add('numbers', s);
}

// ---- mixed scripts ----
const mixed = [
    'مرحبا بالعالم', 'اللغة العربية جميلة جدا.', 'هذا اختبار 123 للنص العربي',
    'नमस्ते दुनिया', 'हिन्दी भाषा भारत में बोली जाती है।', 'क्षत्रिय त्र ज्ञ',
    'Привет, мир!', 'Съешь же ещё этих мягких французских булок, да выпей чаю.', 'ЁЛКИ-ПАЛКИ',
    'Γειά σου Κόσμε!', 'Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.', 'ΑΒΓΔ αβγδ ς',
    'שלום עולם', 'สวัสดีชาวโลก', 'Xin chào thế giới', 'Բարեւ աշխարհ', 'გამარჯობა სამყაროვ',
    'English, русский, 中文, العربية, हिन्दी in one line', 'ᚠᚢᚦᚨᚱᚲ runes', 'Ⓐⓑⓒ circled',
    '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒔𝒄𝒓𝒊𝒑𝒕', 'ʕ•ᴥ•ʔ (╯°□°)╯︵ ┻━┻', 'Ελληνικά and English mixed',
    'Tiếng Việt có dấu', 'Türkçe: ığüşöç İĞÜŞÖÇ', 'Polski: zażółć gęślą jaźń', 'Ελλάδα 2024',
    'Español: ¿Dónde está? ¡Aquí!', 'Français: « guillemets » et l’apostrophe',
];
for (const s of mixed) add('mixed', s);

// ---- generated combinations, to pass 500 and stress the splitter ----
const bits = [...prose.slice(0, 10), ...cjk.slice(0, 10), ...emoji.slice(0, 10), ...mixed.slice(0, 10),
    ...nums.slice(0, 6), '<|im_start|>', '<s>', '  ', '\n', '\t', 'e\u0301'];
for (let i = 0; i < 140; i++) {
    const n = 2 + Math.floor(rnd() * 4);
    let s = '';
    for (let k = 0; k < n; k++) s += pick(bits) + pick(['', ' ', '\n', ', ', '  ']);
    add('combined', s);
}

// ---- invalid UTF-8 (base64) ----
const bad = [
    [0x80], [0xff], [0x61, 0x80, 0x62], [0xc3], [0x61, 0xe2, 0x82], [0xe2, 0x82, 0x61],
    [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xf0, 0x9f, 0x98],
    [0x48, 0x69, 0x20, 0xfe, 0x20, 0xe4, 0xbd, 0xa0, 0xe5, 0xa5], [0xf4, 0x90, 0x80, 0x80],
    [0xe0, 0x80, 0xaf], [0x74, 0x65, 0x73, 0x74, 0xc3, 0x28, 0x61],
    [0x3c, 0x7c, 0x69, 0x6d, 0x5f, 0xff, 0x73, 0x74, 0x61, 0x72, 0x74, 0x7c, 0x3e],
    [0xef, 0xbb, 0xbf, 0x41, 0x80],
];
for (const b of bad) add('invalid_utf8', { b64: Buffer.from(b).toString('base64') });

// ---- checks ----
const need = { cjk: 50, emoji: 30, code: 50, whitespace: 30, non_nfc: 20, special: 20, numbers: 20, invalid_utf8: 3 };
for (const [k, n] of Object.entries(need))
    if ((counts[k] || 0) < n)
        throw new Error(`category ${k}: ${counts[k] || 0} strings, need ${n}`);
if (out.length < 500)
    throw new Error(`${out.length} strings, need 500`);
for (const s of out)
    if (typeof s === 'string' && (!s.isWellFormed() || s.includes('\0')))
        throw new Error(`bad string ${JSON.stringify(s)}`);

const file = process.argv[2] || path.join(__dirname, 'corpus.jsonl');
fs.writeFileSync(file, out.map(s => JSON.stringify(s)).join('\n') + '\n');
process.stderr.write(`${file}: ${out.length} lines: ${JSON.stringify(counts)}\n`);
