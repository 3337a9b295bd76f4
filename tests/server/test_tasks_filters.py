"""The list-field filter language (server/services/tasks/filters.py) as a table: pure logic."""
from __future__ import annotations

import pytest

from server import errors
from server.services.tasks import filters

HAVE = {"x", "y"}


@pytest.mark.parametrize(("data", "have", "expected"), [
    (["x"], HAVE, True),
    (["z"], HAVE, False),
    (["z", "x"], HAVE, True),
    (["__$all", "x", "z"], HAVE, False),
    (["__$all", "x", "y"], HAVE, True),
    (["__$not", "x"], HAVE, False),
    (["-x"], HAVE, False),
    (["__$any", "-x"], {"-x"}, True),  # after an operator "-x" is a value, not an exclusion
    ([None], set(), True),
    ([None], HAVE, False),
    (["z", None], set(), True),
    (["__$or", "z", "__$not", "q"], HAVE, True),
    (["__$and", "x", "__$not", "y"], HAVE, False),
    ("x", HAVE, True),
])
def test_list_plans(data, have, expected):
    assert filters.parse_list("tags", data).matches(have) is expected


@pytest.mark.parametrize(("spec", "have", "expected"), [
    ({"any": {"include": [None]}}, set(), True),
    ({"any": {"include": [None]}}, HAVE, False),
    ({"any": {"exclude": [None]}}, HAVE, True),
    ({"all": {"include": ["x", "y"]}}, HAVE, True),
    ({"all": {"include": ["x"], "exclude": ["y"]}}, HAVE, False),
    ({"any": {"exclude": ["x", "y"]}}, HAVE, False),
    ({"any": {"include": ["z"]}, "all": {"include": ["x"]}, "op": "or"}, HAVE, True),
    ({"any": {"include": ["z"]}, "all": {"include": ["x"]}}, HAVE, False),
])
def test_field_filters(spec, have, expected):
    assert filters.parse_field_filter("tags", spec)(have) is expected


@pytest.mark.parametrize("data", [["__$not"], ["__$nope", "x"], [3], ["-"], ["__$not", "__$all", "x"]])
def test_bad_lists_name_the_field(data):
    with pytest.raises(errors.APIError) as err:
        filters.parse_list("status", data)
    assert err.value.code == 400 and "'status'" in err.value.msg


def test_values_at_reads_through_lists():
    doc = {"models": {"input": [{"model": "a"}, {"model": "b"}, "junk"]}, "status": "created"}
    assert filters.values_at(doc, "models.input.model") == {"a", "b"}
    assert filters.values_at(doc, "status") == {"created"}
    assert filters.values_at(doc, "execution.queue") == set()
