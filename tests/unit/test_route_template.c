/* Unit tests for tables/route_template.c: the template parser, the constraints and complex
 * segments. Each case follows ASP.NET Core routing's code (the constraint classes in
 * src/Http/Routing/src/Constraints, RoutePatternMatcher.MatchComplexSegment). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tables/route_template.h"

static fg_route_tpl_t *parse(const char *tpl)
{
    fg_route_tpl_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    const char *why = fg_route_template_parse(c, tpl);
    if (why != NULL)
        fail_msg("%s: %s", tpl, why);
    return c;
}

static void release(fg_route_tpl_t *c)
{
    fg_route_template_free(c);
    free(c);
}

/* Whether value satisfies the constraints of the one parameter of "/{x:...}". */
static int ok(const char *tpl, const char *value)
{
    fg_route_tpl_t *c = parse(tpl);
    assert_int_equal(c->nsegs, 1);
    int r = fg_route_constraints_ok(&c->segs[0].p, fg_str(value));
    release(c);
    return r;
}

/* IntRouteConstraint / LongRouteConstraint: int.TryParse with NumberStyles.Integer. */
static void test_int_long(void **state)
{
    assert_true(ok("/{x:int}", "42"));
    assert_true(ok("/{x:int}", "-2147483648"));
    assert_true(ok("/{x:int}", "+7"));
    assert_true(ok("/{x:int}", "%205%20")); /* blanks around it, decoded */
    assert_true(ok("/{x:int}", "%34%32"));
    assert_false(ok("/{x:int}", "2147483648"));
    assert_false(ok("/{x:int}", "4a"));
    assert_false(ok("/{x:int}", "-"));
    assert_false(ok("/{x:int}", "1.0"));
    assert_true(ok("/{x:long}", "9223372036854775807"));
    assert_true(ok("/{x:long}", "-9223372036854775808"));
    assert_false(ok("/{x:long}", "9223372036854775808"));
    assert_false(ok("/{x:LONG}", "0x10"));
}

/* BoolRouteConstraint, GuidRouteConstraint, AlphaRouteConstraint, RequiredRouteConstraint. */
static void test_bool_guid_alpha(void **state)
{
    assert_true(ok("/{x:bool}", "TRUE"));
    assert_true(ok("/{x:bool}", "false"));
    assert_false(ok("/{x:bool}", "yes"));
    assert_false(ok("/{x:bool}", "1"));
    assert_true(ok("/{x:guid}", "6f9619ff-8b86-d011-b42d-00cf4fc964ff"));
    assert_true(ok("/{x:guid}", "6F9619FF8B86D011B42D00CF4FC964FF"));
    assert_true(ok("/{x:guid}", "%7B6f9619ff-8b86-d011-b42d-00cf4fc964ff%7D"));
    assert_true(ok("/{x:guid}", "(6f9619ff-8b86-d011-b42d-00cf4fc964ff)"));
    assert_false(ok("/{x:guid}", "6f9619ff-8b86-d011-b42d-00cf4fc964f"));
    assert_false(ok("/{x:guid}", "6f9619ff-8b86-d011-b42d-00cf4fc964fg"));
    assert_true(ok("/{x:alpha}", "abcXYZ"));
    assert_false(ok("/{x:alpha}", "ab1"));
    assert_false(ok("/{x:alpha}", "caf%C3%A9"));
    assert_true(ok("/{x:required}", "a"));
}

/* MinLength/MaxLength/Length count UTF-16 units of the decoded value; Min/Max/Range parse
 * a long. */
static void test_lengths_and_ranges(void **state)
{
    assert_false(ok("/{x:minlength(3)}", "ab"));
    assert_true(ok("/{x:minlength(3)}", "abc"));
    assert_true(ok("/{x:minlength(3)}", "%C3%A9%C3%A9%C3%A9"));
    assert_false(ok("/{x:maxlength(2)}", "%C3%A9%C3%A9%C3%A9"));
    assert_true(ok("/{x:length(2)}", "ab"));
    assert_false(ok("/{x:length(2)}", "abc"));
    assert_true(ok("/{x:length(2,3)}", "abc"));
    assert_false(ok("/{x:length(2,3)}", "a"));
    assert_true(ok("/{x:length(2)}", "%F0%9F%98%80")); /* one emoji: a surrogate pair */
    assert_true(ok("/{x:min(10)}", "10"));
    assert_false(ok("/{x:min(10)}", "9"));
    assert_false(ok("/{x:min(10)}", "ten"));
    assert_true(ok("/{x:max(-1)}", "-5"));
    assert_true(ok("/{x:range(1,5)}", "5"));
    assert_false(ok("/{x:range(1,5)}", "6"));
    assert_true(ok("/{x:int:range(1,5)}", "3"));
    assert_false(ok("/{x:int:range(1,5)}", "0"));
}

/* RegexRouteConstraint: IgnoreCase, IsMatch (a search: not anchored unless the pattern is);
 * braces in the pattern are escaped by doubling (RoutePatternParser). */
static void test_regex(void **state)
{
    assert_true(ok("/{x:regex(^\\d{{3}}$)}", "123"));
    assert_false(ok("/{x:regex(^\\d{{3}}$)}", "1234"));
    assert_true(ok("/{x:regex(\\d)}", "abc1"));
    assert_false(ok("/{x:regex(\\d)}", "abc"));
    assert_true(ok("/{x:regex(^abc$)}", "ABC"));
    assert_true(ok("/{x:regex(^[a-z0-9\\-]+$)}", "my-slug-2"));
    assert_false(ok("/{x:regex(^[a-z0-9\\-]+$)}", "my_slug"));
    assert_true(ok("/{x:regex(^(?:ab)+$)}", "abAB"));
    assert_true(ok("/{x:regex(^[\\w.]+$)}", "file.name_1"));
    assert_true(ok("/{x:regex(^a:b$)}", "a:b"));     /* ':' inside the parentheses */
    assert_true(ok("/{x:regex(^a%2Fb$)}", "a%2Fb")); /* %2F stays encoded */
}

/* Match seg (the template's only segment) against v; the values joined "name=value;...". */
static const char *cx(const char *tpl, const char *v, char *out)
{
    fg_route_tpl_t *c = parse(tpl);
    assert_int_equal(c->nsegs, 1);
    const seg_t *s = &c->segs[0];
    assert_int_equal(s->kind, SEG_COMPLEX);
    fg_str_t vals[FG_ROUTE_MAX_PARTS];
    out[0] = '\0';
    if (!fg_route_complex_match(s, fg_str(v), vals)) {
        strcpy(out, "no");
    } else {
        for (size_t i = 0; i < s->nparts; i++) {
            if (s->parts[i].literal || vals[i].base == NULL)
                continue;
            size_t n = strlen(out);
            snprintf(out + n, 128 - n, "%.*s=%.*s;", (int)s->parts[i].text.len,
                     s->parts[i].text.base, (int)vals[i].len, vals[i].base);
        }
    }
    release(c);
    return out;
}

/* RoutePatternMatcher.MatchComplexSegment: right to left, each literal at its last
 * occurrence, a parameter at least one character. */
static void test_complex_segments(void **state)
{
    char b[128];
    assert_string_equal(cx("/{name}.{ext}", "file.txt", b), "name=file;ext=txt;");
    assert_string_equal(cx("/{name}.{ext}", "a.b.c", b), "name=a.b;ext=c;");
    assert_string_equal(cx("/{name}.{ext}", ".txt", b), "no");
    assert_string_equal(cx("/{name}.{ext}", "file.", b), "no");
    assert_string_equal(cx("/{name}.{ext}", "file", b), "no");
    assert_string_equal(cx("/prefix-{id}", "prefix-42", b), "id=42;");
    assert_string_equal(cx("/prefix-{id}", "PREFIX-42", b), "id=42;");
    assert_string_equal(cx("/prefix-{id}", "prefix-", b), "no");
    assert_string_equal(cx("/prefix-{id}", "xprefix-1", b), "no");
    assert_string_equal(cx("/{id}-suffix", "1-suffix", b), "id=1;");
    assert_string_equal(cx("/{id}-suffix", "1-suffixx", b), "no");
    assert_string_equal(cx("/{a}-{b}", "1-2-3", b), "a=1-2;b=3;");
    assert_string_equal(cx("/{a}--{b}", "x---y", b), "a=x-;b=y;");
    assert_string_equal(cx("/v{major}.{minor}", "v1.2", b), "major=1;minor=2;");
    /* "{p2}.{p3?}": with the optional part, else without it unless the period ends it */
    assert_string_equal(cx("/{p2}.{p3?}", "two.three", b), "p2=two;p3=three;");
    assert_string_equal(cx("/{p2}.{p3?}", "two", b), "p2=two;");
    assert_string_equal(cx("/{p2}.{p3?}", "two.", b), "no");
}

static void test_parse_shapes(void **state)
{
    fg_route_tpl_t *c = parse("/api/v{ver:int}/{id:int=3}/{*rest:minlength(2)}");
    assert_int_equal(c->nsegs, 4);
    assert_int_equal(c->nleading, 1);
    assert_int_equal(c->segs[1].kind, SEG_COMPLEX);
    assert_int_equal(c->segs[2].kind, SEG_PARAM);
    assert_true(c->segs[2].p.has_default);
    assert_true(fg_str_eq(c->segs[2].p.dflt, FG_STR_LIT("3")));
    assert_int_equal(c->segs[3].kind, SEG_CATCHALL);
    assert_int_equal(c->segs[3].p.ncons, 1);
    assert_true(fg_route_template_has_param(c, FG_STR_LIT("VER")));
    assert_false(fg_route_template_has_param(c, FG_STR_LIT("v")));
    release(c);
    /* a regex holding '/' stays in its parameter */
    c = parse("/r/{x:regex(^a/b$)}/end");
    assert_int_equal(c->nsegs, 3);
    release(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int_long),           cmocka_unit_test(test_bool_guid_alpha),
        cmocka_unit_test(test_lengths_and_ranges), cmocka_unit_test(test_regex),
        cmocka_unit_test(test_complex_segments),   cmocka_unit_test(test_parse_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
