"""Setting the visitor's address inside JSON bodies, byte-exact elsewhere."""

from __future__ import annotations

import gzip
import json

import pytest

from proxy.errors import BadRequest, UnsupportedMediaType
from proxy.jsonbody import set_member

IP = "203.0.113.7"


# Only the member's value changes; everything else keeps its exact bytes.
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '{"type":"event","payload":{"ip":"192.0.2.66","n":1e5}}',
            '{"type":"event","payload":{"ip":"203.0.113.7","n":1e5}}',
        ),
        (
            '{ "payload" : { "n" : 1.50 , "ip" : null } , "z" : [1,2] }',
            '{ "payload" : { "n" : 1.50 , "ip" : "203.0.113.7" } , "z" : [1,2] }',
        ),
        # Missing member, missing object, empty object.
        (
            '{"payload":{"a":"\\u00e9"}}',
            '{"payload":{"a":"\\u00e9","ip":"203.0.113.7"}}',
        ),
        ('{"type":"event"}', '{"type":"event","payload":{"ip":"203.0.113.7"}}'),
        ("{}", '{"payload":{"ip":"203.0.113.7"}}'),
        ('{"payload":{}}', '{"payload":{"ip":"203.0.113.7"}}'),
        # Duplicates: every copy, since parsers keep the last one.
        (
            '{"payload":{"ip":"1.1.1.1","ip":"192.0.2.66"}}',
            '{"payload":{"ip":"203.0.113.7","ip":"203.0.113.7"}}',
        ),
        # An escaped key is the same key.
        (
            '{"payload":{"\\u0069p":"192.0.2.66"}}',
            '{"payload":{"\\u0069p":"203.0.113.7"}}',
        ),
        # A member holding a nested value is replaced whole.
        ('{"payload":{"ip":{"v":"x"}}}', '{"payload":{"ip":"203.0.113.7"}}'),
        # A batch: each object in a top-level array.
        (
            '[{"payload":{"ip":"x"}},{"payload":{}}, 3]',
            '[{"payload":{"ip":"203.0.113.7"}},{"payload":{"ip":"203.0.113.7"}}, 3]',
        ),
        # Not an object where one is needed: left alone.
        ('{"payload":"text"}', '{"payload":"text"}'),
    ],
)
def test_member_set_rest_unchanged(body: str, expected: str) -> None:
    out = set_member(body.encode(), ["payload", "ip"], IP)
    assert out.decode() == expected
    json.loads(out)


def test_gzip_body_edited_and_recompressed() -> None:
    body = gzip.compress(b'{"payload":{"ip":"192.0.2.66"}}')
    out = set_member(body, ["payload", "ip"], IP, "gzip", limit=1000)
    assert gzip.decompress(out) == b'{"payload":{"ip":"203.0.113.7"}}'


# Bodies the rule's promise cannot be kept for are refused, not passed on.
@pytest.mark.parametrize(
    ("body", "encoding", "error"),
    [
        (b"not json", "", BadRequest),
        (b'"a string"', "", BadRequest),
        (b"\xff\xfe{}", "", BadRequest),
        (b"[" * 100000, "", BadRequest),
        (b'{"a":1}', "br", UnsupportedMediaType),
        (b"not gzip", "gzip", BadRequest),
        (gzip.compress(b"{}" + b" " * 5000), "gzip", BadRequest),  # over the limit
    ],
)
def test_unusable_bodies_refused(
    body: bytes, encoding: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        set_member(body, ["payload", "ip"], IP, encoding, limit=1000)
