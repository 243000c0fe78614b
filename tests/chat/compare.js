// SPDX-License-Identifier: MIT
// Compares tools/chatcheck output with the reference renderings.
// Usage: node compare.js CASES.jsonl REF.jsonl OUT.jsonl
// A case passes when both renderings are equal byte for byte, or when both
// sides refuse the conversation (the template raises or cannot handle it).
// Each template must also render at least MIN_RENDERED cases successfully.
// Prints per-template counts, the first mismatches, and "N passed, N failed";
// exits 0 when nothing failed.
"use strict";
const fs = require("fs");
const MIN_RENDERED = 20;
const [casesPath, refPath, outPath] = process.argv.slice(2);
const lines = (p) => fs.readFileSync(p, "utf8").split("\n").filter((l) => l.length);
const cases = lines(casesPath).map((l) => JSON.parse(l));
const refs = lines(refPath).map((l) => JSON.parse(l));
const outs = lines(outPath).map((l) => { try { return JSON.parse(l); } catch (e) { return { error: "bad line: " + l }; } });

const per = {};
let pass = 0, fail = 0, shown = 0;
const show = (s) => { if (shown++ < 12) console.log(s); };
for (let i = 0; i < cases.length; i++) {
  const c = cases[i], r = refs[i], o = outs[i];
  const s = (per[c.name] ??= { rendered: 0, both_error: 0, failed: 0, conversations: new Set() });
  const desc = `${c.name} / ${c.conversation} / agp=${c.add_generation_prompt} kwargs=${JSON.stringify(c.kwargs)}`;
  if (o === undefined) {
    s.failed++; fail++; show(`MISSING ${desc}`); continue;
  }
  const rs = typeof r === "string", os = typeof o === "string";
  if (rs && os && r === o) {
    s.rendered++; pass++; s.conversations.add(c.conversation);
  } else if (!rs && !os) {
    s.both_error++; pass++;
  } else {
    s.failed++; fail++;
    if (rs && os) {
      let k = 0;
      while (k < r.length && r[k] === o[k]) k++;
      show(`MISMATCH ${desc}\n  at char ${k}:\n  want ${JSON.stringify(r.slice(Math.max(0, k - 40), k + 60))}\n  got  ${JSON.stringify(o.slice(Math.max(0, k - 40), k + 60))}`);
    } else {
      show(`MISMATCH ${desc}\n  want ${JSON.stringify(rs ? r.slice(0, 200) : r)}\n  got  ${JSON.stringify(os ? o.slice(0, 200) : o)}`);
    }
  }
}
for (const [name, s] of Object.entries(per)) {
  let note = "";
  if (s.rendered < MIN_RENDERED) {
    note = `  FAIL: fewer than ${MIN_RENDERED} rendered cases`;
    fail++;
  }
  console.log(`${name}: ${s.rendered} rendered equal (${s.conversations.size} conversations), ${s.both_error} refused by both, ${s.failed} failed${note}`);
}
console.log(`${pass} passed, ${fail} failed`);
process.exit(fail ? 1 : 0);
