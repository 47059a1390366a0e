"""Strict readers of JSON request fields: every refusal is a 400 naming the field.

JSON is loose where the scheduler cannot be: ``true`` is not a number, ``1.0`` is not a
piece index, ``1e400`` parses as infinity and a 5,000-digit integer is valid JSON. Each
reader accepts exactly one JSON type and a bounded range, so nothing that reaches the core
can make it allocate without bound or compute with infinities. Unknown fields are refused
too: a misspelt optional field would otherwise be silently ignored.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any

from scheduler.service.errors import ProtocolError

# Integers and numbers must fit a signed 64-bit integer, so peers written in any language
# can round-trip them.
MAX_INT = 2**63 - 1
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_HOSTNAME_CHARS = 253
# The patterns below are also the OpenAPI document's (``openapi``), so they use only syntax
# that Python's ``re`` and ECMA-262 read alike: explicit character classes, no ``\s`` (the
# two disagree on which characters are spaces) and no lookarounds.
#
# Control characters (C0, DEL, C1) and the characters Python's ``str.isspace`` calls
# spaces, plus the byte-order mark.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
_SPACE = r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
IDENTIFIER_PATTERN = rf"^[^{_CONTROL}{_SPACE}]+$"
LABEL_PATTERN = rf"^[^{_CONTROL}]*$"
# OCI image-spec digest grammar: algorithm ":" encoded.
DIGEST_PATTERN = r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"
# Dot-separated labels of 1..63 letters, digits, '_' or '-', not starting or ending with
# '-'; a trailing dot is allowed. Dotted IPv4 addresses match it too.
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOSTNAME_PATTERN = rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?$"
_SHA256_HEX = re.compile(r"[a-f0-9]{64}")


def _compile(pattern: str) -> re.Pattern[str]:
    """A pattern of the document for ``fullmatch``: anchors off, ``\\uXXXX`` as Python reads it."""
    return re.compile(pattern.removeprefix("^").removesuffix("$"))


_IDENTIFIER = _compile(IDENTIFIER_PATTERN)
_LABEL = _compile(LABEL_PATTERN)
_DIGEST = _compile(DIGEST_PATTERN)
_HOSTNAME = _compile(HOSTNAME_PATTERN)
BODY = "body"
# Integers longer than this are out of every range the API has (``MAX_INT`` has 19 digits);
# they are not converted, so a 5,000-digit number costs nothing and names its field.
_MAX_INT_DIGITS = 24


def bad(field: str, message: str) -> ProtocolError:
    return ProtocolError(400, f"{field}: {message}", field)


class HugeInteger:
    """A JSON integer too long to be in range; it is refused by the field that holds it."""

    def __init__(self, digits: str) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"{self.digits[:10]}...({len(self.digits.lstrip('-'))} digits)"


def _parse_int(digits: str) -> int | HugeInteger:
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else HugeInteger(digits)


def parse_body(raw: bytes) -> object:
    """The JSON value of a request body; an empty body is an empty object."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw, parse_int=_parse_int)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(BODY, f"not valid JSON: {exc}") from None
    except RecursionError:
        # A megabyte of "[" nests deeper than the parser's recursion limit.
        raise bad(BODY, "JSON nested too deeply") from None


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | HugeInteger):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def as_int(value: object, field: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    if isinstance(value, HugeInteger):
        raise bad(field, f"must be in {minimum}..{maximum}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, f"expected an integer, got {json_type(value)}")
    if not minimum <= value <= maximum:
        raise bad(field, f"must be in {minimum}..{maximum}, got {value}")
    return value


def as_number(value: object, field: str, maximum: int = MAX_INT) -> float:
    """A finite number in ``0..maximum``; integers are accepted.

    The bound is compared exactly (Python compares ints and floats by value), as a JSON
    Schema validator does: ``2**63`` and ``9.3e18`` are both above ``2**63 - 1``.
    """
    if isinstance(value, HugeInteger):
        raise bad(field, f"must be in 0..{maximum}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(field, f"expected a number, got {json_type(value)}")
    if not (math.isfinite(value) and 0 <= value <= maximum):
        raise bad(field, f"must be a finite number in 0..{maximum}, got {value!r}")
    return float(value)


def as_bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise bad(field, f"expected true or false, got {json_type(value)}")
    return value


def as_identifier(value: object, field: str) -> str:
    """A non-empty id of at most ``MAX_ID_CHARS`` characters, no spaces or control characters."""
    if not isinstance(value, str):
        raise bad(field, f"expected a string, got {json_type(value)}")
    if not value:
        raise bad(field, "must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise bad(field, f"longer than {MAX_ID_CHARS} characters")
    if not _IDENTIFIER.fullmatch(value):
        raise bad(field, "must not contain spaces or control characters")
    return value


def as_label(value: object, field: str) -> str:
    """A free-text label (idc, rack, location): may be empty, no control characters."""
    if not isinstance(value, str):
        raise bad(field, f"expected a string, got {json_type(value)}")
    if len(value) > MAX_LABEL_CHARS:
        raise bad(field, f"longer than {MAX_LABEL_CHARS} characters")
    if not _LABEL.fullmatch(value):
        raise bad(field, "must not contain control characters")
    return value


def as_digest(value: object, field: str) -> str:
    """An OCI digest such as ``sha256:<64 hex>``."""
    text = as_identifier(value, field)
    if not _DIGEST.fullmatch(text):
        raise bad(field, f"expected a digest like sha256:<hex>, got {text!r}")
    algorithm, _, encoded = text.partition(":")
    if algorithm == "sha256" and not _SHA256_HEX.fullmatch(encoded):
        raise bad(field, "a sha256 digest has 64 lowercase hex digits")
    return text


def as_address(value: object, field: str) -> str:
    """An IP address or a DNS name that other peers can connect to; no scheme, no port."""
    text = as_identifier(value, field)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if len(text) > MAX_HOSTNAME_CHARS or not _HOSTNAME.fullmatch(text):
            raise bad(field, f"expected an IP address or host name, got {text!r}") from None
    return text


_MISSING = object()
# Keys written bare in a field path; any other key (empty, spaces, dots) is quoted.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ObjectReader:
    """Reads the fields of one JSON object; ``done()`` refuses the ones nobody read."""

    def __init__(self, value: object, path: str = "") -> None:
        if not isinstance(value, dict):
            raise bad(path or BODY, f"expected a JSON object, got {json_type(value)}")
        self._data: dict[str, Any] = value
        self._path = path
        self._read: set[str] = set()

    def field(self, key: str) -> str:
        """The path of ``key``: ``reports[2].cost_s``; ``[" odd key"]`` unless a plain name."""
        if not _PLAIN_KEY.fullmatch(key):
            return f"{self._path}[{json.dumps(key)}]"
        return f"{self._path}.{key}" if self._path else key

    def get(self, key: str, *, required: bool = True) -> object:
        """The raw value; an optional field that is absent or null gives None."""
        self._read.add(key)
        value = self._data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise bad(self.field(key), "is required")
            return None
        return value

    def identifier(self, key: str) -> str:
        return as_identifier(self.get(key), self.field(key))

    def optional_identifier(self, key: str) -> str | None:
        value = self.get(key, required=False)
        return None if value is None else as_identifier(value, self.field(key))

    def nullable_identifier(self, key: str) -> str | None:
        """An id or null; unlike the optional fields, the key itself must be present."""
        if key not in self._data:
            self._read.add(key)
            raise bad(self.field(key), "is required (it may be null)")
        return self.optional_identifier(key)

    def digest(self, key: str) -> str:
        return as_digest(self.get(key), self.field(key))

    def optional_digest(self, key: str) -> str | None:
        value = self.get(key, required=False)
        return None if value is None else as_digest(value, self.field(key))

    def label(self, key: str) -> str:
        value = self.get(key, required=False)
        return "" if value is None else as_label(value, self.field(key))

    def integer(self, key: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
        return as_int(self.get(key), self.field(key), minimum, maximum)

    def optional_integer(self, key: str, default: int = 0) -> int:
        value = self.get(key, required=False)
        return default if value is None else as_int(value, self.field(key))

    def number(self, key: str) -> float:
        return as_number(self.get(key), self.field(key))

    def optional_number(self, key: str, default: float = 0.0) -> float:
        value = self.get(key, required=False)
        return default if value is None else as_number(value, self.field(key))

    def boolean(self, key: str) -> bool:
        return as_bool(self.get(key), self.field(key))

    def optional_boolean(self, key: str, default: bool = False) -> bool:
        value = self.get(key, required=False)
        return default if value is None else as_bool(value, self.field(key))

    def array(self, key: str, max_items: int, *, required: bool = True) -> list[object]:
        value = self.get(key, required=required)
        if value is None:
            return []
        if not isinstance(value, list):
            raise bad(self.field(key), f"expected an array, got {json_type(value)}")
        if len(value) > max_items:
            raise bad(self.field(key), f"at most {max_items} items, got {len(value)}")
        return value

    def done(self) -> None:
        """Refuse fields nobody asked for (typos, fields of another API version)."""
        for key in self._data:
            if key not in self._read:
                raise bad(self.field(key), "unknown field")
