// SPDX-License-Identifier: MIT
// Integration tests of `moed serve` through the official `openai` npm client
// and raw sockets. Usage: node tests/server/api.test.js http://127.0.0.1:PORT
// Prints one line per check and a summary; exits 1 when any check fails.
// Chat checks are skipped (and said so) when the server reports that it has
// no chat template interpreter.
'use strict';
const net = require('net');
const OpenAI = require('openai');

const base = process.argv[2];
if (!base) {
  console.error('usage: node api.test.js http://127.0.0.1:PORT');
  process.exit(2);
}
const url = new URL(base);
const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'unused', maxRetries: 0, timeout: 30000 });
let pass = 0, fail = 0, skip = 0;
const failures = [];

function check(name, cond, detail) {
  if (cond) {
    pass++;
    console.log('ok    ' + name);
  } else {
    fail++;
    failures.push(name);
    console.log('FAIL  ' + name + (detail !== undefined ? ': ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)).slice(0, 600) : ''));
  }
}
function skipped(name, why) {
  skip++;
  console.log('skip  ' + name + ': ' + why);
}

async function http(method, path, body, headers = {}) {
  const opts = { method, headers: { ...headers } };
  if (body !== undefined) {
    opts.body = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    if (!opts.headers['Content-Type']) opts.headers['Content-Type'] = 'application/json';
  }
  const r = await fetch(base + path, opts);
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// An error reply: status, OpenAI's error object, and (when given) the param.
function isError(r, status, param) {
  const e = r.json && r.json.error;
  return r.status === status && e && typeof e.message === 'string' && e.message.length > 0 &&
    typeof e.type === 'string' && 'param' in e && 'code' in e &&
    (param === undefined || e.param === param);
}

// Raw HTTP over one socket: sends the chunks (with pauses), collects until
// the server closes or `until` matches, and returns the bytes as text.
function raw(chunks, { until, timeout = 5000, pause = 0 } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(Number(url.port), url.hostname);
    let out = '';
    let done = false;
    const finish = () => { if (!done) { done = true; s.destroy(); resolve(out); } };
    s.on('data', (d) => { out += d.toString('latin1'); if (until && until(out)) finish(); });
    s.on('close', finish);
    s.on('error', finish);
    setTimeout(finish, timeout);
    (async () => {
      for (const c of chunks) {
        if (done) return;
        s.write(c);
        if (pause) await new Promise((r) => setTimeout(r, pause));
      }
    })();
  });
}

const statuses = (text) => [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1]));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  // ---- the small endpoints ----
  let r = await http('GET', '/health');
  check('GET /health is 200 ok', r.status === 200 && r.json.status === 'ok', r.text);
  r = await http('GET', '/');
  check('GET / describes the server', r.status === 200 && r.json.name === 'moed' && Array.isArray(r.json.endpoints), r.text);
  const models = await client.models.list();
  const model = models.data[0].id;
  check('GET /v1/models lists the model', models.data.length === 1 && models.data[0].object === 'model' &&
    typeof models.data[0].created === 'number' && models.data[0].owned_by === 'moed', models.data);
  r = await http('GET', '/v1/models/' + encodeURIComponent(model));
  check('GET /v1/models/{id}', r.status === 200 && r.json.id === model, r.text);
  r = await http('GET', '/v1/models/gpt-4');
  check('GET /v1/models/unknown is 404 model_not_found', isError(r, 404) && r.json.error.code === 'model_not_found', r.text);

  // ---- completions ----
  const prompt = 'The quick brown fox jumps over the lazy dog. Once upon a time';
  const c1 = await client.completions.create({ model, prompt, max_tokens: 16, temperature: 0 });
  check('completion shape', /^cmpl-/.test(c1.id) && c1.object === 'text_completion' && typeof c1.created === 'number' &&
    c1.model === model && typeof c1.system_fingerprint === 'string' && c1.choices.length === 1 &&
    c1.choices[0].index === 0 && typeof c1.choices[0].text === 'string' && c1.choices[0].logprobs === null &&
    ['stop', 'length'].includes(c1.choices[0].finish_reason), c1);
  check('completion usage', c1.usage.prompt_tokens > 5 && c1.usage.completion_tokens > 0 &&
    c1.usage.total_tokens === c1.usage.prompt_tokens + c1.usage.completion_tokens &&
    typeof c1.usage.prompt_tokens_details.cached_tokens === 'number', c1.usage);
  check('max_tokens bounds the completion', c1.usage.completion_tokens <= 16 &&
    (c1.choices[0].finish_reason === 'stop' || c1.usage.completion_tokens === 16), c1.usage);
  const c4 = await client.completions.create({ model, prompt, max_tokens: 4, temperature: 0, ignore_eos: true });
  check('max_tokens 4 with ignore_eos: 4 tokens, finish length', c4.usage.completion_tokens === 4 &&
    c4.choices[0].finish_reason === 'length', c4);
  const c1b = await client.completions.create({ model, prompt, max_tokens: 16, temperature: 0 });
  check('temperature 0 is deterministic', c1b.choices[0].text === c1.choices[0].text);

  // Streaming equals non-streaming.
  let stext = '', sfinish = null, susage = null, nchunks = 0, sid = null, usageNullEveryChunk = true;
  const st = await client.completions.create({ model, prompt, max_tokens: 16, temperature: 0, stream: true,
    stream_options: { include_usage: true } });
  for await (const ch of st) {
    nchunks++;
    sid = sid || ch.id;
    if (ch.choices.length) {
      stext += ch.choices[0].text;
      if (ch.choices[0].finish_reason) sfinish = ch.choices[0].finish_reason;
      if (ch.usage !== null) usageNullEveryChunk = false;
    } else {
      susage = ch.usage;
    }
  }
  check('streamed completion text == non-streamed', stext === c1.choices[0].text, [stext, c1.choices[0].text]);
  check('streamed completion finish_reason', sfinish === c1.choices[0].finish_reason, sfinish);
  check('stream_options.include_usage: usage chunk with empty choices', susage &&
    susage.completion_tokens === c1.usage.completion_tokens && susage.prompt_tokens === c1.usage.prompt_tokens &&
    usageNullEveryChunk, susage);
  check('stream chunks share a cmpl- id', /^cmpl-/.test(sid) && nchunks >= 2);

  // Raw SSE framing.
  r = await http('POST', '/v1/completions', { prompt, max_tokens: 4, temperature: 0, stream: true });
  check('SSE: text/event-stream, data: lines, [DONE] last', r.status === 200 &&
    /text\/event-stream/.test(r.headers.get('content-type')) && /^data: \{/.test(r.text) &&
    r.text.endsWith('data: [DONE]\n\n') && !/"usage"/.test(r.text), r.text.slice(-200));

  // Stop strings.
  const full = await client.completions.create({ model, prompt, max_tokens: 24, temperature: 0, ignore_eos: true });
  const ft = full.choices[0].text;
  let stop = null;
  for (let i = 3; i + 3 <= ft.length && !stop; i++) {
    const cand = ft.slice(i, i + 3);
    if (cand.trim().length === 3 && ft.indexOf(cand) === i) stop = cand;
  }
  if (stop) {
    const s1 = await client.completions.create({ model, prompt, max_tokens: 24, temperature: 0, ignore_eos: true, stop: [stop, 'zzqqzz'] });
    check('stop string cuts the text before it, finish stop', s1.choices[0].text === ft.slice(0, ft.indexOf(stop)) &&
      s1.choices[0].finish_reason === 'stop', [stop, s1.choices[0].text, ft]);
    let t2 = '', f2 = null;
    for await (const ch of await client.completions.create({ model, prompt, max_tokens: 24, temperature: 0, ignore_eos: true, stop, stream: true })) {
      if (ch.choices.length) { t2 += ch.choices[0].text; f2 = ch.choices[0].finish_reason || f2; }
    }
    check('stop string when streaming', t2 === s1.choices[0].text && f2 === 'stop', [t2, s1.choices[0].text]);
  } else {
    skipped('stop strings', 'the greedy text has no usable 3-character piece: ' + JSON.stringify(ft));
  }

  // Seeds.
  // (The random tiny model is nearly certain after most prompts; these ids leave it unsure.)
  const seeded = (seed) => client.completions.create({ model, prompt: [1000, 2000, 3000, 4000], max_tokens: 16, temperature: 1.0, seed, ignore_eos: true });
  const sa = await seeded(1234), sb = await seeded(1234);
  check('same seed, same text', sa.choices[0].text === sb.choices[0].text, [sa.choices[0].text, sb.choices[0].text]);
  const texts = new Set();
  for (const sd of [1, 2, 3, 4]) texts.add((await seeded(sd)).choices[0].text);
  check('different seeds give different samples', texts.size > 1, [...texts]);

  // Cached tokens: the same long prompt twice.
  const longPrompt = 'In a distant land there lived a wise old owl who watched the forest every night. '.repeat(5);
  const l1 = await client.completions.create({ model, prompt: longPrompt, max_tokens: 2, temperature: 0 });
  const l2 = await client.completions.create({ model, prompt: longPrompt, max_tokens: 2, temperature: 0 });
  check('cached_tokens reported on the repeated prompt', l2.usage.prompt_tokens === l1.usage.prompt_tokens &&
    l2.usage.prompt_tokens_details.cached_tokens >= 16 &&
    l2.usage.prompt_tokens_details.cached_tokens < l2.usage.prompt_tokens, [l1.usage, l2.usage]);

  // Logprobs, completions layout.
  const lp = await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0, logprobs: 3, ignore_eos: true });
  const L = lp.choices[0].logprobs;
  check('completions logprobs layout', L && L.tokens.length === 8 && L.token_logprobs.length === 8 &&
    L.top_logprobs.length === 8 && L.text_offset.length === 8 &&
    L.token_logprobs.every((x) => typeof x === 'number' && x <= 0) &&
    L.top_logprobs.every((o) => Object.keys(o).length >= 1 && Object.keys(o).length <= 4) &&
    L.text_offset.every((x, i) => i === 0 || x >= L.text_offset[i - 1]), L);
  check('completions logprobs tokens spell the text', L.tokens.join('') === lp.choices[0].text, [L.tokens, lp.choices[0].text]);
  check('greedy token is the top alternative', L.tokens.every((t, i) => {
    const best = Math.max(...Object.values(L.top_logprobs[i]));
    return Math.abs(L.token_logprobs[i] - best) < 1e-4;
  }), L);
  let slp = [];
  for await (const ch of await client.completions.create({ model, prompt, max_tokens: 8, temperature: 0, logprobs: 3, ignore_eos: true, stream: true })) {
    if (ch.choices.length && ch.choices[0].logprobs) slp.push(...ch.choices[0].logprobs.tokens);
  }
  check('streamed completions logprobs', slp.join('') === L.tokens.join(''), slp);
  const lp0 = await client.completions.create({ model, prompt, max_tokens: 3, temperature: 0, logprobs: 0 });
  check('logprobs 0: the chosen tokens only', lp0.choices[0].logprobs.tokens.length >= 1 &&
    lp0.choices[0].logprobs.top_logprobs.every((o) => Object.keys(o).length === 1), lp0.choices[0].logprobs);

  // n and prompt forms.
  const nn = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 1, n: 3, seed: 7 });
  check('n=3 gives three choices with indices', nn.choices.length === 3 && nn.choices.map((c) => c.index).join() === '0,1,2' &&
    nn.usage.prompt_tokens === c1.usage.prompt_tokens, nn);
  const pa = await client.completions.create({ model, prompt: [prompt, 'Hello there'], max_tokens: 4, temperature: 0 });
  check('prompt as an array of strings: one choice each', pa.choices.length === 2 &&
    pa.choices[0].text === (await client.completions.create({ model, prompt, max_tokens: 4, temperature: 0 })).choices[0].text, pa);
  const tok = await http('POST', '/tokenize', { content: prompt });
  const pt = await client.completions.create({ model, prompt: tok.json.tokens, max_tokens: 16, temperature: 0 });
  check('prompt as token ids equals the text prompt', pt.choices[0].text === c1.choices[0].text &&
    pt.usage.prompt_tokens === c1.usage.prompt_tokens, [pt.choices[0].text, c1.choices[0].text]);
  const pids = await client.completions.create({ model, prompt: [tok.json.tokens, tok.json.tokens], max_tokens: 4, temperature: 0 });
  check('prompt as an array of token id arrays', pids.choices.length === 2 && pids.choices[0].text === pids.choices[1].text, pids);

  // Concurrent clients: greedy answers do not depend on what else runs.
  const conc = await Promise.all(Array.from({ length: 8 }, (_, i) => i % 2
    ? client.completions.create({ model, prompt, max_tokens: 16, temperature: 0 })
    : (async () => {
      let t = '';
      for await (const ch of await client.completions.create({ model, prompt, max_tokens: 16, temperature: 0, stream: true })) {
        if (ch.choices.length) t += ch.choices[0].text;
      }
      return { choices: [{ text: t }] };
    })()));
  check('8 concurrent clients (stream and not) all get the greedy text', conc.every((c) => c.choices[0].text === c1.choices[0].text),
    conc.map((c) => c.choices[0].text));

  // ---- chat ----
  const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Say something about owls.' }];
  r = await http('POST', '/v1/chat/completions', { model, messages, max_tokens: 4 });
  const chatOk = r.status === 200;
  {
    check('chat reply is 200', chatOk, r.text);
    const k1 = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
    const m = k1.choices[0].message;
    check('chat completion shape', /^chatcmpl-/.test(k1.id) && k1.object === 'chat.completion' && k1.model === model &&
      typeof k1.system_fingerprint === 'string' && m.role === 'assistant' && typeof m.content === 'string' &&
      ['stop', 'length'].includes(k1.choices[0].finish_reason) && k1.choices[0].logprobs === null &&
      k1.usage.total_tokens === k1.usage.prompt_tokens + k1.usage.completion_tokens, k1);
    check('reasoning_content only when non-empty', !('reasoning_content' in m) || m.reasoning_content.length > 0, m);
    let content = '', reasoning = '', role = null, first = true, roleFirst = false, fin = null, usage = null;
    for await (const ch of await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } })) {
      if (!ch.choices.length) { usage = ch.usage; continue; }
      const d = ch.choices[0].delta;
      if (first) { roleFirst = d.role === 'assistant'; first = false; }
      if (d.role) role = d.role;
      if (d.content) content += d.content;
      if (d.reasoning_content) reasoning += d.reasoning_content;
      if (ch.choices[0].finish_reason) fin = ch.choices[0].finish_reason;
      if (ch.object !== 'chat.completion.chunk') roleFirst = false;
    }
    check('chat stream: role delta first, chunk object', roleFirst && role === 'assistant');
    check('streamed chat content == non-streamed', content === m.content && reasoning === (m.reasoning_content || ''), [content, m.content]);
    check('streamed chat finish and usage', fin === k1.choices[0].finish_reason && usage &&
      usage.completion_tokens === k1.usage.completion_tokens, [fin, usage]);
    const k2 = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2, ignore_eos: true });
    const C = k2.choices[0].logprobs && k2.choices[0].logprobs.content;
    check('chat logprobs layout', Array.isArray(C) && C.length === 6 && C.every((e) => typeof e.token === 'string' &&
      typeof e.logprob === 'number' && Array.isArray(e.bytes) && e.top_logprobs.length === 2 &&
      e.top_logprobs.every((t) => typeof t.token === 'string' && typeof t.logprob === 'number' && Array.isArray(t.bytes))), C);
    const k3 = await client.chat.completions.create({ model, messages, max_completion_tokens: 3, temperature: 0, ignore_eos: true, n: 2 });
    check('chat max_completion_tokens and n=2', k3.choices.length === 2 && k3.usage.completion_tokens === 6, k3.usage);
    r = await http('POST', '/apply-template', { messages });
    check('/apply-template returns the prompt', r.status === 200 && typeof r.json.prompt === 'string' &&
      r.json.prompt.includes('Say something about owls.'), r.text);
    r = await http('POST', '/v1/chat/completions', { model, messages: [{ role: 'wizard', content: 'x' }] });
    check('chat: a bad role is 400', isError(r, 400), r.text);
    const kw = await http('POST', '/v1/chat/completions', { model, messages, max_tokens: 2, chat_template_kwargs: { enable_thinking: false } });
    check('chat_template_kwargs accepted', kw.status === 200, kw.text);
  }

  // ---- every accepted, ignored and rejected field ----
  const cbase = { model, prompt: 'Hi', max_tokens: 2 };
  const accepted = {
    max_tokens: 3, max_completion_tokens: 3, temperature: 0.7, top_p: 0.9, top_k: 40, min_p: 0.05, seed: 3,
    stop: '\n', presence_penalty: 0.5, frequency_penalty: 0.5, repetition_penalty: 1.1, logit_bias: { '15': 5 },
    logprobs: 2, n: 2, stream: false, ignore_eos: true, model,
  };
  for (const [k, v] of Object.entries(accepted)) {
    r = await http('POST', '/v1/completions', { ...cbase, [k]: v });
    check(`completions accepts ${k}`, r.status === 200 && r.json.object === 'text_completion', r.text);
  }
  r = await http('POST', '/v1/completions', { ...cbase, stream: true, stream_options: { include_usage: false } });
  check('completions accepts stream_options with stream', r.status === 200 && !/"usage"/.test(r.text), r.text.slice(0, 200));
  r = await http('POST', '/v1/completions', { ...cbase, temperature: null, stop: null, seed: null });
  check('null means the default', r.status === 200, r.text);
  for (const k of ['user', 'metadata', 'store', 'service_tier']) {
    const v = { user: 'u1', metadata: { a: 'b' }, store: false, service_tier: 'auto' }[k];
    r = await http('POST', '/v1/completions', { ...cbase, [k]: v });
    check(`completions ignores ${k}`, r.status === 200, r.text);
    r = await http('POST', '/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1, [k]: v });
    check(`chat ignores ${k}`, r.status === 200, r.text);
  }
  r = await http('POST', '/v1/chat/completions', { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1, parallel_tool_calls: true });
  check('chat ignores parallel_tool_calls without tools', r.status === 200, r.text);
  const chatBase = { model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 };
  const rejectedChat = {
    tools: [{ type: 'function', function: { name: 'f', parameters: {} } }], tool_choice: 'auto',
    response_format: { type: 'json_object' }, audio: { voice: 'alloy', format: 'mp3' }, modalities: ['text', 'audio'],
    functions: [{ name: 'f' }], function_call: 'auto', prediction: { type: 'content', content: 'x' },
    reasoning_effort: 'high', web_search_options: {}, foo: 1,
  };
  for (const [k, v] of Object.entries(rejectedChat)) {
    r = await http('POST', '/v1/chat/completions', { ...chatBase, [k]: v });
    check(`chat rejects ${k} with 400 naming it`, isError(r, 400) && (r.json.error.param === k || r.json.error.message.includes(k)), r.text);
  }
  r = await http('POST', '/v1/chat/completions', { ...chatBase, response_format: { type: 'text' }, tool_choice: 'none', tools: [], modalities: ['text'] });
  check('chat accepts response_format text, tool_choice none, empty tools, modalities text', r.status === 200, r.text);
  const rejectedCompl = { echo: true, suffix: 'end', best_of: 3, logprobs: true, top_logprobs: 2, messages: [], bar: 2 };
  for (const [k, v] of Object.entries(rejectedCompl)) {
    r = await http('POST', '/v1/completions', { ...cbase, [k]: v });
    check(`completions rejects ${k}=${JSON.stringify(v)} with 400 naming it`, isError(r, 400) &&
      (r.json.error.param === k || r.json.error.message.includes(k)), r.text);
  }

  // ---- out of range, wrong types ----
  const badValues = [
    ['temperature', 2.5], ['temperature', -0.1], ['temperature', 'hot'], ['top_p', 1.5], ['top_p', -1],
    ['max_tokens', -1], ['max_tokens', 0], ['max_tokens', 1e9], ['max_tokens', 2.5], ['max_completion_tokens', -5],
    ['top_k', -2], ['min_p', 2], ['presence_penalty', 3], ['frequency_penalty', -3], ['repetition_penalty', 0],
    ['n', 0], ['n', 17], ['logprobs', 21], ['logprobs', -1], ['seed', 'x'], ['stop', 5], ['stop', Array(17).fill('a')],
    ['stream', 'yes'], ['logit_bias', { abc: 1 }], ['logit_bias', { '1': 500 }], ['logit_bias', { '99999999': 1 }],
    ['prompt', 5], ['prompt', []], ['prompt', [1, 'a']], ['prompt', [-1]], ['ignore_eos', 1], ['model', 7],
    ['stream_options', { include_usage: true }],
  ];
  for (const [k, v] of badValues) {
    r = await http('POST', '/v1/completions', { ...cbase, [k]: v });
    check(`400 for ${k}=${JSON.stringify(v).slice(0, 30)}`, isError(r, 400, k), r.text);
  }
  r = await http('POST', '/v1/chat/completions', { ...chatBase, logprobs: true, top_logprobs: 21 });
  check('400 for top_logprobs 21', isError(r, 400, 'top_logprobs'), r.text);
  r = await http('POST', '/v1/chat/completions', { ...chatBase, top_logprobs: 2 });
  check('400 for top_logprobs without logprobs', isError(r, 400, 'top_logprobs'), r.text);
  r = await http('POST', '/v1/chat/completions', { ...chatBase, messages: 'hi' });
  check('400 for messages not an array', isError(r, 400, 'messages'), r.text);
  r = await http('POST', '/v1/chat/completions', { model });
  check('400 for missing messages', isError(r, 400, 'messages'), r.text);
  r = await http('POST', '/v1/completions', { model });
  check('400 for missing prompt', isError(r, 400, 'prompt'), r.text);
  r = await http('POST', '/v1/completions', { prompt: 'word '.repeat(400), max_tokens: 1 });
  check('400 context_length_exceeded for a prompt longer than the context', isError(r, 400) &&
    r.json.error.code === 'context_length_exceeded', r.text);
  r = await http('POST', '/v1/completions', { prompt: 'word '.repeat(100), max_tokens: 250 });
  check('400 when prompt + max_tokens exceed the context', isError(r, 400) && r.json.error.code === 'context_length_exceeded', r.text);
  r = await http('POST', '/v1/completions', { ...cbase, model: 'gpt-4o' });
  check('404 model_not_found for an unknown model', isError(r, 404, 'model') && r.json.error.code === 'model_not_found', r.text);
  try {
    await client.completions.create({ model, prompt: 'x', temperature: 9 });
    check('openai client raises BadRequestError', false);
  } catch (e) {
    check('openai client raises BadRequestError', e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'temperature', String(e));
  }
  try {
    await client.completions.create({ model: 'nope', prompt: 'x' });
    check('openai client raises NotFoundError', false);
  } catch (e) {
    check('openai client raises NotFoundError', e instanceof OpenAI.NotFoundError && e.code === 'model_not_found', String(e));
  }

  // ---- HTTP-level errors ----
  r = await http('GET', '/v2/nothing');
  check('404 unknown path', isError(r, 404), r.text);
  r = await http('GET', '/v1/completions');
  check('405 GET on a POST path', isError(r, 405), r.text);
  r = await http('DELETE', '/health');
  check('405 DELETE /health', isError(r, 405), r.text);
  r = await http('POST', '/v1/completions', '{"prompt": "x", ');
  check('400 truncated JSON', isError(r, 400), r.text);
  r = await http('POST', '/v1/completions', '{"prompt": "x"} trailing');
  check('400 trailing garbage after JSON', isError(r, 400), r.text);
  r = await http('POST', '/v1/completions', '[1,2,3]');
  check('400 body not an object', isError(r, 400), r.text);
  r = await http('POST', '/v1/completions', '');
  check('400 empty body', isError(r, 400), r.text);
  r = await http('POST', '/v1/completions', Buffer.from([0x7b, 0x22, 0x70, 0x72, 0x6f, 0x6d, 0x70, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
  check('400 invalid UTF-8', isError(r, 400), r.text);
  r = await http('POST', '/v1/completions', '{"prompt":"\\ud800"}');
  check('400 lone surrogate', isError(r, 400), r.text);
  r = await http('POST', '/v1/completions', '['.repeat(5000) + ']'.repeat(5000));
  check('400 deep nesting', isError(r, 400), r.text);
  r = await http('POST', '/v1/completions', '{"prompt": "x", "temperature": 1e400}');
  check('400 huge number', isError(r, 400), r.text);

  // Raw sockets: limits, pipelining, chunked bodies, Expect, keep-alive.
  let t = await raw(['POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n'],
    { until: (o) => /\r\n\r\n\{.*\}\}$/.test(o) });
  check('413 as soon as Content-Length is too large', statuses(t)[0] === 413 && /"error"/.test(t), t);
  t = await raw(['GET /health HTTP/1.1\r\nHost: x\r\nX-Long: ' + 'a'.repeat(70000) + '\r\n\r\n']);
  check('431 for oversized headers', statuses(t)[0] === 431 && /"error"/.test(t), t.slice(0, 300));
  const body = JSON.stringify({ prompt, max_tokens: 3, temperature: 0 });
  t = await raw(['GET /health HTTP/1.1\r\nHost: x\r\n\r\n' +
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}` +
    'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n' +
    'GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']);
  check('pipelined requests answered in order', statuses(t).join() === '200,200,404,200' &&
    t.indexOf('"status":"ok"') < t.indexOf('text_completion') && t.indexOf('text_completion') < t.indexOf('unknown path') &&
    t.indexOf('unknown path') < t.indexOf('"object":"list"'), t);
  const half = Math.floor(body.length / 2);
  t = await raw(['POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
    `${half.toString(16)}\r\n${body.slice(0, half)}\r\n`, `${(body.length - half).toString(16)}\r\n${body.slice(half)}\r\n`, '0\r\n\r\n'], { pause: 50 });
  check('chunked request body', statuses(t)[0] === 200 && /text_completion/.test(t), t);
  t = await raw(['POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n']);
  check('400 bad chunked encoding', statuses(t)[0] === 400 && /"error"/.test(t), t);
  t = await raw([`POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`, body],
    { pause: 300 });
  check('Expect: 100-continue', statuses(t).join() === '100,200' && /text_completion/.test(t), t);
  t = await raw(['GARBAGE\r\n\r\n']);
  check('400 for garbage', statuses(t)[0] === 400 && /"error"/.test(t), t);
  t = await raw(['GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n'],
    { pause: 100, until: (o) => statuses(o).length === 2 && o.endsWith('}') });
  check('keep-alive: two requests on one connection', statuses(t).join() === '200,200', t);
  t = await raw(['GET /health HTTP/1.0\r\n\r\n']);
  check('HTTP/1.0 request', statuses(t)[0] === 200 && /Connection: close/i.test(t), t);
  t = await raw([`POST /v1/completions HTTP/1.0\r\nContent-Length: ${Buffer.byteLength(JSON.stringify({ prompt, max_tokens: 3, stream: true }))}\r\n\r\n${JSON.stringify({ prompt, max_tokens: 3, stream: true })}`]);
  check('HTTP/1.0 stream ends with the connection', statuses(t)[0] === 200 && t.endsWith('data: [DONE]\n\n') && !/chunked/i.test(t), t.slice(0, 300));

  // ---- tokenize / detokenize ----
  r = await http('POST', '/tokenize', { content: 'Hello world', with_pieces: true });
  check('/tokenize with pieces', r.status === 200 && r.json.tokens.map((x) => x.piece).join('') === 'Hello world', r.text);
  const ids = (await http('POST', '/tokenize', { content: 'Hello <|im_start|> world' })).json.tokens;
  r = await http('POST', '/detokenize', { tokens: ids });
  check('/detokenize round trip (special tokens parsed and shown)', r.status === 200 && r.json.content === 'Hello <|im_start|> world', [ids, r.text]);
  r = await http('POST', '/tokenize', { content: 5 });
  check('/tokenize: 400 for a non-string content', isError(r, 400, 'content'), r.text);
  r = await http('POST', '/detokenize', { tokens: [1e12] });
  check('/detokenize: 400 for a bad id', isError(r, 400, 'tokens'), r.text);

  // ---- a client vanishing mid-stream cancels its request ----
  const s = net.connect(Number(url.port), url.hostname);
  const sb2 = JSON.stringify({ prompt, max_tokens: 200, ignore_eos: true, stream: true });
  await new Promise((res) => {
    s.on('data', () => { s.destroy(); res(); });
    s.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ${Buffer.byteLength(sb2)}\r\n\r\n${sb2}`);
    setTimeout(res, 5000);
  });
  let running = -1;
  for (let i = 0; i < 40; i++) {
    const m = (await http('GET', '/metrics')).text;
    running = Number((m.match(/^moed_engine_running_sequences (\d+)/m) || [])[1]);
    const active = Number((m.match(/^moed_active_requests (\d+)/m) || [])[1]);
    if (running === 0 && active === 0) break;
    await sleep(50);
  }
  check('disconnect mid-stream frees the sequence', running === 0, running);

  // ---- metrics, and still healthy ----
  r = await http('GET', '/metrics');
  check('/metrics in Prometheus text', r.status === 200 && /text\/plain/.test(r.headers.get('content-type')) &&
    /moed_requests_total\{endpoint="\/v1\/completions",status="200"\} \d+/.test(r.text) &&
    /moed_requests_total\{endpoint="\/v1\/completions",status="400"\} \d+/.test(r.text) &&
    /moed_time_to_first_token_seconds_bucket\{le="\+Inf"\} [1-9]/.test(r.text) &&
    /moed_inter_token_latency_seconds_count [1-9]/.test(r.text) && /^moed_queue_depth \d+/m.test(r.text) &&
    /^moed_prompt_cached_tokens_total [1-9]/m.test(r.text) && /^moed_generated_tokens_total [1-9]/m.test(r.text) &&
    /^moed_engine_kv_blocks\{state="free"\} \d+/m.test(r.text), r.text.slice(0, 2000));
  r = await http('GET', '/health');
  check('still healthy after everything', r.status === 200, r.text);
}

const guard = setTimeout(() => { console.log('FAIL  the tests did not finish in 150 s'); process.exit(1); }, 150000);
main().then(() => {
  clearTimeout(guard);
  console.log(`\n${pass} passed, ${fail} failed, ${skip} skipped`);
  if (fail) console.log('failed: ' + failures.join('; '));
  process.exit(fail ? 1 : 0);
}, (e) => {
  console.log('FAIL  exception: ' + (e && e.stack || e));
  console.log(`\n${pass} passed, ${fail + 1} failed, ${skip} skipped`);
  process.exit(1);
});
