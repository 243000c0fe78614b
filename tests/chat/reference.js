// SPDX-License-Identifier: MIT
// Writes the test cases of tests/test_chat_templates.sh and their reference
// renderings by @huggingface/jinja (the implementation Hugging Face's
// JavaScript libraries use).
// Usage: node reference.js CASES.jsonl REF.jsonl
// CASES: one {template, messages, tools, add_generation_prompt, bos_token,
// eos_token, kwargs, name, conversation} per line (tools/chatcheck input);
// REF: the rendering as a JSON string, or {"error": message}, per line.
"use strict";
const fs = require("fs");
const path = require("path");
const { Template } = require("@huggingface/jinja");
const { TOOLS, CONVERSATIONS } = require("./conversations.js");

const [casesPath, refPath] = process.argv.slice(2);
const root = path.join(__dirname, "..", "..");
const templates = JSON.parse(fs.readFileSync(path.join(__dirname, "templates.json"), "utf8"));
const KWARGS = [{}, { enable_thinking: false }, { enable_thinking: true }];

const cases = [], refs = [];
for (const t of templates) {
  const src = fs.readFileSync(path.join(root, "tests", "data", "templates", t.file), "utf8");
  let tmpl = null, parseError = null;
  try {
    tmpl = new Template(src);
  } catch (e) {
    parseError = String(e.message || e);
  }
  for (const conv of CONVERSATIONS) {
    if (conv.toolmsgs && !t.tools) continue;
    if (conv.developer && !src.includes("developer")) continue;
    let messages = JSON.parse(JSON.stringify(conv.messages));
    if (t.null_tool_content)
      for (const m of messages) if (m.tool_calls && m.content === "") m.content = null;
    for (const agp of [true, false]) {
      for (const kwargs of KWARGS) {
        const c = {
          template: src, messages, tools: conv.tools && t.tools ? TOOLS : null,
          add_generation_prompt: agp, bos_token: t.bos, eos_token: t.eos, kwargs,
          name: t.name, conversation: conv.name,
        };
        let ref;
        if (parseError) {
          ref = { error: parseError };
        } else {
          try {
            ref = tmpl.render(Object.assign({}, kwargs, {
              messages: JSON.parse(JSON.stringify(messages)), tools: c.tools,
              add_generation_prompt: agp, bos_token: t.bos, eos_token: t.eos,
            }));
          } catch (e) {
            ref = { error: String(e.message || e) };
          }
        }
        cases.push(JSON.stringify(c));
        refs.push(JSON.stringify(ref));
      }
    }
  }
}
fs.writeFileSync(casesPath, cases.join("\n") + "\n");
fs.writeFileSync(refPath, refs.join("\n") + "\n");
