"""``podium app show`` and the run order lines ``podium job plan`` prints, against a fake
API client."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podium.cli import app as cli_app
from podium.cli.app import order_lines
from podium.cli.main import main

SHOP = {
    "name": "shop",
    "description": "The web shop",
    "components": [
        {"name": "db", "nodes": ["db-1"], "produces": ["Sql"], "consumes": [], "after": []},
        {
            "name": "web",
            "nodes": ["web-1", "web-2"],
            "produces": ["Http"],
            "consumes": ["Sql"],
            "after": ["db"],
        },
        {"name": "lb", "nodes": ["lb-1"], "produces": [], "consumes": ["Http"], "after": ["web"]},
    ],
}
BLOG = {
    "name": "blog",
    "description": "",
    "components": [
        {
            "name": "all",
            "nodes": [f"blog-{i:02d}" for i in range(12)],
            "produces": [],
            "consumes": [],
            "after": [],
        }
    ],
}


class FakeClient:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path))
        return self.answers[path]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient(
        {
            "/environments/production/applications": {
                "environment": "production",
                "items": [BLOG, SHOP],
            },
            "/environments/bare/applications": {"environment": "bare", "items": []},
        }
    )
    monkeypatch.setattr(cli_app.ApiClient, "from_args", classmethod(lambda cls, args: client))
    return client


def test_app_show_prints_each_instance_with_a_table_of_its_components(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["app", "show"]) == 0
    out = capsys.readouterr().out
    assert fake.calls == [("GET", "/environments/production/applications")]
    assert "blog\nCOMPONENT" in out
    assert "blog-00, blog-01" in out and "blog-09 and 2 more" in out  # --format json has all
    assert out.endswith(
        "\n\nshop: The web shop\n"
        "COMPONENT  NODES         PRODUCES  CONSUMES  RUNS AFTER\n"
        "db         db-1          Sql\n"
        "web        web-1, web-2  Http      Sql       db\n"
        "lb         lb-1                    Http      web\n"
    )


def test_app_show_name_prints_that_one_and_json_gives_it_whole(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["app", "show", "shop"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("shop: The web shop\n") and "blog" not in out
    assert main(["app", "show", "blog", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown == {"environment": "production", "items": [BLOG]}


def test_app_show_of_an_unknown_name_says_which_there_are(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["app", "show", "forum"]) == 1
    assert capsys.readouterr().err == (
        "podium app: no application 'forum' in environment production; "
        "its applications: blog, shop\n"
    )


def test_app_show_of_an_environment_without_applications_says_so(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["app", "show", "-e", "bare"]) == 0
    assert capsys.readouterr().out == "No applications in environment bare.\n"


PLAN = {
    "environment": "production",
    "levels": [["db-1", "mail-1"], ["web-1", "web-2"], ["lb-1"]],
    "nodes": {
        "db-1": {
            "after": [],
            "application": "shop",
            "component": "db",
            "components": [
                {"application": "shop", "component": "db"},
                {"application": "shop", "component": "cache"},
            ],
        },
        "mail-1": {"after": []},
        "web-1": {"after": ["db-1"], "application": "shop", "component": "web"},
        "web-2": {"after": ["db-1"], "application": "shop", "component": "web"},
        "lb-1": {"after": ["web-1", "web-2"], "application": "shop", "component": "lb"},
    },
}


def test_order_lines_give_each_node_its_level_component_and_what_it_waits_for() -> None:
    assert order_lines(PLAN) == [
        "Run order: 5 nodes in 3 levels; a node starts once every node it runs after has "
        "finished, and is skipped if one of them does not.",
        "LEVEL  NODE    COMPONENT     RUNS AFTER",
        "1      db-1    shop/db (+1)",
        "1      mail-1",
        "2      web-1   shop/web      db-1",
        "2      web-2   shop/web      db-1",
        "3      lb-1    shop/lb       web-1, web-2",
    ]


def test_order_lines_without_an_application_say_nothing_orders_the_nodes() -> None:
    plan = {"environment": "production", "levels": [["a", "b"]], "nodes": {"a": {}, "b": {}}}
    assert order_lines(plan) == [
        "No application of environment production orders these nodes: they start as the "
        "pace allows."
    ]
    assert order_lines({"environment": "x", "levels": [], "nodes": {}}) == ["No nodes to order."]


def test_order_lines_keep_what_a_server_says_on_one_line() -> None:
    plan = {
        "environment": "production",
        "levels": [["a"], ["b"]],
        "nodes": {
            "a": {"after": [], "application": "x\x1b[2J", "component": "c"},
            "b": {"after": ["a\nforged row"], "application": "x", "component": "d"},
        },
    }
    text = "\n".join(order_lines(plan))
    assert "\x1b" not in text and "forged row" in text
    assert len(order_lines(plan)) == 4
