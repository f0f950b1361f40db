"""Targeting by what nodes are: real agents with their own facts, PQL, node groups, -F,
and facts fed through PuppetDB's command API by something that is not an agent."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from e2e.installation import Installation, job_id_in, start_installation

pytestmark = pytest.mark.e2e

FACTS = {
    "web-a.e2e": {"role": "web", "tier": {"rank": 1}},
    "web-b.e2e": {"role": "web", "tier": {"rank": 2}},
    "db-a.e2e": {"role": "db", "tier": {"rank": 3}},
    "bare.e2e": {},  # no role fact at all
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    with start_installation([]) as installation:
        facts_dir = tmp_path_factory.mktemp("facts")
        for certname, facts in FACTS.items():
            path = facts_dir / f"{certname}.json"
            path.write_text(json.dumps(facts))
            installation.fleet.start_agent(certname, facts_file=path)
        installation.wait_connected(*FACTS)
        installation.wait_for_facts(*FACTS)
        yield installation


def ran_on(fleet: Installation, *args: str) -> set[str]:
    run = fleet.cli("task", "run", "podium::echo", "message=hi", *args)
    assert run.returncode == 0, run.stdout + run.stderr
    return set(fleet.nodes(job_id_in(run.stdout)))


def test_a_pql_query_targets_the_nodes_it_returns(fleet: Installation) -> None:
    query = 'inventory[certname] { facts.role = "web" }'
    assert ran_on(fleet, "--query", query) == {"web-a.e2e", "web-b.e2e"}
    assert ran_on(fleet, "-q", "inventory[certname] { facts.tier.rank >= 2 }") == {
        "web-b.e2e",
        "db-a.e2e",
    }


def test_fact_filters_compile_to_pql_and_combine(fleet: Installation) -> None:
    assert ran_on(fleet, "-F", "role=web", "-F", "tier.rank<2") == {"web-a.e2e"}
    assert ran_on(fleet, "-I", "/^db-/", "-I", "bare.e2e") == {"db-a.e2e", "bare.e2e"}
    explained = fleet.cli("task", "run", "podium::echo", "message=x", "-F", "role=db", "--explain")
    assert 'Query: inventory[certname] { facts.role = "db" }' in explained.stdout


def test_a_node_group_targets_the_nodes_its_rule_matches(fleet: Installation) -> None:
    made = fleet.cli(
        "group", "create", "e2e-web", "--rule", '["=", ["fact", "role"], "web"]',
        "--format", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    group_id = json.loads(made.stdout)["id"]
    assert ran_on(fleet, "--node-group", group_id) == {"web-a.e2e", "web-b.e2e"}


def test_job_plan_says_what_a_target_leaves_out(fleet: Installation) -> None:
    plan = fleet.cli("job", "plan", "-F", "role=web")
    assert plan.returncode == 0, plan.stderr
    assert "2 nodes" in plan.stdout
    # bare.e2e has no role fact: it is not silently dropped without a word.
    assert re.search(r"Warning: 1 node lacks? the fact role", plan.stdout), plan.stdout
    dup = fleet.cli("job", "plan", "--nodes", "web-a.e2e,web-*,nope-*")
    assert "dropped names given twice: web-a.e2e" in dup.stdout
    assert "'nope-*' matched no node" in dup.stdout


def test_ping_and_node_list_show_the_fleet(fleet: Installation) -> None:
    ping = fleet.cli("ping", "-F", "role=web")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "2 replies from 2 nodes" in ping.stdout
    listing = fleet.cli("node", "list")
    assert listing.returncode == 0, listing.stderr
    for certname in FACTS:
        assert certname in listing.stdout


def test_facts_sent_through_the_puppetdb_api_are_queryable_and_targetable(
    fleet: Installation,
) -> None:
    command = {
        "command": "replace facts",
        "version": 5,
        "payload": {
            "certname": "external.e2e",
            "environment": "production",
            "producer_timestamp": "2026-12-01T00:00:00Z",
            "producer": "some-script",
            "values": {"role": "web", "tier": {"rank": 9}},
        },
    }
    # Commands are queued, as in PuppetDB: wait until it is stored.
    fleet.api.call(
        "POST",
        fleet.fleet.server_url + "/pdb/cmd/v1",
        params={"secondsToWaitForCompletion": 30},
        json=command,
    )
    rows = fleet.api.call(
        "GET",
        fleet.fleet.server_url + "/pdb/query/v4",
        params={"query": 'nodes[certname] { certname = "external.e2e" }'},
    )
    assert rows == [{"certname": "external.e2e"}]
    facts = fleet.api.call("GET", fleet.fleet.server_url + "/pdb/query/v4/facts/role")
    assert ("external.e2e", "web") in {(f["certname"], f["value"]) for f in facts}
    query = fleet.cli("query", 'inventory[certname, facts.tier.rank] { facts.role = "web" }')
    assert "external.e2e" in query.stdout
    # A job on it: the node exists but has no agent, and fails saying so.
    run = fleet.cli("task", "run", "podium::echo", "message=hi", "-F", "role=web")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "external.e2e is not connected to the broker" in run.stdout
