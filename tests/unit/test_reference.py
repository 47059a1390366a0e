import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_proxy.errors import ProtocolError
from registry_proxy.reference import Kind, parse_digest, parse_path, validate_name

HEX = "a" * 64


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


@given(st.text(max_size=80))
def test_parse_path_never_raises_anything_but_protocol_error(tail: str) -> None:
    try:
        parsed = parse_path("/v2/" + tail)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500
        return
    if parsed.kind is not Kind.PING:
        validate_name(parsed.name)


@given(
    st.from_regex(
        r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*){0,3}", fullmatch=True
    )
)
def test_valid_names_round_trip(name: str) -> None:
    if len(name) <= 255:
        assert parse_path(f"/v2/{name}/blobs/sha256:{HEX}").name == name
