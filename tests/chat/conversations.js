// SPDX-License-Identifier: MIT
// Conversations rendered through every template by tests/test_chat_templates.sh.
// Each entry: {name, messages, tools?: true, toolmsgs?: true}. `tools: true`
// passes the tool list below; `toolmsgs: true` marks conversations with
// assistant tool_calls and tool results (only sent to templates that support
// tools). Contents are plain strings, as chat_messages_prepare() leaves them.
"use strict";

const TOOLS = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "Get the current weather in a city",
      parameters: {
        type: "object",
        properties: {
          city: { type: "string", description: "City name, e.g. Paris" },
          unit: { type: "string", enum: ["celsius", "fahrenheit"], description: "Temperature unit" },
        },
        required: ["city"],
      },
    },
  },
  {
    type: "function",
    function: {
      name: "search",
      description: "Search the web",
      parameters: {
        type: "object",
        properties: {
          query: { type: "string" },
          max_results: { type: "integer", description: "How many results", default: 5 },
          tags: { type: "array", items: { type: "string" } },
          strict: { type: "boolean" },
        },
        required: ["query"],
      },
    },
  },
];

const sys = (content) => ({ role: "system", content });
const user = (content) => ({ role: "user", content });
const asst = (content, extra) => Object.assign({ role: "assistant", content }, extra || {});
const call = (id, name, args) => ({ id, type: "function", function: { name, arguments: JSON.stringify(args) } });
const tool = (id, content) => ({ role: "tool", tool_call_id: id, content });

const CONVERSATIONS = [
  { name: "single user", messages: [user("Hello")] },
  { name: "system + user", messages: [sys("You are a helpful assistant."), user("What is 2+2?")] },
  { name: "three turns", messages: [user("Hi"), asst("Hello! How can I help?"), user("Tell me a joke.")] },
  {
    name: "system + five turns",
    messages: [sys("Answer briefly."), user("Capital of France?"), asst("Paris."), user("And of Italy?"), asst("Rome."), user("Germany?")],
  },
  { name: "unicode", messages: [user("Привет 👋 你好 — ünïcödé ✓ naïve café"), asst("こんにちは 🌸 — ça va?"), user("Ελληνικά και עברית")] },
  { name: "empty user content", messages: [user("")] },
  { name: "empty assistant content", messages: [user("Say nothing."), asst(""), user("Thanks")] },
  { name: "padded content", messages: [user("  padded with spaces  \n"), asst("\n answer \n"), user("\tok\t")] },
  {
    name: "long history",
    messages: [
      user("one"), asst("1"), user("two"), asst("2"), user("three"), asst("3"),
      user("four"), asst("4"), user("five"), asst("5"), user("six"),
    ],
  },
  { name: "template-like text", messages: [user("{{ not a tag }} {% if %} {# c #} and \"quotes\", 'single', back\\slash")] },
  { name: "newlines", messages: [sys("line1\n\nline2\n"), user("a\nb\n\nc"), asst("x\ny"), user("end\n")] },
  { name: "final assistant turn", messages: [user("Write a haiku."), asst("Autumn moonlight—\na worm digs silently\ninto the chestnut.")] },
  { name: "system only", messages: [sys("You are terse.")] },
  {
    name: "reasoning_content",
    messages: [user("What is 17*3?"), asst("51", { reasoning_content: "17*3 = 51." }), user("And 17*4?")],
  },
  {
    name: "reasoning_content last",
    messages: [user("Solve x+1=3"), asst("x = 2", { reasoning_content: "Subtract 1 from both sides." })],
  },
  {
    name: "think tags in content",
    messages: [user("Hi"), asst("<think>\nThe user greets me.\n</think>\n\nHello there!"), user("Bye")],
  },
  { name: "json in content", messages: [user('{"a": [1, 2, {"b": null}], "c": "d"}'), asst("[]"), user("ok")] },
  { name: "tools offered", tools: true, messages: [sys("You can call tools."), user("What's the weather in Paris?")] },
  { name: "tools offered, no system", tools: true, messages: [user("Search for llamas.")] },
  {
    name: "tool call round trip",
    tools: true,
    toolmsgs: true,
    messages: [
      user("What's the weather in Paris?"),
      asst("", { tool_calls: [call("call12345", "get_weather", { city: "Paris", unit: "celsius" })] }),
      tool("call12345", '{"temperature": 21, "sky": "clear"}'),
      asst("It is 21 °C and clear in Paris."),
      user("Thanks!"),
    ],
  },
  {
    name: "tool call pending",
    tools: true,
    toolmsgs: true,
    messages: [
      sys("Use tools when useful."),
      user("Search for the tallest tower"),
      asst("", { tool_calls: [call("abcdefghi", "search", { query: "tallest tower", max_results: 3 })] }),
      tool("abcdefghi", "Burj Khalifa, 828 m"),
    ],
  },
  {
    name: "two tool calls",
    tools: true,
    toolmsgs: true,
    messages: [
      user("Weather in Paris and Rome?"),
      asst("", {
        tool_calls: [call("call00001", "get_weather", { city: "Paris" }), call("call00002", "get_weather", { city: "Rome" })],
      }),
      tool("call00001", "18 C"),
      tool("call00002", "25 C"),
      asst("Paris 18 °C, Rome 25 °C."),
    ],
  },
  {
    name: "tool call no tools list",
    toolmsgs: true,
    messages: [
      user("Weather?"),
      asst("", { tool_calls: [call("call99999", "get_weather", { city: "Oslo" })] }),
      tool("call99999", "-3 C"),
      user("Brr."),
    ],
  },
  { name: "developer role", developer: true, messages: [{ role: "developer", content: "Always answer in French." }, user("Hello")] },
  { name: "code question", messages: [user("Fix this:\n```c\nint main() { return 0 }\n```"), asst("Add a semicolon:\n```c\nreturn 0;\n```"), user("Thanks!")] },
  { name: "math and symbols", messages: [user("Is ∑ 1/n² = π²/6? Use <b>bold</b> & \"quotes\".")] },
  { name: "four turns no system", messages: [user("a"), asst("b"), user("c"), asst("d"), user("e")] },
  { name: "long single message", messages: [user("word ".repeat(300).trim())] },
];

module.exports = { TOOLS, CONVERSATIONS };
