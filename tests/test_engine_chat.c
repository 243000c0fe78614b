/* SPDX-License-Identifier: MIT */
/*
 * test_engine_chat.c - the Jinja interpreter behind engine/chat.h, construct
 * by construct: expressions, methods, filters, tests, statements, whitespace
 * control, the chat variables, errors (unknown filter or test, unclosed
 * block, raise_exception, undefined values) and the limits a hostile
 * template runs into; then chat_messages_prepare and the thinking tags.
 * Real templates against the reference renderer: tests/test_chat_templates.sh.
 */
#include "tests/testutil.h"

#include "engine/chat.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <string.h>

#define DEFAULT_MSGS "[{\"role\":\"user\",\"content\":\"hi\"}]"

/* Renders src; returns the output (malloc'd) or NULL with the error in err. */
static char *render_ex(const char *src, const char *msgs, const char *tools, const char *kwargs,
                       bool agp, char *err, size_t errlen)
{
    struct chat_template *t = NULL;
    err[0] = 0;
    if (chat_template_init(&t, src, "t", err, errlen) != 0)
        return NULL;
    cJSON *m = cJSON_Parse(msgs ? msgs : DEFAULT_MSGS);
    cJSON *tl = tools ? cJSON_Parse(tools) : NULL;
    cJSON *kw = kwargs ? cJSON_Parse(kwargs) : NULL;
    assert_non_null(m);
    struct chat_render_args a = {.messages = m, .tools = tl, .add_generation_prompt = agp,
                                 .bos_token = "<s>", .eos_token = "</s>", .kwargs = kw};
    char *out = NULL;
    size_t len = 0;
    int rc = chat_template_render(t, &a, &out, &len, err, errlen);
    if (rc == 0)
        assert_int_equal(len, strlen(out));
    else
        assert_int_equal(rc, ERR_TEMPLATE);
    cJSON_Delete(m);
    cJSON_Delete(tl);
    cJSON_Delete(kw);
    chat_template_free(t);
    return rc == 0 ? out : NULL;
}

static void check(const char *src, const char *want)
{
    char err[512];
    char *out = render_ex(src, NULL, NULL, NULL, true, err, sizeof err);
    if (!out)
        fail_msg("template %s\nfailed: %s", src, err);
    if (strcmp(out, want) != 0)
        fail_msg("template %s\nwant [%s]\ngot  [%s]", src, want, out);
    free(out);
}

static void check_err(const char *src, const char *want_substr)
{
    char err[512];
    char *out = render_ex(src, NULL, NULL, NULL, true, err, sizeof err);
    if (out)
        fail_msg("template %s\nrendered [%.200s], expected an error with '%s'", src, out, want_substr);
    if (!strstr(err, want_substr))
        fail_msg("template %s\nerror [%s] lacks '%s'", src, err, want_substr);
}

/* ---- expressions ---- */

static void test_literals_and_arithmetic(void **state)
{
    (void)state;
    check("{{ 1 + 2 * 3 }}", "7");
    check("{{ (1 + 2) * 3 }}", "9");
    check("{{ 7 // 2 }} {{ 7 % 3 }} {{ 7 / 2 }} {{ 2 ** 3 }} {{ -3 + 1 }}", "3 1 3.5 8 -2");
    check("{{ 1.0 }} {{ 2.5 }} {{ 0.1 + 0.2 }} {{ 4 / 2 }}", "1.0 2.5 0.30000000000000004 2.0");
    check("{{ 'a' + 'b' }} {{ 'n=' ~ 3 }} {{ 'x' ~ 1.5 ~ true }}", "ab n=3 x1.5true");
    check("{{ \"dq\" 'sq' }}|{{ 'esc\\n\\t\\'q\\'\\\\' }}|{{ '\\u00e9\\x41' }}", "dqsq|esc\n\t'q'\\|\xc3\xa9" "A");
    check("{{ true }} {{ false }} {{ none }}|{{ True }}{{ None }}", "true false |true");
    check("{{ [1, 'a', none] }} {{ {'k': 1, 'l': [true]} }}", "[1, \"a\", null] {\"k\": 1, \"l\": [true]}");
    check("{{ (1, 2) }} {{ () | length }}", "[1, 2] 0");
}

static void test_comparison_logic(void **state)
{
    (void)state;
    check("{{ 1 < 2 }} {{ 2 <= 1 }} {{ 3 > 2 }} {{ 3 >= 4 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }}",
          "true false true false true true");
    check("{{ 'b' > 'a' }} {{ none == none }} {{ x == none }}", "true true true");
    check("{{ 1 and 2 }} {{ 0 and 2 }} {{ 0 or 'z' }} {{ not 0 }} {{ not not 'a' }}",
          "2 0 z true true");
    check("{{ 'a' in 'cat' }} {{ 'q' not in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }}",
          "true true true true");
    check("{{ 'x' in undefined_thing }} {{ not 1 == 2 }}", "false true");
    check("{{ 'yes' if 1 else 'no' }} {{ 'yes' if 0 else 'no' }} {{ 'a' if 0 else 'b' if 1 else 'c' }}",
          "yes no b");
    check("[{{ 'only' if false }}]", "[]");
}

static void test_subscripts_slices_attrs(void **state)
{
    (void)state;
    check("{{ [1,2,3][0] }}{{ [1,2,3][-1] }}{{ 'héllo'[1] }}{{ [1][5] }}", "13é");
    check("{{ [1,2,3,4][1:3] }} {{ [1,2,3,4][::-1] }} {{ 'abcdef'[::2] }} {{ 'abc'[-2:] }}",
          "[2, 3] [4, 3, 2, 1] ace bc");
    check("{{ messages[0].role }} {{ messages[0]['content'] }} {{ messages|length }}", "user hi 1");
    check("{% set d = {'a': {'b': 'deep'}} %}{{ d.a.b }}{{ d['a']['b'] }}{{ d.missing }}", "deepdeep");
    check("{{ [10, 20].0 }}", "10");
}

static void test_string_methods(void **state)
{
    (void)state;
    check("[{{ '  x  '.strip() }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}]", "[x][x  ][  x]");
    check("[{{ '\\n\\n x \\n'.strip('\\n') }}][{{ 'xxhixx'.strip('x') }}][{{ 'abc'.rstrip('cb') }}]",
          "[ x ][hi][a]");
    check("{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ 'a'.startswith('ab') }}",
          "true true false");
    check("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a-b-c'.split('-', 1) }}",
          "[\"a\", \"b\", \"\", \"c\"] [\"a\", \"b\"] [\"a\", \"b-c\"]");
    check("{{ 'AbC'.upper() }} {{ 'AbC'.lower() }} {{ 'hello wORLD'.title() }} {{ 'hELLO'.capitalize() }}",
          "ABC abc Hello World Hello");
    check("{{ 'ÉCOLE'.lower() }} {{ 'straße'.upper() }}", "école STRASSE");
    check("{{ 'aaa'.replace('a', 'b') }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'ab'.replace('', '-') }}",
          "bbb bba -a-b-");
    check("{{ 'hello'.find('l') }} {{ 'hello'.count('l') }} {{ ', '.join(['a', 'b']) }}", "2 2 a, b");
    check("{{ 'ab'.length }} {{ 'x</think>y'.split('</think>')[-1] }}", "2 y");
}

static void test_dict_list_methods(void **state)
{
    (void)state;
    check("{% set d = {'a': 1, 'b': 2} %}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
          "{{ d.keys() }}{{ d.values() }}{{ d.get('a') }}{{ d.get('z', 'dflt') }}{{ d.get('z') }}",
          "a=1;b=2;[\"a\", \"b\"][1, 2]1dflt");
    check("{% set l = [1] %}{% set _ = l.append(2) %}{{ l }} {{ l.index(2) }} {{ l.count(1) }}",
          "[1, 2] 1 1");
    check("{% set d = {'b': 1, 'a': 2} %}{{ d.dictsort() }} {{ d|dictsort(by='value', reverse=true) }}",
          "[[\"a\", 2], [\"b\", 1]] [[\"a\", 2], [\"b\", 1]]");
}

/* ---- filters ---- */

static void test_filters_strings(void **state)
{
    (void)state;
    check("[{{ '  a b \\n'|trim }}][{{ 'xax'|trim('x') }}]", "[a b][a]");
    check("{{ 'abc'|upper }} {{ 'ABC'|lower }} {{ 'ab cd'|title }} {{ 'aB'|capitalize }}", "ABC abc Ab Cd Ab");
    check("{{ 'aXbX'|replace('X', '-') }} {{ 'a<b>&\"\\''|e }} {{ 'x'|escape }} {{ '<b>'|safe }}",
          "a-b- a&lt;b&gt;&amp;&#34;&#39; x <b>");
    check("{{ 'l1\\nl2\\n\\nl3'|indent(2) }}|{{ 'a\\nb'|indent(first=true) }}",
          "l1\n  l2\n\n  l3|    a\n    b");
    check("{{ '42'|int }} {{ '3.9'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ '2.5'|float }} {{ 3|float }} {{ -2|abs }} {{ 2.7|int }}",
          "42 3 0 7 2.5 3.0 2 2");
    check("{{ 5|string ~ 'x' }} {{ [1]|string }} {{ true|string }} {{ 'héllo'|length }} {{ 'ab'|count }}",
          "5x [1] true 5 2");
    check("{{ 'ab'|list }} {{ 'abc'|first }}{{ 'abc'|last }} {{ 'abc'|reverse }}", "[\"a\", \"b\"] ac cba");
}

static void test_filters_lists(void **state)
{
    (void)state;
    check("{{ [3,1,2]|sort }} {{ [3,1,2]|sort(reverse=true) }} {{ ['b','A','c']|sort }} {{ ['b','A']|sort(case_sensitive=true) }}",
          "[1, 2, 3] [3, 2, 1] [\"A\", \"b\", \"c\"] [\"A\", \"b\"]");
    check("{{ [{'n': 2}, {'n': 1}]|sort(attribute='n') }}", "[{\"n\": 1}, {\"n\": 2}]");
    check("{{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ [1,2,3]|length }} {{ [1,2,3]|count }} {{ []|first }}",
          "1 3 3 3 ");
    check("{{ [1,2]|reverse }} {{ [1,2,1,'a','a']|unique }} {{ ['a','b']|join }} {{ ['a','b']|join(', ') }} {{ [1,2.5,none,true]|join('|') }}",
          "[2, 1] [1, 2, \"a\"] ab a, b 1|2.5||true");
    check("{% set u = [{'n': 'a', 'r': 'x'}, {'n': 'b'}] %}{{ u|map(attribute='n')|join(',') }} "
          "{{ u|map(attribute='r', default='-')|list }} {{ u|join(',', attribute='n') }}",
          "a,b [\"x\", \"-\"] a,b");
    check("{{ ['a ', ' b']|map('trim')|list }} {{ [1, 0, 2]|select|list }} {{ [1, 0, 2]|reject|list }} "
          "{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3]|reject('equalto', 2)|list }}",
          "[\"a\", \"b\"] [1, 2] [0] [1, 3] [1, 3]");
    check("{% set m = [{'role': 'user'}, {'role': 'system'}, {'x': 1}] %}"
          "{{ m|selectattr('role', 'equalto', 'user')|list|length }} "
          "{{ m|rejectattr('role', 'equalto', 'user')|list|length }} "
          "{{ m|selectattr('role')|list|length }} {{ m|selectattr('role', 'defined')|list|length }} "
          "{{ m|rejectattr('role', 'undefined')|list|length }}",
          "1 2 2 2 2");
    check("{{ {'a': 1}|items }} {{ {'a': 1}|length }} {{ [1,2]|list }} {{ [1, 5, 3]|max }} {{ [4, 2]|min }} {{ [1, 2]|sum }}",
          "[[\"a\", 1]] 1 [1, 2] 5 2 3");
    check("{{ undefined_x|default('d') }} {{ ''|default('d') }} {{ ''|default('d', true) }} {{ 0|d('z', boolean=true) }} {{ 'v'|default }}",
          "d  d z v");
}

static void test_filter_tojson(void **state)
{
    (void)state;
    check("{{ {'a': 'é\"\\n', 'b': [1, 2.5, true, none], 'c': {}} | tojson }}",
          "{\"a\": \"é\\\"\\n\", \"b\": [1, 2.5, true, null], \"c\": {}}");
    check("{{ {'a': [1, {'b': []}]} | tojson(indent=2) }}",
          "{\n  \"a\": [\n    1,\n    {\n      \"b\": []\n    }\n  ]\n}");
    check("{{ 'é😀'|tojson(ensure_ascii=true) }} {{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} "
          "{{ [1, {'k': 2}]|tojson(separators=(',', ':')) }} {{ undefined_y|tojson }} {{ '\\x01'|tojson }}",
          "\"\\u00e9\\ud83d\\ude00\" {\"a\": 2, \"b\": 1} [1,{\"k\":2}] null \"\\u0001\"");
    check("{{ messages|tojson }}", "[{\"role\": \"user\", \"content\": \"hi\"}]");
}

/* ---- tests ---- */

static void test_tests(void **state)
{
    (void)state;
    check("{{ x is defined }} {{ x is undefined }} {{ messages is defined }} {{ none is none }} {{ 1 is not none }}",
          "false true true true true");
    check("{{ 'a' is string }} {{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ 1 is integer }} {{ 1.5 is float }}",
          "true true true false true true");
    check("{{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ 'a' is sequence }}",
          "true false true true false true");
    check("{{ true is true }} {{ 1 is true }} {{ false is false }} {{ true is boolean }} {{ range is callable }}",
          "true false true true true");
    check("{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }}", "true true true false");
    check("{{ 'a' is equalto 'a' }} {{ 1 is eq 2 }} {{ 2 is == 2 }} {{ 2 is ne 3 }} {{ 2 is in [1, 2] }} {{ 'a' is in 'cat' }}",
          "true false true true true true");
    check("{{ 1 is lt 2 }} {{ 1 is gt 2 }} {{ 'abc' is lower }} {{ 'ABC' is upper }}", "true false true true");
}

/* ---- statements ---- */

static void test_for_loops(void **state)
{
    (void)state;
    check("{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ x }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
          "{{ loop.revindex }}{{ loop.revindex0 }};{% endfor %}",
          "10atruefalse332;21bfalsefalse321;32cfalsetrue310;");
    check("{% for x in [1, 2, 3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }} {% endfor %}", "<1>2 1<2>3 2<3> ");
    check("{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in [1] %}{{ x }}{% else %}no{% endfor %}",
          "empty|1");
    check("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}/{{ loop.length }} {% endfor %}", "2/2 4/2 ");
    check("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}", "3,7,");
    check("{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %} {% for c in 'hé' %}[{{ c }}]{% endfor %}", "xy [h][é]");
    check("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}",
          "0134");
    check("{% for x in range(3) %}{% for y in range(2) %}{{ loop.index }}{% endfor %}{{ loop.index }}|{% endfor %}",
          "121|122|123|");
    check("{% for x in range(2, 8, 3) %}{{ x }}{% endfor %}{% for x in range(3, 0, -1) %}{{ x }}{% endfor %}", "25321");
    check("{% for m in messages[::-1] %}{{ m.role }}{% endfor %}", "user");
}

static void test_if_set(void **state)
{
    (void)state;
    check("{% if 0 %}a{% elif 1 %}b{% else %}c{% endif %}{% if '' %}x{% else %}y{% endif %}{% if [0] %}z{% endif %}",
          "byz");
    check("{% set x = 1 %}{% set y = x + 1 %}{{ x }}{{ y }}{% set a, b = [3, 4] %}{{ a }}{{ b }}", "1234");
    check("{% set blk %}inner {{ 1 + 1 }}{% endset %}[{{ blk }}]", "[inner 2]");
    check("{% set ns = namespace(n=0, s='') %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
          "3 012");
    check("{% set x = 'outer' %}{% for i in [1] %}{% set x = 'inner' %}{% endfor %}{{ x }}", "outer");
    check("{% if true %}{% set x = 'visible' %}{% endif %}{{ x }}", "visible");
    check("{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", "12");
}

static void test_macros_call(void **state)
{
    (void)state;
    check("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
          "{{ greet('Ann') }} {{ greet('Bob', 'Hi') }} {{ greet(greeting='Yo', name='Cy') }}",
          "Hello, Ann! Hi, Bob! Yo, Cy!");
    check("{% macro f() %}{{ varargs|length }}{{ kwargs.k }}{% endmacro %}{{ f(1, 2, k='v') }}", "2v");
    check("{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}"
          "{% call wrap('b') %}bold {{ 1 }}{% endcall %}",
          "<b>bold 1</b>");
    check("{% macro rows(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}"
          "{% call(item) rows([1, 2]) %}[{{ item }}]{% endcall %}",
          "[1][2]");
    check("{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }}",
          "120");
    check("{% filter upper %}abc{{ 'd' }}{% endfilter %}", "ABCD");
}

static void test_whitespace_control(void **state)
{
    (void)state;
    /* HF's apply_chat_template: trim_blocks and lstrip_blocks on, one
     * trailing newline dropped. */
    check("{% if true %}\nyes\n{% endif %}\n", "yes\n");
    check("a\n    {% if true %}\n    b\n    {% endif %}\nc", "a\n    b\nc");
    check("a  {%- if true -%}  b  {%- endif -%}  c", "abc");
    check("x  {{- 'y' -}}  z", "xyz");
    check("a {# comment #} b {#- trimmed -#} c", "a  bc");
    check("  {{ 'expr keeps indentation' }}", "  expr keeps indentation");
    check("{% for x in [1, 2] %}\n{{ x }}\n{% endfor %}", "1\n2\n");
    check("{%- generation %}kept{% endgeneration -%}", "kept");
}

static void test_globals_variables(void **state)
{
    (void)state;
    char err[512];
    char *out = render_ex("{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}"
                          "{{ eos_token }}{% if add_generation_prompt %}GEN{% endif %}{{ tools is none }}"
                          "{{ enable_thinking }}{{ extra.k }}",
                          "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"u\"}]",
                          NULL, "{\"enable_thinking\": false, \"extra\": {\"k\": \"v\"}}", true, err,
                          sizeof err);
    assert_non_null(out);
    assert_string_equal(out, "<s>system:s;user:u;</s>GENtruefalsev");
    free(out);
    out = render_ex("{% if not add_generation_prompt %}no{% endif %}{% for t in tools %}{{ t.name }}{% endfor %}",
                    NULL, "[{\"name\":\"f1\"},{\"name\":\"f2\"}]", NULL, false, err, sizeof err);
    assert_non_null(out);
    assert_string_equal(out, "nof1f2");
    free(out);
    check("{{ range(3)|list }} {{ strftime_now('%Y')|length }} {{ dict(a=1) }}", "[0, 1, 2] 4 {\"a\": 1}");
}

/* ---- errors and limits ---- */

static void test_errors(void **state)
{
    (void)state;
    check_err("line one\n{{ 'x'|wordcount }}", "t:2: unsupported filter 'wordcount'");
    check_err("{{ 1 is prime }}", "unsupported test 'prime'");
    check_err("{% for x in y %}\nno end", "t:1: unclosed 'for' block");
    check_err("{% if x %}a{% else %}b", "unclosed 'if' block");
    check_err("{% macro m() %}", "unclosed 'macro' block");
    check_err("\n\n{% raw %}x{% endraw %}", "t:3: unsupported statement 'raw'");
    check_err("{% include 'x.j2' %}", "unsupported statement 'include'");
    check_err("{% endif %}", "unexpected 'endif'");
    check_err("{{ 1 + }}", "unexpected");
    check_err("{{ 'unterminated }}", "unterminated string");
    check_err("{{ foo(1) }}", "unknown function 'foo'");
    check_err("{{ raise_exception('Only user and assistant roles are supported!') }}",
              "Only user and assistant roles are supported!");
    check_err("{{ 'a' ~ none }}", "none");
    check_err("{{ 1 + 'a' * 2 }}", "unsupported operand");
    check_err("{% set x = 1 %}{% set x.y = 2 %}", "only of a namespace");
    check_err("{{ 'x'.nosuch() }}", "unknown function 'nosuch'");
    check_err("{% for a, b in [[1, 2, 3]] %}{% endfor %}", "too many values");
    check_err("{{ 1 // 0 }}", "division by zero");
    check_err("{{ [1]|tojson(indent='x') }}", "indent");
}

static void test_undefined(void **state)
{
    (void)state;
    /* As Jinja's default Undefined: prints as nothing, is false, iterates
     * as empty, has length 0, takes a default; reading an attribute of it
     * is an error. */
    check("[{{ nope }}][{% if nope %}t{% else %}f{% endif %}][{% for x in nope %}x{% else %}e{% endfor %}]"
          "[{{ nope|length }}][{{ nope|default('d') }}][{{ nope is defined }}][{{ messages[0].missing }}]",
          "[][f][e][0][d][false][]");
    check_err("{{ nope.attr }}", "undefined");
    check_err("{{ nope[0] }}", "undefined");
    check_err("{{ nope ~ 'x' }}", "undefined");
    check_err("{{ nope|trim }}", "undefined");
}

static void test_limits(void **state)
{
    (void)state;
    check_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion deeper");
    check_err("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
              "larger than");
    check_err("{% for i in range(100000000) %}{% endfor %}", "list longer than");
    check_err("{% for i in range(4000000) %}{% if 1 %}{% endif %}{% if 1 %}{% endif %}{% if 1 %}{% endif %}"
              "{% if 1 %}{% endif %}{% if 1 %}{% endif %}{% if 1 %}{% endif %}{% if 1 %}{% endif %}{% endfor %}",
              "evaluation steps");
    /* Temporaries of a long loop count against the memory cap. */
    check_err("{% for i in range(3000000) %}{% for j in range(30) %}{% endfor %}{% endfor %}", "memory");
    char *src = malloc(5000);
    strcpy(src, "{{ ");
    for (int i = 0; i < 1000; i++)
        strcat(src, "(");
    strcat(src, "1");
    for (int i = 0; i < 1000; i++)
        strcat(src, ")");
    strcat(src, " }}");
    check_err(src, "nested deeper");
    free(src);
}

/* ---- messages and thinking ---- */

static void test_messages_prepare(void **state)
{
    (void)state;
    struct chat_template *t = NULL, *dev = NULL, *ds = NULL;
    char err[256];
    ASSERT_OK(chat_template_init(&t, "{% for m in messages %}{{ m.role }}{% endfor %}", "t", err, sizeof err));
    ASSERT_OK(chat_template_init(&dev, "{% if m.role == 'developer' %}{% endif %}", "d", err, sizeof err));
    ASSERT_OK(chat_template_init(&ds, "{% if m['content'] is none %}{% endif %}", "d", err, sizeof err));

    cJSON *m = cJSON_Parse("[{\"role\":\"developer\",\"content\":\"be brief\"},"
                           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
                           "{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"why\","
                           "\"tool_calls\":[{\"id\":\"1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                           "{\"role\":\"tool\",\"tool_call_id\":\"1\",\"content\":\"r\"}]");
    cJSON *m2 = cJSON_Duplicate(m, 1), *m3 = cJSON_Duplicate(m, 1);
    ASSERT_OK(chat_messages_prepare(t, m, err, sizeof err));
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 0), "role")->valuestring, "system");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 1), "content")->valuestring, "a\nb");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 2), "content")->valuestring, "");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m, 2), "reasoning_content")->valuestring, "why");
    ASSERT_OK(chat_messages_prepare(dev, m2, err, sizeof err));
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(m2, 0), "role")->valuestring, "developer");
    ASSERT_OK(chat_messages_prepare(ds, m3, err, sizeof err));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(m3, 2), "content")));
    cJSON_Delete(m);
    cJSON_Delete(m2);
    cJSON_Delete(m3);

    static const struct {
        const char *json, *err;
    } bad[] = {
        {"[]", "must not be empty"},
        {"{}", "must be an array"},
        {"[{\"role\":\"wizard\",\"content\":\"x\"}]", "messages[0].role: unknown role 'wizard'"},
        {"[{\"content\":\"x\"}]", "messages[0].role"},
        {"[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"user\"}]", "messages[1].content: missing"},
        {"[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}}]}]",
         "messages[0].content[0]: part type 'image_url' is not supported"},
        {"[{\"role\":\"user\",\"content\":5}]", "messages[0].content"},
        {"[{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":[{}]}]", "messages[0].tool_calls[0]"},
        {"[{\"role\":\"assistant\",\"content\":\"x\",\"reasoning_content\":1}]", "reasoning_content"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *j = cJSON_Parse(bad[i].json);
        err[0] = 0;
        assert_int_equal(chat_messages_prepare(t, j, err, sizeof err), -EINVAL);
        if (!strstr(err, bad[i].err))
            fail_msg("%s: error [%s] lacks [%s]", bad[i].json, err, bad[i].err);
        cJSON_Delete(j);
    }
    chat_template_free(t);
    chat_template_free(dev);
    chat_template_free(ds);
    chat_template_free(NULL);
}

static void test_thinking(void **state)
{
    (void)state;
    struct chat_template *q = NULL, *plain = NULL;
    char err[256];
    ASSERT_OK(chat_template_init(&q, "{{ '<|im_start|>assistant\\n' }}{% if enable_thinking is false %}"
                                     "{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}", "q", err, sizeof err));
    ASSERT_OK(chat_template_init(&plain, "{{ 'x' }}", "p", err, sizeof err));
    const char *s = NULL, *e = NULL;
    assert_true(chat_template_thinking(q, &s, &e));
    assert_string_equal(s, "<think>");
    assert_string_equal(e, "</think>");
    assert_false(chat_template_thinking(plain, &s, &e));
    const char *open = "<|im_start|>assistant\n<think>\n";
    assert_true(chat_prompt_opens_thinking(q, open, strlen(open)));
    const char *closed = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    assert_false(chat_prompt_opens_thinking(q, closed, strlen(closed)));
    assert_false(chat_prompt_opens_thinking(plain, open, strlen(open)));

    /* enable_thinking reaches the template. */
    cJSON *m = cJSON_Parse(DEFAULT_MSGS), *kw = cJSON_Parse("{\"enable_thinking\": false}");
    struct chat_render_args a = {.messages = m, .add_generation_prompt = true, .kwargs = kw};
    char *out = NULL;
    size_t len = 0;
    ASSERT_OK(chat_template_render(q, &a, &out, &len, err, sizeof err));
    assert_string_equal(out, closed);
    free(out);
    a.kwargs = NULL;
    ASSERT_OK(chat_template_render(q, &a, &out, &len, err, sizeof err));
    assert_string_equal(out, "<|im_start|>assistant\n");
    free(out);
    cJSON_Delete(m);
    cJSON_Delete(kw);
    chat_template_free(q);
    chat_template_free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals_and_arithmetic),
        cmocka_unit_test(test_comparison_logic),
        cmocka_unit_test(test_subscripts_slices_attrs),
        cmocka_unit_test(test_string_methods),
        cmocka_unit_test(test_dict_list_methods),
        cmocka_unit_test(test_filters_strings),
        cmocka_unit_test(test_filters_lists),
        cmocka_unit_test(test_filter_tojson),
        cmocka_unit_test(test_tests),
        cmocka_unit_test(test_for_loops),
        cmocka_unit_test(test_if_set),
        cmocka_unit_test(test_macros_call),
        cmocka_unit_test(test_whitespace_control),
        cmocka_unit_test(test_globals_variables),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_undefined),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_messages_prepare),
        cmocka_unit_test(test_thinking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL) ? 1 : 0;
}
