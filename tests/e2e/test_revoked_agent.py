"""A revoked certificate is dropped by the broker and refused from then on; the node
enrolls again only when an operator signs its new request by name."""

from __future__ import annotations

import ssl

import httpx
import pytest

from e2e.installation import NODES, Installation, echoed, wait_for

pytestmark = pytest.mark.e2e


def test_revoked_agent_is_disconnected_and_refused(fleet: Installation) -> None:
    certname = "revoked.e2e"
    fleet.add_agent(certname)
    fleet.wait_for_facts(certname)  # a node the inventory knows, so the job says it is away

    # Through the server's CA API, as from an operator's laptop.
    revoke = fleet.cli("ca", "revoke", "--server-url", fleet.fleet.server_url, certname)

    assert revoke.returncode == 0, revoke.stdout + revoke.stderr
    assert f"Revoked the certificate of {certname}" in revoke.stdout
    fleet.wait_disconnected(certname)
    # It stays out: the agent tries again and the broker turns it away.
    wait_for(
        "the revoked agent's reconnect to be refused",
        lambda: (
            "refused with HTTP 403: this certificate has been revoked" in fleet.agent_log(certname)
        ),
    )
    assert not fleet.connected(certname)
    job_id = fleet.run_task("podium::echo", {"message": "hi"}, [certname, NODES[0]])
    assert fleet.wait_job(job_id)["state"] == "failed"
    nodes = fleet.nodes(job_id)
    assert nodes[certname]["state"] == "failed"
    assert nodes[certname]["details"]["message"] == (
        f"node {certname} is not connected to the broker"
    )
    assert nodes[NODES[0]]["state"] == "finished"
    assert nodes[NODES[0]]["result"] == {"_output": "hi\n"}
    assert not fleet.connected(certname)
    fleet.stop_agent(certname)
    # Nor may its certificate fetch task files any more.
    ssldir = fleet.vardir(certname) / "ssl"
    context = ssl.create_default_context(cafile=str(fleet.fleet.cacert))
    context.load_cert_chain(
        ssldir / "certs" / f"{certname}.pem", ssldir / "private_keys" / f"{certname}.pem"
    )
    url = f"{fleet.fleet.server_url}/puppet/v3/file_content/tasks/podium/echo.sh"
    refused = httpx.get(url, params={"environment": "production"}, verify=context)
    assert refused.status_code == 403
    assert "revoked" in refused.json()["msg"]


def test_a_revoked_node_enrolling_again_waits_for_an_operator(fleet: Installation) -> None:
    certname = "re-enrolled.e2e"
    cadir = str(fleet.fleet.cadir)
    fleet.add_agent(certname)
    assert fleet.cli("ca", "revoke", "--cadir", cadir, certname).returncode == 0
    fleet.wait_disconnected(certname)
    fleet.stop_agent(certname)
    # The node is rebuilt: a new key, and the token that autosigns every new node.
    ssldir = fleet.vardir(certname) / "ssl"
    (ssldir / "certs" / f"{certname}.pem").unlink()
    (ssldir / "private_keys" / f"{certname}.pem").unlink()

    fleet.restart_agent(certname)

    wait_for(
        "the agent to wait for its certificate",
        lambda: f"waiting for the CA to sign {certname}" in fleet.agent_log(certname),
    )
    listing = fleet.cli("ca", "list", "--cadir", cadir)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert any(
        line.split()[:2] == [certname, "requested"] for line in listing.stdout.splitlines()
    ), listing.stdout
    assert f"{certname} waits for an operator: the certificate of {certname}" in listing.stdout
    server_log = fleet.fleet.server_log.read_text(errors="replace")
    assert f"the certificate request of {certname} waits for an operator" in server_log
    assert not fleet.connected(certname)

    sign = fleet.cli("ca", "sign", "--cadir", cadir, certname)

    assert sign.returncode == 0, sign.stdout + sign.stderr
    fleet.wait_connected(certname, timeout=15)
    assert fleet.echo_results([certname]) == echoed([certname])
    fleet.stop_agent(certname)
