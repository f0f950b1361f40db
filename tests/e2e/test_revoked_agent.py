"""A revoked certificate is dropped by the broker and refused from then on."""

from __future__ import annotations

import ssl

import httpx
import pytest

from e2e.installation import NODES, Installation, wait_for

pytestmark = pytest.mark.e2e


def test_revoked_agent_is_disconnected_and_refused(fleet: Installation) -> None:
    certname = "revoked.e2e"
    fleet.add_agent(certname)

    revoke = fleet.cli("ca", "revoke", "--cadir", str(fleet.fleet.cadir), certname)

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
