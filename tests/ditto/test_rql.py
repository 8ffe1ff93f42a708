"""The RQL subset, against the semantics documented in Ditto's ``basic-rql.md``."""

from __future__ import annotations

from typing import Any

import pytest

from beats.ditto.rql import MISSING, RqlError, lookup, parse

THING: dict[str, Any] = {
    "thingId": "org.eclipse.ditto:myThing-1",
    "attributes": {
        "owner": "SID123",
        "count": 43,
        "floor": "upper floor",
        "manufacturer": "ACME & Sons Ltd",
        "tags": [],
        "zero": 0,
        "flag": False,
        "a/b": 1,
    },
    "features": {"lamp": {"properties": {"on": True}}},
    "topic:action": "created",
    "resource:path": "/",
}


@pytest.mark.parametrize(
    ("rql", "expected"),
    [
        ('eq(attributes/owner,"SID123")', True),
        ("eq(/attributes/owner,'SID123')", True),  # leading slash, single quotes
        ('ne(attributes/owner,"SID123")', False),
        ('ne(attributes/missing,"SID123")', False),  # "only things that have an owner"
        ("gt(attributes/count,42)", True),
        ("ge(attributes/count,43)", True),
        ("lt(attributes/count,43.5)", True),
        ("le(attributes/count,42)", False),
        ('gt(attributes/count,"42")', False),  # no conversion between types
        ('eq(attributes/count,"43")', False),
        ("eq(attributes/flag,0)", False),  # a boolean is not a number
        ('gt(thingId,"A000")', True),
        ('in(thingId,"A000","org.eclipse.ditto:myThing-1")', True),
        ("in(attributes/count,1,2)", False),
        ('like(thingId,"org.eclipse.ditto:myThing*")', True),
        ('like(attributes/owner,"SID?23")', True),
        ('like(attributes/owner,"*12*")', True),
        ('like(attributes/owner,"sid*")', False),
        ('ilike(attributes/owner,"sid*")', True),
        ('like(attributes/manufacturer,"ACME & Sons*")', True),
        ('like(attributes/owner,"SID[1]23")', False),  # only * and ? are wildcards
        ("exists(features/lamp)", True),
        ("exists(features/door)", False),
        ("empty(attributes/tags)", True),
        ("empty(attributes/missing)", True),
        ("empty(attributes/zero)", False),
        ("empty(attributes/flag)", False),
        ("not(empty(attributes/owner))", True),
        ('and(eq(attributes/floor,"upper floor"),gt(attributes/count,42))', True),
        ('or(lt(attributes/count,0),eq(attributes/owner,"nobody"))', False),
        ("not(exists(features/lamp))", False),
        ("eq(attributes/a~1b,1)", True),  # JSON pointer escape
        ("and(in(topic:action,'created','deleted'),eq(resource:path,'/'))", True),  # docs example
        ('eq(attributes/owner,"say \\"hi\\"")', False),
        (" and( exists(features/lamp) , eq(attributes/count, 43) ) ", True),
    ],
)
def test_documented_semantics(rql: str, expected: bool) -> None:
    assert parse(rql)(THING) is expected


@pytest.mark.parametrize(
    ("rql", "reason"),
    [
        ("", "empty"),
        ("eq(attributes/x", "ends early"),
        ("eq(attributes/x,1))", "unexpected"),
        ("eq(attributes/x,abc)", "neither a number"),
        ("eq(attributes/x)", "number of arguments"),
        ("exists(attributes/x,1)", "number of arguments"),
        ("in(attributes/x)", "number of arguments"),
        ("not(eq(a,1),eq(b,2))", "exactly one"),
        ("regex(attributes/x,1)", "unsupported"),
        ('eq("attributes/x",1)', "property"),
        ("like(attributes/x,1)", "string pattern"),
        ("(eq(a,1))", "operator"),
        ('eq(a,"unterminated)', "cannot read"),
    ],
)
def test_bad_filters(rql: str, reason: str) -> None:
    with pytest.raises(RqlError, match=reason):
        parse(rql)


def test_lookup() -> None:
    assert lookup(THING, "features/lamp/properties/on") is True
    assert lookup(THING, "/features/lamp/properties/on/deeper") is MISSING
    assert lookup(THING, "topic:action") == "created"
