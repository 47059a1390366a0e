"""Parsing of ``/v2/`` paths, repository names, tags and digests.

The table tests pin the OCI error codes. The property tests compare the parser with the
OCI distribution grammar written out by hand below (no regular expressions, so a mistake
in the parser's patterns is not repeated in the oracle): every string the grammar allows
is accepted and round-trips, every other string is refused with a 4xx ``ProtocolError``,
and nothing else is ever raised, whatever the path.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from registry_proxy.errors import ProtocolError
from registry_proxy.reference import (
    MAX_NAME_LENGTH,
    Kind,
    parse_digest,
    parse_path,
    validate_name,
    validate_reference,
)

HEX = "a" * 64

# -- the grammar, by hand -----------------------------------------------------------------

LOWER_ALNUM = string.ascii_lowercase + string.digits
TAG_FIRST = string.ascii_letters + string.digits + "_"
TAG_REST = TAG_FIRST + ".-"
HEX_DIGITS = "0123456789abcdef"
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}


def is_name_component(text: str) -> bool:
    """``[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*``."""
    i, n = 0, len(text)
    while True:
        start = i
        while i < n and text[i] in LOWER_ALNUM:
            i += 1
        if i == start:
            return False  # a separator must sit between two alphanumeric runs
        if i == n:
            return True
        separator_start = i
        while i < n and text[i] in "._-":
            i += 1
        separator = text[separator_start:i]
        if separator not in (".", "_", "__") and set(separator) != {"-"}:
            return False


def is_name(text: str) -> bool:
    return 0 < len(text) <= MAX_NAME_LENGTH and all(map(is_name_component, text.split("/")))


def is_tag(text: str) -> bool:
    return 0 < len(text) <= 128 and text[0] in TAG_FIRST and all(c in TAG_REST for c in text[1:])


def is_supported_digest(text: str) -> bool:
    algorithm, colon, encoded = text.partition(":")
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    return bool(colon) and length == len(encoded) and all(c in HEX_DIGITS for c in encoded)


# -- strategies ---------------------------------------------------------------------------

alnum_runs = st.text(LOWER_ALNUM, min_size=1, max_size=6) | st.sampled_from(
    # Words the path syntax uses are valid name components too.
    ["blobs", "manifests", "tags", "list", "uploads", "v2", "sha256"]
)
separators = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def name_components(draw: st.DrawFn) -> str:
    runs = draw(st.lists(alnum_runs, min_size=1, max_size=4))
    text = runs[0]
    for run in runs[1:]:
        text += draw(separators) + run
    return text


# Whole components that are words of the path syntax, so that names such as
# "x/blobs/uploads" or "tags/list" come up often.
path_words = st.sampled_from(["blobs", "uploads", "manifests", "tags", "list"])
names = (
    st.lists(name_components() | path_words, min_size=1, max_size=6)
    .map("/".join)
    .filter(lambda name: len(name) <= MAX_NAME_LENGTH)
)
tags = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(TAG_FIRST),
    st.text(st.sampled_from(TAG_REST), max_size=127),
)
sha256_digests = st.text(HEX_DIGITS, min_size=64, max_size=64).map(lambda h: f"sha256:{h}")
sha512_digests = st.text(HEX_DIGITS, min_size=128, max_size=128).map(lambda h: f"sha512:{h}")
digests = sha256_digests | sha512_digests
# Mostly the characters the grammars are made of, so that random text is sometimes valid.
grammar_text = st.text(
    st.sampled_from(LOWER_ALNUM[:4] + "0.9_-/:Az=@ ") | st.characters(), max_size=40
)


def _refused(code: str, call: object, *args: str) -> ProtocolError:
    assert callable(call)
    with pytest.raises(ProtocolError) as caught:
        call(*args)
    assert caught.value.code == code
    assert 400 <= caught.value.status < 500
    return caught.value


# -- table tests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind", "name", "reference"),
    [
        ("/v2/", Kind.PING, "", ""),
        ("/v2", Kind.PING, "", ""),
        ("/v2/library/alpine/manifests/3.19", Kind.MANIFEST, "library/alpine", "3.19"),
        (f"/v2/a/b/c/manifests/sha256:{HEX}", Kind.MANIFEST, "a/b/c", f"sha256:{HEX}"),
        (f"/v2/my-org/app.x/blobs/sha256:{HEX}", Kind.BLOB, "my-org/app.x", f"sha256:{HEX}"),
        ("/v2/team/img/tags/list", Kind.TAGS, "team/img", ""),
        # A repository may itself be called "blobs" or "manifests".
        (f"/v2/blobs/blobs/sha256:{HEX}", Kind.BLOB, "blobs", f"sha256:{HEX}"),
        # ...or end in "blobs/uploads": only an upload URL's own tail means an upload.
        (f"/v2/x/blobs/uploads/blobs/sha256:{HEX}", Kind.BLOB, "x/blobs/uploads", f"sha256:{HEX}"),
        ("/v2/blobs/uploads/manifests/v1", Kind.MANIFEST, "blobs/uploads", "v1"),
        ("/v2/x/blobs/uploads/tags/list", Kind.TAGS, "x/blobs/uploads", ""),
    ],
)
def test_parse_path_accepts_spec_paths(path: str, kind: Kind, name: str, reference: str) -> None:
    parsed = parse_path(path)
    assert (parsed.kind, parsed.name, parsed.reference) == (kind, name, reference)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v2/Upper/blobs/sha256:" + HEX, 400, "NAME_INVALID"),
        ("/v2/a//b/blobs/sha256:" + HEX, 400, "NAME_INVALID"),
        ("/v2/../etc/blobs/sha256:" + HEX, 400, "NAME_INVALID"),
        ("/v2/a/blobs/sha256:" + "A" * 64, 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/md5:" + "a" * 32, 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/latest", 400, "DIGEST_INVALID"),
        ("/v2/a/manifests/-bad", 400, "MANIFEST_INVALID"),
        ("/v2/a/manifests/" + "x" * 129, 400, "MANIFEST_INVALID"),
        ("/v2/a/blobs/uploads/", 405, "UNSUPPORTED"),
        ("/v2/a/blobs/uploads", 405, "UNSUPPORTED"),
        ("/v2/a/b/blobs/uploads/0f3c-session", 405, "UNSUPPORTED"),
        ("/v2/a/other/x", 404, "UNSUPPORTED"),
        ("/v3/a/blobs/x", 404, "UNSUPPORTED"),
    ],
)
def test_parse_path_rejects_bad_input_with_oci_codes(path: str, status: int, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_path(path)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert b'"errors"' in caught.value.body()


def test_sha512_digest_is_accepted() -> None:
    digest = parse_digest("sha512:" + "0" * 128)
    assert str(digest) == "sha512:" + "0" * 128


# -- the oracle itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("a", True),
        ("a__b", True),
        ("a---b", True),
        ("a.b_c-d/e", True),
        ("a___b", False),
        ("a._b", False),
        ("a..b", False),
        ("-a", False),
        ("a-", False),
        ("a/", False),
        ("", False),
        ("A", False),
    ],
)
def test_the_hand_written_name_grammar(text: str, valid: bool) -> None:
    # The oracle is only worth something if it is right; these cases come from the spec.
    assert is_name(text) is valid


# -- properties: names --------------------------------------------------------------------


@given(names, digests)
def test_every_valid_name_round_trips_through_a_blob_path(name: str, digest: str) -> None:
    assert is_name(name)
    parsed = parse_path(f"/v2/{name}/blobs/{digest}")
    assert (parsed.kind, parsed.name, parsed.reference) == (Kind.BLOB, name, digest)


@given(names, tags | digests)
def test_every_valid_name_and_reference_round_trip_through_a_manifest_path(
    name: str, reference: str
) -> None:
    parsed = parse_path(f"/v2/{name}/manifests/{reference}")
    assert (parsed.kind, parsed.name, parsed.reference) == (Kind.MANIFEST, name, reference)


@given(names)
def test_every_valid_name_round_trips_through_a_tags_path(name: str) -> None:
    parsed = parse_path(f"/v2/{name}/tags/list")
    assert (parsed.kind, parsed.name) == (Kind.TAGS, name)


@given(grammar_text)
@example("a" * MAX_NAME_LENGTH)
@example("a" * (MAX_NAME_LENGTH + 1))
@example("a\n")
@example("é")
def test_a_name_is_accepted_exactly_when_the_grammar_allows_it(text: str) -> None:
    if is_name(text):
        assert validate_name(text) == text
    else:
        _refused("NAME_INVALID", validate_name, text)


@given(names, st.sampled_from(["..", "._", "_.", ".-", "-.", "_-", "-_", "___", "//", "A", "@"]))
def test_a_broken_separator_or_character_makes_a_name_invalid(name: str, junk: str) -> None:
    for broken in (junk + name, name + junk, name[:1] + junk + name[1:]):
        assert not is_name(broken)
        error = _refused("NAME_INVALID", validate_name, broken)
        assert error.status == 400
        # Through a whole path too: the name is everything before the endpoint.
        with pytest.raises(ProtocolError) as caught:
            parse_path(f"/v2/{broken}/blobs/sha256:{HEX}")
        assert caught.value.code == "NAME_INVALID"


@given(name_components())
def test_a_name_longer_than_the_limit_is_invalid(component: str) -> None:
    name = component
    while len(name) <= MAX_NAME_LENGTH:
        name += "/" + component
    assert is_name(name[:MAX_NAME_LENGTH].rstrip("/._-")) and not is_name(name)
    _refused("NAME_INVALID", validate_name, name)


# -- properties: tags and digests ---------------------------------------------------------


@given(tags)
def test_every_valid_tag_is_accepted(tag: str) -> None:
    assert validate_reference(tag) == tag


@given(grammar_text.filter(lambda text: ":" not in text))
@example("x" * 128)
@example("x" * 129)
@example(".hidden")
@example("_ok")
def test_a_tag_is_accepted_exactly_when_the_grammar_allows_it(text: str) -> None:
    if is_tag(text):
        assert validate_reference(text) == text
    else:
        _refused("MANIFEST_INVALID", validate_reference, text)


@given(digests)
def test_every_supported_digest_round_trips(text: str) -> None:
    digest = parse_digest(text)
    assert str(digest) == text
    assert (digest.algorithm, digest.encoded) == tuple(text.split(":"))
    assert validate_reference(text) == text


@given(grammar_text | digests.map(lambda d: d[:-1] + "X") | digests.map(lambda d: d + "0"))
@example("sha256:" + "A" * 64)
@example("sha384:" + "0" * 96)
@example("sha256:" + "0" * 64 + "\n")
def test_a_digest_is_accepted_exactly_when_it_is_sha256_or_sha512_hex(text: str) -> None:
    if is_supported_digest(text):
        assert str(parse_digest(text)) == text
    else:
        error = _refused("DIGEST_INVALID", parse_digest, text)
        assert error.status == 400


# -- properties: whole paths --------------------------------------------------------------


@given(st.lists(grammar_text | st.sampled_from(["blobs", "manifests", "tags", "list"])))
@example(["a", "blobs", "uploads"])
@example(["a", "tags", "list", ""])
def test_parse_path_raises_nothing_but_protocol_error_and_round_trips(parts: list[str]) -> None:
    path = "/v2/" + "/".join(parts)
    try:
        parsed = parse_path(path)
    except ProtocolError as exc:
        assert exc.status in (400, 404, 405)
        assert exc.code in ("NAME_INVALID", "MANIFEST_INVALID", "DIGEST_INVALID", "UNSUPPORTED")
        return
    # What was accepted is valid, and rebuilding the path from it gives the path back.
    rebuilt = {
        Kind.PING: "/v2/",
        Kind.TAGS: f"/v2/{parsed.name}/tags/list",
        Kind.MANIFEST: f"/v2/{parsed.name}/manifests/{parsed.reference}",
        Kind.BLOB: f"/v2/{parsed.name}/blobs/{parsed.reference}",
    }[parsed.kind]
    assert rebuilt == path
    if parsed.kind is not Kind.PING:
        assert is_name(parsed.name)
    if parsed.kind is Kind.BLOB:
        assert is_supported_digest(parsed.reference)
    if parsed.kind is Kind.MANIFEST:
        assert is_tag(parsed.reference) or is_supported_digest(parsed.reference)
