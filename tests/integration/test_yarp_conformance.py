"""YARP conformance: behaviours of YARP's routing, transforms, load balancing and session
affinity, checked against the running gateway. Every case names the YARP (dotnet/yarp) or
ASP.NET Core source file or unit test it follows; test vectors from YARP's own unit tests are
reproduced as data. docs/yarp.md lists where the gateway differs on purpose.

One gateway (one worker) serves every case of the module, with three echo upstreams and a
scripted one; every request uses a fresh connection so that repeated and empty header fields
are sent exactly as written.
"""
import json
import socket

import pytest

from conftest import Gateway, Scripted, Upstream, base_config, free_port

# HeaderMatcherPolicyTests.ApplyAsync_MatchingScenarios_AnyHeaderValue: (incoming, mode, match)
ANY_VALUE = [
    (None, 'Exists', False),
    ('', 'Exists', False),
    ('abc', 'Exists', True),
    (None, 'NotExists', True),
    ('', 'NotExists', True),
    ('abc', 'NotExists', False),
]
# HeaderMatcherPolicyTests.ApplyAsync_MatchingScenarios_OneHeaderValue:
# (expected, mode, caseSensitive, incoming fields joined by ';', match)
ONE_VALUE = [
    ('abc', 'ExactHeader', False, None, False),
    ('abc', 'ExactHeader', False, '', False),
    ('abc', 'ExactHeader', False, 'abc', True),
    ('abc', 'ExactHeader', False, 'aBC', True),
    ('abc', 'ExactHeader', False, 'abcd', False),
    ('abc', 'ExactHeader', False, 'ab', False),
    ('abc', 'ExactHeader', True, '', False),
    ('abc', 'ExactHeader', True, 'abc', True),
    ('abc', 'ExactHeader', True, 'aBC', False),
    ('abc', 'ExactHeader', True, 'abcd', False),
    ('abc', 'ExactHeader', True, 'ab', False),
    ('abc', 'ExactHeader', False, ';', False),
    ('abc', 'ExactHeader', False, 'ab;c', False),
    ('abc', 'ExactHeader', False, ';abc', True),
    ('abc', 'ExactHeader', False, ';abC', True),
    ('abc', 'ExactHeader', False, 'abc;', True),
    ('abc', 'ExactHeader', False, 'Abc;', True),
    ('abc', 'ExactHeader', False, 'abc;def', True),
    ('abc', 'ExactHeader', False, 'ABC;DEF', True),
    ('abc', 'ExactHeader', False, 'def;abc', True),
    ('abc', 'ExactHeader', False, 'abc;aBc', True),
    ('abc', 'ExactHeader', False, 'def;ab c', False),
    ('abc', 'ExactHeader', False, 'bcd;efg', False),
    ('abc', 'ExactHeader', False, '"abc', False),
    ('abc', 'ExactHeader', False, 'abc"', False),
    ('abc', 'ExactHeader', False, '"abc"', True),
    ('abc', 'ExactHeader', False, ' "abc"', True),
    ('abc', 'ExactHeader', False, '"abc" ', False),
    ('abc', 'ExactHeader', False, '"abc", ', True),
    ('abc', 'ExactHeader', False, '"ab", "abc', False),
    ('abc', 'ExactHeader', False, '"ab", "abc"', True),
    ('abc', 'ExactHeader', False, 'ab", "abc', False),
    ('abc', 'ExactHeader', False, 'ab"","abc', False),
    ('abc', 'ExactHeader', False, 'ab"","abc"', True),
    ('abc', 'ExactHeader', False, '""ab""c', False),
    ('abc', 'ExactHeader', False, '""ab""c,"abc,"', False),
    ('abc', 'ExactHeader', False, '""ab""c,"abc,",abc', True),
    ('abc', 'ExactHeader', True, ';', False),
    ('abc', 'ExactHeader', True, 'ab;c', False),
    ('abc', 'ExactHeader', True, ';abc', True),
    ('abc', 'ExactHeader', True, 'abc;', True),
    ('abc', 'ExactHeader', True, 'abc;def', True),
    ('abc', 'ExactHeader', True, 'abc;abc', True),
    ('abc', 'ExactHeader', True, 'def;abc', True),
    ('abc', 'ExactHeader', True, 'def;abC', False),
    ('abc', 'ExactHeader', True, 'def;ab c', False),
    ('abc', 'ExactHeader', True, 'bcd;efg', False),
    ('abc', 'HeaderPrefix', False, '', False),
    ('abc', 'HeaderPrefix', False, 'abc', True),
    ('abc', 'HeaderPrefix', False, 'aBC', True),
    ('abc', 'HeaderPrefix', False, 'abcd', True),
    ('abc', 'HeaderPrefix', False, 'ab', False),
    ('abc', 'HeaderPrefix', True, '', False),
    ('abc', 'HeaderPrefix', True, 'abc', True),
    ('abc', 'HeaderPrefix', True, 'aBC', False),
    ('abc', 'HeaderPrefix', True, 'abcd', True),
    ('abc', 'HeaderPrefix', True, 'aBCd', False),
    ('abc', 'HeaderPrefix', True, 'ab', False),
    ('abc', 'HeaderPrefix', False, ';', False),
    ('abc', 'HeaderPrefix', False, 'abc;', True),
    ('abc', 'HeaderPrefix', False, ';aBc', True),
    ('abc', 'HeaderPrefix', False, 'abd;abC', True),
    ('abc', 'HeaderPrefix', False, 'abd;abe', False),
    ('abc', 'HeaderPrefix', True, 'abc;', True),
    ('abc', 'HeaderPrefix', True, ';abc', True),
    ('abc', 'HeaderPrefix', True, 'abd;abc', True),
    ('abc', 'HeaderPrefix', True, 'abd;abe', False),
    ('abc', 'HeaderPrefix', True, 'ab"c', False),
    ('abc', 'HeaderPrefix', True, 'ab"c"', False),
    ('abc', 'HeaderPrefix', True, '"abc', False),
    ('abc', 'HeaderPrefix', True, '"abc"', True),
    ('abc', 'HeaderPrefix', True, ' "abc"', True),
    ('abc', 'HeaderPrefix', True, ' "abc', False),
    ('abc', 'HeaderPrefix', True, '"abc" ', False),
    ('abc', 'HeaderPrefix', True, 'ab,abc', True),
    ('abc', 'HeaderPrefix', True, 'ab, abc', True),
    ('abc', 'HeaderPrefix', True, '"ab, abc"', False),
    ('abc', 'HeaderPrefix', True, '"ab", abc', True),
    ('abc', 'HeaderPrefix', True, '"ab", abc"', True),
    ('abc', 'HeaderPrefix', True, '"ab"""", abc"', False),
    ('abc', 'HeaderPrefix', True, '"ab""""", abc"', True),
    ('abc', 'Contains', False, '', False),
    ('abc', 'Contains', False, 'ababc', True),
    ('abc', 'Contains', False, 'zaBCz', True),
    ('abc', 'Contains', False, 'dcbaabcd', True),
    ('abc', 'Contains', False, 'ababab', False),
    ('abc', 'Contains', True, '', False),
    ('abc', 'Contains', True, 'abcc', True),
    ('abc', 'Contains', True, 'aaaBC', False),
    ('abc', 'Contains', True, 'bbabcdb', True),
    ('abc', 'Contains', True, 'aBCcba', False),
    ('abc', 'Contains', True, 'baab', False),
    ('abc', 'Contains', False, ';', False),
    ('abc', 'Contains', False, 'ababc;', True),
    ('abc', 'Contains', False, ';ababc', True),
    ('abc', 'Contains', False, 'ab;cd', False),
    ('abc', 'Contains', False, 'ab;cd;abcd', True),
    ('abc', 'Contains', False, 'abc;abc;def', True),
    ('abc', 'Contains', False, '"abc', True),
    ('abc', 'Contains', False, 'abc"', True),
    ('abc', 'Contains', False, '"abc"', True),
    ('abc', 'Contains', False, 'ab"c', False),
    ('abc', 'NotContains', False, None, True),
    ('abc', 'NotContains', False, '', True),
    ('abc', 'NotContains', False, 'ababc', False),
    ('abc', 'NotContains', False, 'zaBCz', False),
    ('abc', 'NotContains', False, 'dcbaabcd', False),
    ('abc', 'NotContains', False, 'ababab', True),
    ('abc', 'NotContains', True, None, True),
    ('abc', 'NotContains', True, '', True),
    ('abc', 'NotContains', True, 'abcc', False),
    ('abc', 'NotContains', True, 'aaaBC', True),
    ('abc', 'NotContains', True, 'bbabcdb', False),
    ('abc', 'NotContains', True, 'aBCcba', True),
    ('abc', 'NotContains', True, 'baab', True),
    ('abc', 'NotContains', False, ';abc', False),
    ('abc', 'NotContains', False, 'abc;', False),
    ('abc', 'NotContains', False, 'ab;cd', True),
    ('abc', 'NotContains', False, 'ababc;abc', False),
    ('abc', 'NotContains', False, 'abc;def', False),
    ('abc', 'NotContains', False, 'ab"c', True),
    ('abc', 'NotContains', False, '"abc"', False),
]
# HeaderMatcherPolicyTests.ApplyAsync_MatchingScenarios_TwoHeaderValues:
# (expected1, expected2, mode, caseSensitive, incoming fields joined by ';', match)
TWO_VALUES = [
    ('abc', 'def', 'ExactHeader', False, None, False),
    ('abc', 'def', 'ExactHeader', False, '', False),
    ('abc', 'def', 'ExactHeader', False, 'abc', True),
    ('abc', 'def', 'ExactHeader', False, 'aBc', True),
    ('abc', 'def', 'ExactHeader', False, 'abcd', False),
    ('abc', 'def', 'ExactHeader', False, 'def', True),
    ('abc', 'def', 'ExactHeader', False, 'deF', True),
    ('abc', 'def', 'ExactHeader', False, 'defg', False),
    ('abc', 'def', 'ExactHeader', True, None, False),
    ('abc', 'def', 'ExactHeader', True, '', False),
    ('abc', 'def', 'ExactHeader', True, 'abc', True),
    ('abc', 'def', 'ExactHeader', True, 'aBC', False),
    ('abc', 'def', 'ExactHeader', True, 'aBCd', False),
    ('abc', 'def', 'ExactHeader', True, 'def', True),
    ('abc', 'def', 'ExactHeader', True, 'DEFg', False),
    ('abc', 'def', 'ExactHeader', True, 'dEf', False),
    ('abc', 'def', 'ExactHeader', True, ';', False),
    ('abc', 'def', 'ExactHeader', True, 'abc;a', True),
    ('abc', 'def', 'ExactHeader', True, 'a;abc', True),
    ('abc', 'def', 'ExactHeader', True, 'abc;def', True),
    ('abc', 'def', 'ExactHeader', True, 'ab;def', True),
    ('abc', 'def', 'ExactHeader', True, 'ab;cdef', False),
    ('abc', 'def', 'ExactHeader', True, 'ab;"def"', True),
    ('abc', 'def', 'ExactHeader', True, '"abc,def"', False),
    ('abc', 'def', 'ExactHeader', True, '"abc",def', True),
    ('abc', 'def', 'ExactHeader', True, ' "abc",def', True),
    ('abc', 'def', 'HeaderPrefix', False, None, False),
    ('abc', 'def', 'HeaderPrefix', False, '', False),
    ('abc', 'def', 'HeaderPrefix', False, 'abc', True),
    ('abc', 'def', 'HeaderPrefix', False, 'aBc', True),
    ('abc', 'def', 'HeaderPrefix', False, 'abcd', True),
    ('abc', 'def', 'HeaderPrefix', False, 'abcD', True),
    ('abc', 'def', 'HeaderPrefix', False, 'def', True),
    ('abc', 'def', 'HeaderPrefix', False, 'deF', True),
    ('abc', 'def', 'HeaderPrefix', False, 'defg', True),
    ('abc', 'def', 'HeaderPrefix', False, 'defG', True),
    ('abc', 'def', 'HeaderPrefix', False, 'aabc', False),
    ('abc', 'def', 'HeaderPrefix', True, None, False),
    ('abc', 'def', 'HeaderPrefix', True, '', False),
    ('abc', 'def', 'HeaderPrefix', True, 'abc', True),
    ('abc', 'def', 'HeaderPrefix', True, 'aBC', False),
    ('abc', 'def', 'HeaderPrefix', True, 'aBCd', False),
    ('abc', 'def', 'HeaderPrefix', True, 'def', True),
    ('abc', 'def', 'HeaderPrefix', True, 'DEFg', False),
    ('abc', 'def', 'HeaderPrefix', True, 'aabc', False),
    ('abc', 'def', 'HeaderPrefix', True, ';', False),
    ('abc', 'def', 'HeaderPrefix', True, 'ab;cde;fgh', False),
    ('abc', 'def', 'HeaderPrefix', True, 'abcd;e', True),
    ('abc', 'def', 'HeaderPrefix', True, 'abcd;defg', True),
    ('abc', 'def', 'HeaderPrefix', True, 'Abcd;defg', True),
    ('abc', 'def', 'HeaderPrefix', True, 'Abcd;Defg', False),
    ('abc', 'def', 'HeaderPrefix', True, 'a;defg', True),
    ('abc', 'def', 'HeaderPrefix', True, 'abcd;', True),
    ('abc', 'def', 'HeaderPrefix', True, ';def', True),
    ('abc', 'def', 'HeaderPrefix', True, ' "abc",def', True),
    ('abc', 'def', 'HeaderPrefix', True, 'ab, "def"', True),
    ('abc', 'def', 'HeaderPrefix', True, 'ab, def"', True),
    ('abc', 'def', 'HeaderPrefix', True, 'ab, "def', False),
    ('abc', 'def', 'HeaderPrefix', True, '""ab",def', False),
    ('abc', 'def', 'HeaderPrefix', True, '""ab",def"', False),
    ('abc', 'def', 'HeaderPrefix', True, '""ab"",def"', True),
    ('abc', 'def', 'Contains', False, None, False),
    ('abc', 'def', 'Contains', False, '', False),
    ('abc', 'def', 'Contains', False, 'aabc', True),
    ('abc', 'def', 'Contains', False, 'baBc', True),
    ('abc', 'def', 'Contains', False, 'ababcd', True),
    ('abc', 'def', 'Contains', False, 'dcabcD', True),
    ('abc', 'def', 'Contains', False, 'fdeff', True),
    ('abc', 'def', 'Contains', False, 'edeF', True),
    ('abc', 'def', 'Contains', False, 'adefg', True),
    ('abc', 'def', 'Contains', False, 'abdefG', True),
    ('abc', 'def', 'Contains', False, 'ddaabc', True),
    ('abc', 'def', 'Contains', False, 'abcdef', True),
    ('abc', 'def', 'Contains', True, None, False),
    ('abc', 'def', 'Contains', True, '', False),
    ('abc', 'def', 'Contains', True, 'cabca', True),
    ('abc', 'def', 'Contains', True, 'aBCa', False),
    ('abc', 'def', 'Contains', True, 'CaBCdd', False),
    ('abc', 'def', 'Contains', True, 'DEFdef', True),
    ('abc', 'def', 'Contains', True, 'defDEFg', True),
    ('abc', 'def', 'Contains', True, 'bbaabc', True),
    ('abc', 'def', 'Contains', True, ';', False),
    ('abc', 'def', 'Contains', True, 'cabca;', True),
    ('abc', 'def', 'Contains', True, ';cabca', True),
    ('abc', 'def', 'Contains', True, 'ab;cd;ef', False),
    ('abc', 'def', 'Contains', True, 'aBCa;deFg', False),
    ('abc', 'def', 'Contains', True, 'aBCa;defg', True),
    ('abc', 'def', 'Contains', True, 'abcd;d', True),
    ('abc', 'ABC', 'Contains', True, 'abc;d', True),
    ('abc', 'ABC', 'Contains', True, 'ABC;d', True),
    ('abc', 'ABC', 'Contains', True, 'abC;d', False),
    ('abc', 'ABC', 'Contains', True, 'abcABC;d', True),
    ('abc', 'def', 'Contains', True, '"abc, def"', True),
    ('abc', 'def', 'Contains', True, '"abc", def"', True),
    ('abc', 'def', 'Contains', True, 'ab"cde"f', False),
    ('abc', 'def', 'NotContains', False, None, True),
    ('abc', 'def', 'NotContains', False, '', True),
    ('abc', 'def', 'NotContains', False, 'aabc', False),
    ('abc', 'def', 'NotContains', False, 'baBc', False),
    ('abc', 'def', 'NotContains', False, 'ababcd', False),
    ('abc', 'def', 'NotContains', False, 'dcabcD', False),
    ('abc', 'def', 'NotContains', False, 'def', False),
    ('abc', 'def', 'NotContains', False, 'ghi', True),
    ('abc', 'def', 'NotContains', True, None, True),
    ('abc', 'def', 'NotContains', True, '', True),
    ('abc', 'def', 'NotContains', True, 'cabca', False),
    ('abc', 'def', 'NotContains', True, 'aBCa', True),
    ('abc', 'def', 'NotContains', True, 'CaBCdd', True),
    ('abc', 'def', 'NotContains', True, 'DEFdef', False),
    ('abc', 'def', 'NotContains', True, 'DEFg', True),
    ('abc', 'def', 'NotContains', True, 'bbaabc', False),
    ('abc', 'def', 'NotContains', True, 'defG', False),
    ('abc', 'def', 'NotContains', True, 'bbaabc;', False),
    ('abc', 'def', 'NotContains', True, ';bbaabc', False),
    ('abc', 'def', 'NotContains', True, 'ab;cd;ef', True),
    ('abc', 'def', 'NotContains', True, 'a;defg', False),
    ('abc', 'def', 'NotContains', True, 'ab;cdef', False),
    ('abc', 'def', 'NotContains', True, 'abc;def', False),
    ('abc', 'def', 'NotContains', True, 'Abc;cdef', False),
    ('abc', 'def', 'NotContains', True, 'Abc;cdEf', True),
]
# HeaderMatcherPolicyTests.ApplyAsync_MatchingScenarios_MissingHeader: (mode, caseSensitive, match)
MISSING = [
    ('Contains', True, False),
    ('Contains', False, False),
    ('NotContains', True, True),
    ('NotContains', False, True),
    ('HeaderPrefix', True, False),
    ('HeaderPrefix', False, False),
    ('ExactHeader', True, False),
    ('ExactHeader', False, False),
    ('NotExists', True, True),
    ('NotExists', False, True),
    ('Exists', True, False),
    ('Exists', False, False),
]
# HeaderMatcherPolicyTests.ApplyAsync_Cookie_UsesDifferentSeparator:
# (header, expected, mode, incoming, match), case-sensitive
SEPARATOR = [
    ('Foo', 'abc', 'ExactHeader', 'ab, abc', True),
    ('Foo', 'abc', 'ExactHeader', 'ab; abc', False),
    ('Cookie', 'abc', 'ExactHeader', 'ab, abc', False),
    ('Cookie', 'abc', 'ExactHeader', 'ab; abc', True),
    ('Set-Cookie', 'abc', 'ExactHeader', 'ab, abc', True),
    ('Set-Cookie', 'abc', 'ExactHeader', 'ab; abc', False),
    ('Cookie', 'abc', 'ExactHeader', '"ab"; abc', True),
    ('Cookie', 'abc', 'ExactHeader', 'ab; "abc"', True),
    ('Cookie', 'abc', 'ExactHeader', '"ab"; "abc"', True),
    ('Cookie', 'abc', 'ExactHeader', 'abc;', True),
    ('Cookie', 'abc', 'ExactHeader', ' abc;', True),
    ('Cookie', 'abc', 'ExactHeader', ' "abc";', True),
    ('Cookie', 'abc', 'ExactHeader', '"abc;"', False),
    ('Cookie', 'abc', 'ExactHeader', '"abc;" "abc"', False),
]
# HeaderMatcherPolicyTests.ApplyAsync_MultipleRules_RequiresAllHeaders: (send1, send2, match)
ALL_RULES = [
    (False, False, False),
    (False, True, False),
    (True, False, False),
    (True, True, True),
]


MODES = ["ExactHeader", "HeaderPrefix", "Contains", "NotContains", "Exists", "NotExists"]


# ---- XXH64, written here from its specification, to check HashCookie values ----

_M = (1 << 64) - 1
_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc, lane):
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def xxh64(data, seed=0):
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed, (seed - _P1) & _M]
        while n - i >= 32:
            for k in range(4):
                v[k] = _round(v[k], int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little"))
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for k in range(4):
            h = ((h ^ _round(0, v[k])) * _P1 + _P4) & _M
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while n - i >= 8:
        h = (_rotl(h ^ _round(0, int.from_bytes(data[i:i + 8], "little")), 27) * _P1 + _P4) & _M
        i += 8
    if n - i >= 4:
        h = (_rotl(h ^ (int.from_bytes(data[i:i + 4], "little") * _P1 & _M), 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h = (_rotl(h ^ (data[i] * _P5 & _M), 11) * _P1) & _M
        i += 1
    h ^= h >> 33
    h = h * _P2 & _M
    h ^= h >> 29
    h = h * _P3 & _M
    return h ^ (h >> 32)


def yarp_hash(dest_id):
    """HashCookieSessionAffinityPolicy.GetDestinationHash: XXH64 of the upper-cased id in
    UTF-16LE, as lower-case hex of the big-endian hash."""
    return "%016x" % xxh64(dest_id.upper().encode("utf-16-le"))


# ---- the gateway ----

def _direct(rid, match, **extra):
    r = {"id": rid, "match": match,
         "direct": {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": rid}}
    r.update(extra)
    return r


def _proxy(rid, path, cluster="echo", **extra):
    r = {"id": rid, "match": {"path": path}, "clusterId": cluster}
    r.update(extra)
    return r


def _header_routes():
    routes = []
    for mode in MODES:
        for cs in (False, True):
            rule = {"name": "org-id", "mode": mode, "isCaseSensitive": cs}
            two = dict(rule)
            if mode not in ("Exists", "NotExists"):
                rule["values"] = ["abc"]
                two["values"] = ["abc", "def"]
            tag = "%s/%d" % (mode, cs)
            routes.append(_direct("hm1-" + tag, {"path": "/hm1/" + tag, "headers": [rule]}))
            routes.append(_direct("hm2-" + tag, {"path": "/hm2/" + tag, "headers": [two]}))
            if "values" in two:
                two = dict(two, values=["abc", "ABC"])
                routes.append(_direct("hm3-" + tag, {"path": "/hm3/" + tag, "headers": [two]}))
    for name in ("Foo", "Cookie", "Set-Cookie"):
        routes.append(_direct("sep-" + name, {"path": "/sep/" + name, "headers": [
            {"name": name, "values": ["abc"], "mode": "ExactHeader", "isCaseSensitive": True}]}))
    routes.append(_direct("all", {"path": "/all", "headers": [
        {"name": "header1", "values": ["value1"]}, {"name": "header2", "values": ["value2"]}]}))
    return routes


def _routing_routes():
    return [
        # RoutePrecedence: literal 1, parameter 3, catch-all 5, compared segment by segment
        _direct("pr-param", {"path": "/{a}/zzb"}),
        _direct("pr-pr1", {"path": "/pr1/{**rest}"}),
        _direct("x-catch", {"path": "/x/{**rest}"}),
        _direct("x-param", {"path": "/x/{id}"}),
        _direct("x-lit", {"path": "/x/y"}),
        _direct("x-deep", {"path": "/x/{id}/z"}),
        # order first, whatever the path (RouteConfig.Order)
        _direct("ord-catch", {"path": "/ord/{**rest}"}, order=-1),
        _direct("ord-lit", {"path": "/ord/lit"}),
        # matcher policies rank constrained routes first, whatever the file order
        _direct("meta", {"path": "/meta"}),
        _direct("meta-canary", {"path": "/meta", "headers": [
            {"name": "X-Canary", "mode": "Exists"}]}),
        _direct("meta-two", {"path": "/meta", "headers": [
            {"name": "X-Canary", "mode": "Exists"}, {"name": "X-Two", "mode": "Exists"}]}),
        _direct("q", {"path": "/q"}),
        _direct("q-v", {"path": "/q", "queryParameters": [{"name": "v", "values": ["2"]}]}),
        _direct("mth", {"path": "/mth"}),
        _direct("mth-post", {"path": "/mth", "methods": ["POST"]}),
        _direct("hst", {"path": "/hst"}),
        _direct("hst-a", {"path": "/hst", "hosts": ["a.example"]}),
        # 405 with Allow (HttpMethodMatcherPolicy)
        _direct("m405-post", {"path": "/m405", "methods": ["POST", "PUT"]}),
        _direct("m405-del", {"path": "/m405", "methods": ["DELETE"]}),
        _direct("m405-host", {"path": "/m405h", "methods": ["POST"], "hosts": ["b.example"]}),
        # non-ASCII literals and Unicode hosts
        _direct("cafe", {"path": "/café"}),
        _direct("idn", {"hosts": ["bücher.example"]}),
        _direct("idn-wild", {"path": "/idn", "hosts": ["*.münchen.de"]}),
        _direct("idn-upper", {"path": "/idn", "hosts": ["ÜBER.example"]}),
        # route constraints rank as RoutePrecedence says (constrained parameter 2, complex
        # segment 2, parameter 3); a failing constraint leaves the request to the next route
        _direct("c-any", {"path": "/c/{name}"}),
        _direct("c-int", {"path": "/c/{id:int}"}),
        _direct("c-me", {"path": "/c/me"}),
        _direct("f-any", {"path": "/f/{any}"}),
        _direct("f-ext", {"path": "/f/{name}.{ext}"}),
        _direct("p-id", {"path": "/p/prefix-{id:int}"}),
        _direct("dl", {"path": "/dl/{file}.{ext?}"}),
        _direct("k-fallback", {"path": "/k/{**rest}"}),
    ] + [_direct("k-" + name, {"path": "/k/%s/{v:%s}" % (name, spec)})
         for name, spec in CONSTRAINTS]


# One route per constraint of ASP.NET's default constraint map (RouteOptions), with the
# values of its unit tests (aspnetcore src/Http/Routing/test/UnitTests/Constraints/*Tests.cs).
CONSTRAINTS = [
    ("int", "int"), ("long", "long"), ("bool", "bool"), ("guid", "guid"), ("alpha", "alpha"),
    ("minlength", "minlength(3)"), ("maxlength", "maxlength(3)"), ("length", "length(2)"),
    ("length2", "length(2,4)"), ("min", "min(10)"), ("max", "max(10)"),
    ("range", "range(1,5)"), ("regex", "regex(^\\d{{3}}-\\d{{3}}$)"),
    ("regexsearch", "regex(abc)"),
]
CONSTRAINT_VECTORS = [
    ("int", "42", True), ("int", "-42", True), ("int", "43.567", False),
    ("int", "not-parseable-as-int", False), ("int", "2147483648", False),
    ("long", "9223372036854775807", True), ("long", "9223372036854775808", False),
    ("long", "3.14", False),
    ("bool", "true", True), ("bool", "False", True), ("bool", "1", False),
    ("bool", "not-parseable-as-bool", False),
    ("guid", "12345678-1234-1234-1234-123456789012", True),
    ("guid", "%7B12345678-1234-1234-1234-123456789012%7D", True),  # braces, encoded
    ("guid", "12345678123412341234123456789012", True),
    ("guid", "not-parseable-as-guid", False),
    ("alpha", "alpha", True), ("alpha", "a1pha", False), ("alpha", "ALPHA", True),
    ("minlength", "123", True), ("minlength", "12", False),
    ("maxlength", "123", True), ("maxlength", "1234", False),
    ("length", "12", True), ("length", "1", False), ("length", "123", False),
    ("length2", "12", True), ("length2", "1234", True), ("length2", "12345", False),
    ("min", "10", True), ("min", "9", False), ("min", "-1", False),
    ("max", "10", True), ("max", "11", False), ("max", "-1", True),
    ("range", "1", True), ("range", "5", True), ("range", "0", False), ("range", "6", False),
    ("regex", "123-456", True), ("regex", "1234-567", False),
    ("regexsearch", "xxABCxx", True), ("regexsearch", "ab", False),
]


def _transform_routes():
    xf = lambda spec: [dict(spec)]  # noqa: E731
    return [
        _proxy("plain", "/t/plain"),
        _proxy("xf-append-list", "/t/xfal",
               transforms=xf({"X-Forwarded": "For,Proto,Host,Prefix", "Action": "Append"})),
        _proxy("xf-append", "/t/xfa", transforms=xf({"X-Forwarded": "Append"})),
        _proxy("xf-set", "/t/xfs", transforms=xf({"X-Forwarded": "Set"})),
        _proxy("xf-off", "/t/xfo", transforms=xf({"X-Forwarded": "Off"})),
        _proxy("xf-remove", "/t/xfr", transforms=xf({"X-Forwarded": "Remove"})),
        _proxy("xf-for-off", "/t/xfforoff", transforms=xf({"X-Forwarded": "Set", "For": "Off"})),
        _proxy("xf-prefix", "/t/xfp", transforms=xf({"X-Forwarded": "Set",
                                                     "HeaderPrefix": "X-Fwd-"})),
        _proxy("xf-proto-append", "/t/xfpa", transforms=xf({"X-Forwarded": "Off",
                                                            "Proto": "Append"})),
        _proxy("xf-strip", "/t/strip/{**rest}", transforms=[{"PathRemovePrefix": "/t/strip"}]),
        _proxy("fwd", "/t/fwd", transforms=xf({"Forwarded": "for,proto", "ForFormat": "Ip"})),
        _proxy("fwd-append", "/t/fwda", transforms=xf({"Forwarded": "proto",
                                                       "Action": "Append"})),
        _proxy("orighost", "/t/orighost", cluster="hosted",
               transforms=[{"RequestHeaderOriginalHost": "true"}]),
        _proxy("desthost", "/t/desthost", cluster="hosted"),
        _proxy("pp-one", "/t/pp1/{*rest}", transforms=[{"PathPattern": "/new/{*rest}"}]),
        _proxy("pp-two", "/t/pp2/{**rest}", transforms=[{"PathPattern": "/new/{**rest}"}]),
        _proxy("pp-empty", "/t/pp3/{**rest}", transforms=[{"PathPattern": "/new/{**rest}"}]),
        _proxy("pp-mid", "/t/pp4/{id}/{**rest}",
               transforms=[{"PathPattern": "/v/{id}/x/{**rest}"}]),
        _proxy("resp-fail", "/t/fail", cluster="dead", transforms=[
            {"ResponseHeader": "X-When-Failure", "Set": "f", "When": "Failure"},
            {"ResponseHeader": "X-When-Always", "Set": "a", "When": "Always"},
            {"ResponseHeader": "X-When-Success", "Set": "s"}]),
        _proxy("resp-ok", "/t/ok", transforms=[
            {"ResponseHeader": "X-When-Failure", "Set": "f", "When": "Failure"},
            {"ResponseHeader": "X-When-Always", "Set": "a", "When": "Always"},
            {"ResponseHeader": "X-When-Success", "Set": "s"}]),
        _proxy("scripted", "/t/scripted", cluster="scripted"),
        _proxy("mvc", "/mvc/{controller=Home}/{action=Index}/{id?}",
               transforms=[{"PathPattern": "/to/{controller}/{action}/{id}"}]),
        _proxy("hdr-allowed", "/t/allowed",
               transforms=[{"RequestHeadersAllowed": "X-A; x-b"}]),
        _proxy("resp-nocopy", "/t/nocopy", transforms=[
            {"ResponseHeadersCopy": "false"}, {"ResponseHeader": "X-Own", "Set": "1"}]),
        _proxy("resp-allowed", "/t/respallowed",
               transforms=[{"ResponseHeadersAllowed": "Content-Type"}]),
        _proxy("trl-plain", "/t/trailers", cluster="trailers"),
        _proxy("trl-script", "/t/trailers2", cluster="trailers", transforms=[
            {"ResponseTrailersAllowed": "grpc-status;X-Debug"},
            {"ResponseTrailer": "X-Debug", "Append": "b"},
            {"ResponseTrailer": "X-Added", "Set": "1"},
            {"ResponseTrailerRemove": "grpc-status", "When": "Failure"}]),
        _proxy("trl-nocopy", "/t/trailers3", cluster="trailers",
               transforms=[{"ResponseTrailersCopy": "false"}]),
        _proxy("trl-add", "/chunked/{n:int}", transforms=[
            {"ResponseTrailer": "X-Trace", "Set": "gw"},
            {"ResponseTrailer": "X-Fail", "Set": "f", "When": "Failure"}]),
    ]


def _lb_routes():
    return [
        _proxy("first", "/lb/first", cluster="first"),
        _proxy("first2", "/lb/first2", cluster="first2"),
        _proxy("hash503", "/lb/hash503", cluster="hash503"),
        _proxy("hashre", "/lb/hashre", cluster="hashre"),
        _proxy("cookie503", "/lb/cookie503", cluster="cookie503"),
        _proxy("hdr503", "/lb/hdr503", cluster="hdr503"),
        _proxy("hdrre", "/lb/hdrre", cluster="hdrre"),
    ]


SCRIPTED_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nAlt-Svc: h3=\":443\"\r\n"
                     b"Proxy-Authentication-Info: x\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
                     b"ALPN: h2\r\nSecurity-Scheme: x\r\nProxy-Features: x\r\n"
                     b"Proxy-Instruction: x\r\nClose: x\r\nX-Kept: yes\r\n"
                     b"Connection: close\r\n\r\nok")


def _scripted(sock, head):
    sock.sendall(SCRIPTED_RESPONSE)


TRAILERS_RESPONSE = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                     b"Trailer: grpc-status, X-Debug, X-Internal\r\nConnection: close\r\n\r\n"
                     b"2\r\nok\r\n0\r\ngrpc-status: 0\r\nX-Debug: a\r\nX-Internal: s\r\n\r\n")


def _trailers(sock, head):
    sock.sendall(TRAILERS_RESPONSE)


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("yarp")
    ups = [Upstream().start() for _ in range(3)]
    scripted = Scripted(_scripted)
    trailing = Scripted(_trailers)
    port = free_port()
    dead = free_port()  # nothing listens there: 502

    def dests(ids, aff=None, policy="RoundRobin"):
        c = {"loadBalancingPolicy": policy,
             "destinations": [{"id": i, "address": ups[k % 3].url} for k, i in enumerate(ids)]}
        if aff:
            c["sessionAffinity"] = aff
        return c

    clusters = [
        {"id": "echo", "destinations": [{"id": "e", "address": ups[0].url}]},
        {"id": "hosted", "destinations": [{"id": "h", "address": ups[0].url,
                                           "host": "dest.internal"}]},
        {"id": "dead", "destinations": [{"id": "x", "address": "http://127.0.0.1:%d" % dead}]},
        {"id": "scripted", "destinations": [{"id": "s", "address": scripted.url}]},
        {"id": "trailers", "destinations": [{"id": "t", "address": trailing.url}]},
        dict(id="first", **dests(["b-dest", "a1", "B2"], policy="FirstAlphabetical")),
        dict(id="first2", **dests(["_x", "b", "a"], policy="FirstAlphabetical")),
        dict(id="hash503", **dests(["dest-A", "dest-B", "dest-C"], {
            "policy": "HashCookie", "failurePolicy": "Return503Error",
            "affinityKeyName": "My.Affinity"})),
        dict(id="hashre", **dests(["dest-A", "dest-B", "dest-C"], {
            "policy": "HashCookie", "failurePolicy": "Redistribute",
            "affinityKeyName": "My.Affinity"})),
        dict(id="cookie503", **dests(["dest-A", "dest-B"], {
            "policy": "Cookie", "failurePolicy": "Return503Error", "affinityKeyName": "aff"})),
        dict(id="hdr503", **dests(["dest-A", "dest-B"], {
            "policy": "CustomHeader", "failurePolicy": "Return503Error"})),
        dict(id="hdrre", **dests(["dest-A", "dest-B"], {
            "policy": "CustomHeader", "failurePolicy": "Redistribute"})),
    ]
    routes = _header_routes() + _routing_routes() + _transform_routes() + _lb_routes()
    cfg = base_config(tmp, port, routes=routes, clusters=clusters, workers=1)
    g = Gateway(cfg, tmp).start()
    g.ups = ups
    yield g
    g.stop()
    scripted.close()
    trailing.close()
    for u in ups:
        u.stop()


def request(gw, method, target, fields=(), host="gw.test"):
    """One request on a fresh connection, fields sent exactly as given (repeats kept).
    Returns (status, [(name lower-cased, value)], body bytes)."""
    head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, target, host)
    for name, value in fields:
        head += "%s: %s\r\n" % (name, value)
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    try:
        s.sendall(head.encode("utf-8") + b"\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    hdr, _, body = data.partition(b"\r\n\r\n")
    lines = hdr.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [(ln.split(":", 1)[0].lower(), ln.split(":", 1)[1].strip()) for ln in lines[1:]]
    return status, headers, body


def hget(headers, name):
    vals = [v for n, v in headers if n == name.lower()]
    return vals[0] if vals else None


def route_of(gw, path, fields=(), method="GET", host="gw.test"):
    st, _, body = request(gw, method, path, fields, host)
    return body.decode() if st == 200 else st


def echo(gw, path, fields=(), host="gw.test"):
    """What the echo upstream received: (path with query, {lower name: [values]})."""
    st, _, body = request(gw, "GET", path, fields, host)
    assert st == 200, (st, body[:300])
    doc = json.loads(body)
    seen = {}
    for n, v in doc["headers"]:
        seen.setdefault(n.lower(), []).append(v)
    return doc["path"] + ("?" + doc["query"] if doc["query"] else ""), seen


def fields_of(incoming, name="org-id"):
    """YARP's tests split the incoming string on ';' into separate values: one field each."""
    return [] if incoming is None else [(name, v) for v in incoming.split(";")]


def wire_safe(incoming):
    """A field value with leading or trailing blanks reaches neither Kestrel nor us as
    written (RFC 9110 5.5 strips them): such vectors are left out."""
    return incoming is None or all(v == v.strip(" \t") for v in incoming.split(";"))


# ---- HeaderMatcherPolicy (src/ReverseProxy/Routing/HeaderMatcherPolicy.cs) ----

@pytest.mark.parametrize("incoming,mode,match", ANY_VALUE)
def test_HeaderMatcherPolicyTests_AnyHeaderValue(gw, incoming, mode, match):
    got = route_of(gw, "/hm1/%s/0" % mode, fields_of(incoming))
    assert (got == "hm1-%s/0" % mode) == match, got


@pytest.mark.parametrize("expected,mode,cs,incoming,match",
                         [v for v in ONE_VALUE if wire_safe(v[3])])
def test_HeaderMatcherPolicyTests_OneHeaderValue(gw, expected, mode, cs, incoming, match):
    tag = "%s/%d" % (mode, cs)
    got = route_of(gw, "/hm1/" + tag, fields_of(incoming))
    assert (got == "hm1-" + tag) == match, got


@pytest.mark.parametrize("v1,v2,mode,cs,incoming,match",
                         [v for v in TWO_VALUES if wire_safe(v[4])])
def test_HeaderMatcherPolicyTests_TwoHeaderValues(gw, v1, v2, mode, cs, incoming, match):
    tag = "%s/%d" % (mode, cs)
    base = {("abc", "def"): "hm2", ("abc", "ABC"): "hm3"}[(v1, v2)]
    got = route_of(gw, "/%s/%s" % (base, tag), fields_of(incoming))
    assert (got == "%s-%s" % (base, tag)) == match, got


@pytest.mark.parametrize("mode,cs,match", MISSING)
def test_HeaderMatcherPolicyTests_MissingHeader(gw, mode, cs, match):
    tag = "%s/%d" % (mode, cs)
    got = route_of(gw, "/hm1/" + tag, [("foo", "bar")])
    assert (got == "hm1-" + tag) == match, got


@pytest.mark.parametrize("name,expected,mode,incoming,match",
                         [v for v in SEPARATOR if wire_safe(v[3])])
def test_HeaderMatcherPolicyTests_Cookie_UsesDifferentSeparator(gw, name, expected, mode,
                                                                incoming, match):
    got = route_of(gw, "/sep/" + name, [(name, incoming)])
    assert (got == "sep-" + name) == match, got


@pytest.mark.parametrize("send1,send2,match", ALL_RULES)
def test_HeaderMatcherPolicyTests_MultipleRules_RequiresAllHeaders(gw, send1, send2, match):
    fields = ([("header1", "value1")] if send1 else []) + ([("header2", "value2")] if send2 else [])
    assert (route_of(gw, "/all", fields) == "all") == match


def test_HeaderMatcherPolicyTests_Comparer_MoreMatchersFirst(gw):
    """HeaderMetadataEndpointComparer: more header matchers rank first, whatever file order."""
    assert route_of(gw, "/meta") == "meta"
    assert route_of(gw, "/meta", [("X-Canary", "1")]) == "meta-canary"
    assert route_of(gw, "/meta", [("X-Canary", "1"), ("X-Two", "1")]) == "meta-two"


def test_QueryParameterMatcherPolicy_Comparer_MoreMatchersFirst(gw):
    """QueryParameterMatcherPolicy's comparer: a query rule ranks before none."""
    assert route_of(gw, "/q?v=2") == "q-v"
    assert route_of(gw, "/q?v=3") == "q"


def test_HttpMethodMatcherPolicy_Comparer_MethodsFirst(gw):
    """ASP.NET HttpMethodMatcherPolicy (an IEndpointComparerPolicy): methods rank first."""
    assert route_of(gw, "/mth", method="POST") == "mth-post"
    assert route_of(gw, "/mth") == "mth"


def test_HostMatcherPolicy_Comparer_HostsFirst(gw):
    """ASP.NET HostMatcherPolicy: a route with hosts ranks before one without."""
    assert route_of(gw, "/hst", host="a.example") == "hst-a"
    assert route_of(gw, "/hst", host="c.example") == "hst"


# ---- RoutePrecedence (aspnetcore src/Http/Routing/src/Template/RoutePrecedence.cs) ----

@pytest.mark.parametrize("path,route", [
    ("/pr1/zzb", "pr-pr1"),    # literal first segment beats a parameter
    ("/pr2/zzb", "pr-param"),
    ("/x/y", "x-lit"),          # 1.1 before 1.3 before 1.5
    ("/x/q", "x-param"),
    ("/x/q/r", "x-catch"),
    ("/x/q/z", "x-deep"),       # 1.31 before 1.5
    ("/x", "x-catch"),          # the catch-all may be empty
    ("/ord/lit", "ord-catch"),  # RouteConfig.Order decides first
])
def test_RoutePrecedence_ComputeInbound(gw, path, route):
    assert route_of(gw, path) == route


# ---- route constraints and complex segments (aspnetcore src/Http/Routing/src/Patterns,
# Constraints; the DfaMatcher drops a candidate whose constraints fail) ----

@pytest.mark.parametrize("path,route", [
    ("/c/42", "c-int"),            # 1.2 before 1.3, whatever the file order
    ("/c/-7", "c-int"),
    ("/c/abc", "c-any"),           # the constraint fails: the next candidate
    ("/c/2147483648", "c-any"),    # beyond int
    ("/c/me", "c-me"),             # a literal before both
    ("/f/report.final.pdf", "f-ext"),  # complex segment (2) before a parameter (3)
    ("/f/readme", "f-any"),
    ("/f/.profile", "f-any"),      # "{name}" needs a character
    ("/p/prefix-12", "p-id"),
    ("/p/PREFIX-12", "p-id"),      # literal text ignores case
    ("/p/prefix-x", 404),          # the part's constraint fails
    ("/p/xprefix-12", 404),        # a leading literal must start the segment
    ("/dl/a.tar.gz", "dl"),        # "{file}.{ext?}"
    ("/dl/readme", "dl"),          # without the optional part
    ("/dl/readme.", 404),          # a trailing period needs the optional value
])
def test_RoutePatternMatcher_constraints_and_complex_segments(gw, path, route):
    assert route_of(gw, path) == route


@pytest.mark.parametrize("name,value,match", CONSTRAINT_VECTORS)
def test_RouteConstraints_default_map(gw, name, value, match):
    assert route_of(gw, "/k/%s/%s" % (name, value)) == ("k-" + name if match else "k-fallback")


@pytest.mark.parametrize("target,path", [
    ("/mvc", "/to/Home/Index"),               # defaults fill the missing segments
    ("/mvc/shop", "/to/shop/Index"),
    ("/mvc/shop/list/7", "/to/shop/list/7"),  # {id?} absent: no value, no trailing slash
])
def test_RoutePatternMatcher_defaults(gw, target, path):
    assert echo(gw, target)[0] == path


# ---- HttpMethodMatcherPolicy 405 (aspnetcore src/Http/Routing/src/Matching) ----

def test_HttpMethodMatcherPolicy_405_with_Allow(gw):
    st, h, _ = request(gw, "GET", "/m405")
    assert st == 405
    assert sorted(a.strip() for a in hget(h, "allow").split(",")) == ["DELETE", "POST", "PUT"]
    assert route_of(gw, "/m405", method="PUT") == "m405-post"
    assert route_of(gw, "/m405", method="DELETE") == "m405-del"


def test_HttpMethodMatcherPolicy_404_when_path_unknown(gw):
    assert request(gw, "GET", "/nowhere/at/all")[0] == 404


def test_HttpMethodMatcherPolicy_405_needs_the_other_constraints(gw):
    """Our reading: only a method that alone fails gives 405 (docs/yarp.md)."""
    assert request(gw, "GET", "/m405h", host="b.example")[0] == 405
    assert request(gw, "GET", "/m405h", host="c.example")[0] == 404


# ---- non-ASCII paths and hosts (RoutePatternMatcher, HostMatcherPolicy) ----

@pytest.mark.parametrize("target,match", [
    ("/caf%C3%A9", True), ("/caf%c3%a9", True), ("/CAF%C3%A9", True), ("/cafe", False)])
def test_RoutePatternMatcher_non_ascii_literal(gw, target, match):
    assert (route_of(gw, target) == "cafe") == match


@pytest.mark.parametrize("host,route", [
    ("xn--bcher-kva.example", "idn"),
    ("XN--BCHER-KVA.example", "idn"),
    ("a.xn--mnchen-3ya.de", "idn-wild"),
    ("xn--mnchen-3ya.de", 404),               # a wildcard never matches the bare domain
    ("%s" % "über.example".encode("idna").decode(), "idn-upper"),
])
def test_HostMatcherPolicy_punycode(gw, host, route):
    path = "/idn" if route != "idn" else "/anything"
    assert route_of(gw, path, host=host) == route


# ---- X-Forwarded and Forwarded (Transforms/ForwardedTransformFactory.cs) ----

SPOOF = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "gopher"),
         ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Prefix", "/evil"),
         ("Forwarded", "for=6.6.6.6;proto=gopher")]


def test_TransformBuilder_default_XForwarded_Set_removes_spoofing(gw):
    _, h = echo(gw, "/t/plain", SPOOF)
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["gw.test"]
    assert "x-forwarded-prefix" not in h


def test_ForwardedTransformExtensions_AddXForwarded_removes_Forwarded(gw):
    """AddXForwarded(removeForwardedHeader: true), the default."""
    _, h = echo(gw, "/t/plain", SPOOF)
    assert "forwarded" not in h


def test_ForwardedTransformFactory_Append_list_form_without_prefix(gw):
    """Was a 500 for every request without X-Forwarded-Prefix."""
    _, h = echo(gw, "/t/xfal")
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert "x-forwarded-prefix" not in h


def test_ForwardedTransformFactory_Append(gw):
    _, h = echo(gw, "/t/xfa", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")])
    assert h["x-forwarded-for"] == ["1.2.3.4, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["https, http"]
    assert h["x-forwarded-host"] == ["gw.test"]


def test_ForwardedTransformFactory_Set(gw):
    _, h = echo(gw, "/t/xfs", SPOOF)
    assert h["x-forwarded-for"] == ["127.0.0.1"] and h["x-forwarded-proto"] == ["http"]
    assert "forwarded" not in h


def test_ForwardedTransformFactory_Off_disables_defaults(gw):
    _, h = echo(gw, "/t/xfo", [("X-Forwarded-For", "1.2.3.4")])
    assert h["x-forwarded-for"] == ["1.2.3.4"]  # left as the client sent it
    assert "x-forwarded-proto" not in h and "x-forwarded-host" not in h


def test_ForwardedTransformFactory_Remove(gw):
    _, h = echo(gw, "/t/xfr", SPOOF)
    for n in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"):
        assert n not in h, n


def test_ForwardedTransformFactory_per_header_override(gw):
    _, h = echo(gw, "/t/xfforoff", [("X-Forwarded-For", "1.2.3.4")])
    assert h["x-forwarded-for"] == ["1.2.3.4"]
    assert h["x-forwarded-proto"] == ["http"]


def test_ForwardedTransformFactory_HeaderPrefix(gw):
    _, h = echo(gw, "/t/xfp")
    assert h["x-fwd-for"] == ["127.0.0.1"] and h["x-fwd-host"] == ["gw.test"]
    assert "x-forwarded-for" not in h


def test_ForwardedTransformFactory_Off_then_one_header(gw):
    _, h = echo(gw, "/t/xfpa", [("X-Forwarded-Proto", "https")])
    assert h["x-forwarded-proto"] == ["https, http"]
    assert "x-forwarded-for" not in h


def test_RequestHeaderXForwardedPrefixTransform_from_removed_prefix(gw):
    """Our X-Forwarded-Prefix is what PathRemovePrefix took off (docs/yarp.md)."""
    path, h = echo(gw, "/t/strip/a")
    assert path == "/a" and h["x-forwarded-prefix"] == ["/t/strip"]


def test_ForwardedTransformFactory_Forwarded_removes_XForwarded(gw):
    """TransformHelpers.RemoveAllXForwardedHeaders once a Forwarded transform is on."""
    _, h = echo(gw, "/t/fwd", SPOOF)
    for n in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"):
        assert n not in h, n
    assert h["forwarded"] == ["for=127.0.0.1;proto=http"]


def test_RequestHeaderForwardedTransform_Append(gw):
    _, h = echo(gw, "/t/fwda", [("Forwarded", "proto=https")])
    assert h["forwarded"] == ["proto=https, proto=http"]


# ---- Host (Transforms/RequestHeaderOriginalHostTransform.cs) ----

def test_RequestHeaderOriginalHostTransform_wins_over_destination_host(gw):
    _, h = echo(gw, "/t/orighost", host="client.example")
    assert h["host"] == ["client.example"]


def test_destination_host_without_OriginalHost(gw):
    _, h = echo(gw, "/t/desthost", host="client.example")
    assert h["host"] == ["dest.internal"]


# ---- PathPattern (Transforms/PathRouteValuesTransform.cs, ASP.NET TemplateBinder) ----

@pytest.mark.parametrize("target,path", [
    ("/t/pp1/a/b", "/new/a%2Fb"),     # {*rest}: '/' encoded
    ("/t/pp1/a", "/new/a"),
    ("/t/pp2/a/b", "/new/a/b"),       # {**rest}: kept
    ("/t/pp3", "/new"),               # missing value: no trailing slash
    ("/t/pp3/", "/new"),
    ("/t/pp4/7/c/d", "/v/7/x/c/d"),
    ("/t/pp4/7", "/v/7/x"),
])
def test_PathRouteValuesTransformTests(gw, target, path):
    assert echo(gw, target)[0] == path


# ---- headers YARP never forwards (Forwarder/RequestUtilities.cs _headersToExclude) ----

@pytest.mark.parametrize("name", ["Alt-Svc", "Proxy-Authentication-Info", "Proxy-Features",
                                  "Proxy-Instruction", "Security-Scheme", "ALPN", "Close",
                                  "HTTP2-Settings", "Upgrade-Insecure-Requests",
                                  "Proxy-Authorization", "Keep-Alive", "TE"])
def test_RequestUtilities_ShouldSkipRequestHeader(gw, name):
    _, h = echo(gw, "/t/plain", [(name, "1"), ("X-Control", "kept")])
    assert name.lower() not in h
    assert h["x-control"] == ["kept"]


@pytest.mark.parametrize("name", ["Alt-Svc", "Proxy-Authentication-Info", "HTTP2-Settings",
                                  "ALPN", "Security-Scheme", "Proxy-Features",
                                  "Proxy-Instruction", "Close"])
def test_RequestUtilities_ShouldSkipResponseHeader(gw, name):
    st, h, body = request(gw, "GET", "/t/scripted")
    assert st == 200 and body == b"ok" and hget(h, "x-kept") == "yes"
    assert hget(h, name) is None


# ---- ResponseHeader When (Transforms/ResponseHeaderValueTransform.cs, ResponseCondition) ----

def test_ResponseCondition_on_gateway_502(gw):
    st, h, _ = request(gw, "GET", "/t/fail")
    assert st == 502
    assert hget(h, "x-when-failure") == "f" and hget(h, "x-when-always") == "a"
    assert hget(h, "x-when-success") is None


def test_ResponseCondition_on_success(gw):
    st, h, _ = request(gw, "GET", "/t/ok")
    assert st == 200
    assert hget(h, "x-when-success") == "s" and hget(h, "x-when-always") == "a"
    assert hget(h, "x-when-failure") is None


# ---- header copying (Transforms/RequestHeadersAllowedTransform.cs, ResponseHeadersAllowed-
# Transform.cs, Builder/StructuredTransformer.cs) ----

def test_RequestHeadersAllowedTransformTests_AllowedHeaders_Copied(gw):
    _, h = echo(gw, "/t/allowed", [("X-A", "1"), ("X-B", "2"), ("X-C", "3"), ("Accept", "*/*")])
    assert h["x-a"] == ["1"] and h["x-b"] == ["2"]
    assert "x-c" not in h and "accept" not in h
    assert "x-forwarded-for" in h and h["host"] != ["gw.test"]  # the defaults still apply


def test_StructuredTransformer_ResponseHeadersCopy_false(gw):
    st, h, body = request(gw, "GET", "/t/nocopy")
    assert st == 200 and json.loads(body)["path"] == "/t/nocopy"
    assert hget(h, "x-upstream") is None and hget(h, "content-type") is None
    assert hget(h, "x-own") == "1"


def test_ResponseHeadersAllowedTransformTests(gw):
    st, h, _ = request(gw, "GET", "/t/respallowed")
    assert st == 200 and hget(h, "content-type") == "application/json"
    assert hget(h, "x-upstream") is None


# ---- trailers (Transforms/ResponseTrailer*Transform.cs) ----

def trailers_of(body):
    """The data and the trailer fields of a chunked body."""
    data, trailers = b"", {}
    while True:
        line, _, body = body.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if n == 0:
            break
        data, body = data + body[:n], body[n + 2:]
    for ln in body.decode("latin-1").split("\r\n"):
        if ln:
            k, _, v = ln.partition(":")
            trailers[k.strip().lower()] = v.strip()
    return data, trailers


def test_ResponseTrailersTransform_copies_by_default(gw):
    st, h, body = request(gw, "GET", "/t/trailers", [("TE", "trailers")])
    assert st == 200 and hget(h, "transfer-encoding") == "chunked"
    assert trailers_of(body) == (b"ok", {"grpc-status": "0", "x-debug": "a",
                                         "x-internal": "s"})


def test_ResponseTrailersAllowed_Value_Remove_Transforms(gw):
    """Allowed copies the named trailers; Append extends one, Set adds one, Remove with
    When Failure leaves a 200 alone."""
    st, _, body = request(gw, "GET", "/t/trailers2", [("TE", "trailers")])
    assert st == 200
    assert trailers_of(body) == (b"ok", {"grpc-status": "0", "x-debug": "a, b", "x-added": "1"})


def test_StructuredTransformer_ResponseTrailersCopy_false(gw):
    st, _, body = request(gw, "GET", "/t/trailers3", [("TE", "trailers")])
    assert st == 200 and trailers_of(body) == (b"ok", {})


def test_ResponseTrailerValueTransform_without_destination_trailers(gw):
    """YARP runs the trailer transforms after every proxied body: a chunked answer with no
    trailers gets the Set one (When Success), not the Failure one."""
    st, h, body = request(gw, "GET", "/chunked/5", [("TE", "trailers")])
    assert st == 200 and hget(h, "transfer-encoding") == "chunked"
    assert trailers_of(body) == (b"xxxxx", {"x-trace": "gw"})


# ---- load balancing (LoadBalancing/FirstLoadBalancingPolicy.cs) ----

def _upstream_port(body):
    return json.loads(body)["upstream"]


@pytest.mark.parametrize("path,index", [
    ("/lb/first", 1),    # "a1" < "b-dest" < "B2" ignoring case (ordinal would pick "B2")
    ("/lb/first2", 2),   # "a" < "b" < "_x": OrdinalIgnoreCase folds to upper case
])
def test_FirstLoadBalancingPolicy_OrdinalIgnoreCase(gw, path, index):
    st, _, body = request(gw, "GET", path)
    assert st == 200 and _upstream_port(body) == gw.ups[index].port


# ---- session affinity (SessionAffinity/*.cs) ----

def test_xxh64_vectors_of_this_module():
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1


def test_HashCookieSessionAffinityPolicyTests_AffinitizeRequest_CookieSet(gw):
    """YARP's own value for "dest-B" is 53c079ed4c377b0d."""
    assert yarp_hash("dest-B") == "53c079ed4c377b0d"
    seen = set()
    for _ in range(6):
        st, h, body = request(gw, "GET", "/lb/hashre")
        cookie = hget(h, "set-cookie").split(";")[0]
        name, value = cookie.split("=", 1)
        idx = [u.port for u in gw.ups].index(_upstream_port(body))
        assert name == "My.Affinity" and value == yarp_hash(["dest-A", "dest-B", "dest-C"][idx])
        seen.add(value)
    assert "53c079ed4c377b0d" in seen


@pytest.mark.parametrize("dest,index", [("dest-A", 0), ("dest-B", 1), ("dest-C", 2)])
def test_HashCookieSessionAffinityPolicyTests_FindAffinitizedDestination(gw, dest, index):
    """A cookie issued by YARP keeps its destination after the move."""
    for _ in range(3):
        st, h, body = request(gw, "GET", "/lb/hash503",
                              [("Cookie", "Some-Cookie=ZZZ; My.Affinity=%s" % yarp_hash(dest))])
        assert st == 200 and _upstream_port(body) == gw.ups[index].port
        assert hget(h, "set-cookie") is None


@pytest.mark.parametrize("path,fields", [
    ("/lb/hash503", [("Cookie", "My.Affinity=0123456789abcdef")]),
    ("/lb/cookie503", [("Cookie", "aff=nobody")]),
    ("/lb/hdr503", [("X-Session-Key", "a"), ("X-Session-Key", "b")]),
])
def test_Return503ErrorAffinityFailurePolicyTests_Handle(gw, path, fields):
    """DestinationNotFound and AffinityKeyExtractionFailed go to the failure policy."""
    assert request(gw, "GET", path, fields)[0] == 503


@pytest.mark.parametrize("path,fields", [
    ("/lb/hashre", [("Cookie", "My.Affinity=0123456789abcdef")]),
    ("/lb/hdrre", [("X-Session-Key", "a"), ("X-Session-Key", "b")]),
])
def test_RedistributeAffinityFailurePolicyTests_Handle(gw, path, fields):
    st, h, _ = request(gw, "GET", path, fields)
    assert st == 200


def test_CustomHeaderSessionAffinityPolicyTests_MultipleValues_Redistribute_rebinds(gw):
    st, h, _ = request(gw, "GET", "/lb/hdrre", [("X-Session-Key", "a"), ("X-Session-Key", "b")])
    assert st == 200 and hget(h, "x-session-key")


# ---- trailers to an HTTP/2 client (Transforms/ResponseTrailerValueTransform.cs) ----

def _h2_get(port, path):
    """GET over h2c (prior knowledge); returns (status, body, trailers as a dict)."""
    import h2.config
    import h2.connection
    import h2.events
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    status, body, trailers = None, b"", {}
    try:
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "GET"), (":path", path), (":scheme", "http"),
                              (":authority", "gw.test"), ("te", "trailers")], end_stream=True)
        s.sendall(conn.data_to_send())
        done = False
        while not done:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = int(dict(ev.headers)[":status"])
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    done = True
            s.sendall(conn.data_to_send())
    finally:
        s.close()
    return status, body, trailers


def test_ResponseTrailerValueTransform_over_http2(tmp_path, gateway_factory, echo_upstream):
    """An HTTP/2 client always has room for trailers: the Set one arrives after a destination
    answer framed by Content-Length too, and the Failure one only on a failure status."""
    port = free_port()
    cfg = base_config(tmp_path, port, routes=[
        _proxy("h2-trl", "/{**rest}", transforms=[
            {"ResponseTrailer": "X-Trace", "Set": "gw"},
            {"ResponseTrailer": "X-Fail", "Set": "f", "When": "Failure"}])],
        clusters=[{"id": "echo", "destinations": [{"id": "e", "address": echo_upstream.url}]}])
    cfg["servers"][0]["http2"] = {"h2c": True}
    gateway_factory(cfg)
    st, body, trailers = _h2_get(port, "/chunked/3")
    assert (st, body, trailers) == (200, b"xxx", {"x-trace": "gw"})
    st, body, trailers = _h2_get(port, "/length")
    assert st == 200 and json.loads(body)["path"] == "/length" and trailers == {"x-trace": "gw"}
    st, _, trailers = _h2_get(port, "/status/503")
    assert st == 503 and trailers == {"x-fail": "f"}
