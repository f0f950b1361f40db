from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podium.errors import ValidationError
from podium.pki.names import validate_certname

valid_names = st.from_regex(r"[a-z0-9](?:[a-z0-9._-]{0,40}[a-z0-9])?", fullmatch=True).filter(
    lambda name: ".." not in name
)


@given(valid_names)
def test_generated_valid_certnames_are_accepted(name: str) -> None:
    assert validate_certname(name) == name


@given(st.text())
def test_an_accepted_certname_is_a_safe_file_name(name: str) -> None:
    try:
        validate_certname(name)
    except ValidationError:
        return
    assert name
    assert name not in {".", ".."}
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert ".." not in name
    assert name == name.lower() and name.isascii() and name.isprintable()


@given(valid_names, valid_names)
def test_a_slash_is_never_accepted(left: str, right: str) -> None:
    with pytest.raises(ValidationError):
        validate_certname(f"{left}/{right}")


@given(valid_names, valid_names)
def test_a_double_dot_is_never_accepted(left: str, right: str) -> None:
    with pytest.raises(ValidationError):
        validate_certname(f"{left}..{right}")


@given(valid_names.filter(lambda name: any(c.isalpha() for c in name)))
def test_uppercase_is_never_accepted(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_certname(name.upper())


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "-node", "node-", ".node", "node.", "node\n", "../etc/passwd", "a" * 254],
)
def test_malformed_certnames_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="invalid certname"):
        validate_certname(name)


def test_the_error_names_the_value_and_the_rule() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_certname("Web01")
    assert "'Web01'" in caught.value.msg
    assert "lowercase" in caught.value.msg
    assert caught.value.details == {"certname": "Web01"}


def test_the_longest_certname_is_accepted() -> None:
    assert validate_certname("a" * 253) == "a" * 253
