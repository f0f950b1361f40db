"""-F and -I filters compile to the PQL an operator would have written."""

from __future__ import annotations

import pytest

from podium.errors import ValidationError
from podium.inventory.filters import compile_filters


@pytest.mark.parametrize(
    ("facts", "identities", "pql"),
    [
        (["os.family=Debian"], [], 'inventory[certname] { facts.os.family = "Debian" }'),
        (
            ["processors.count>=2"],
            [],
            "inventory[certname] { facts.processors.count >= 2 }",
        ),
        (
            ["kernel!=windows"],
            [],
            'inventory[certname] { !(facts.kernel = "windows") }',
        ),
        (
            ["os.name=~/^(Debian|Ubuntu)$/"],
            [],
            'inventory[certname] { facts.os.name ~ "^(Debian|Ubuntu)$" }',
        ),
        (
            ["os.release.major=12"],
            [],
            "inventory[certname] { (facts.os.release.major = 12 or "
            'facts.os.release.major = "12") }',
        ),
        (
            ["is_virtual=true"],
            [],
            'inventory[certname] { (facts.is_virtual = true or facts.is_virtual = "true") }',
        ),
        ([], ["web-01"], 'inventory[certname] { certname = "web-01" }'),
        ([], ["/^web/"], 'inventory[certname] { certname ~ "^web" }'),
        (
            ["os.family=Debian"],
            ["/^web/", "db-01"],
            'inventory[certname] { facts.os.family = "Debian" and '
            '(certname ~ "^web" or certname = "db-01") }',
        ),
        (
            ['role=a "quoted" value'],
            [],
            'inventory[certname] { facts.role = "a \\"quoted\\" value" }',
        ),
    ],
)
def test_filters_compile_to_pql(facts: list[str], identities: list[str], pql: str) -> None:
    assert compile_filters(facts, identities) == pql


@pytest.mark.parametrize(
    ("facts", "identities", "message"),
    [
        (["nofilter"], [], "is not a fact filter"),
        (["processors.count>two"], [], "compares numbers"),
        (["os.name=~/(unclosed/"], [], "is not a regular expression"),
        ([], ["/[/"], "is not a regular expression"),
        ([], [], "no filter given"),
    ],
)
def test_bad_filters_say_what_to_write(
    facts: list[str], identities: list[str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        compile_filters(facts, identities)
