"""A new agent enrolls with the CA: at once with the token, else once an operator signs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.installation import NODES, Installation, echoed, wait_for

pytestmark = pytest.mark.e2e


def test_agent_with_the_enrollment_token_is_signed_and_usable(fleet: Installation) -> None:
    certname = "enrolled.e2e"
    cert = fleet.vardir(certname) / "ssl" / "certs" / f"{certname}.pem"
    assert not cert.exists()

    fleet.add_agent(certname)

    assert cert.exists()
    assert fleet.echo_results([certname]) == echoed([certname])


def test_no_command_line_shows_the_enrollment_token(fleet: Installation) -> None:
    token = fleet.fleet.token.encode()
    processes = [fleet.fleet.server, *(fleet.fleet.agents[node] for node in NODES)]
    for proc in processes:
        assert proc is not None and proc.poll() is None
        command_line = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert token not in command_line, command_line
    assert fleet.fleet.enrollment_token_file.stat().st_mode & 0o077 == 0


def test_agent_with_a_wrong_token_waits_until_signed_by_hand(fleet: Installation) -> None:
    certname = "pending.e2e"
    cadir = str(fleet.fleet.cadir)

    fleet.add_agent(certname, token="not-the-token")

    wait_for(
        "the agent to wait for its certificate",
        lambda: f"waiting for the CA to sign {certname}" in fleet.agent_log(certname),
    )
    listing = fleet.cli("ca", "list", "--cadir", cadir)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert any(
        line.split()[:2] == [certname, "requested"] for line in listing.stdout.splitlines()
    ), listing.stdout
    pending = json.loads(fleet.cli("ca", "list", "--cadir", cadir, "--format", "json").stdout)
    assert [(i["certname"], i["state"]) for i in pending] == [(certname, "requested")]
    assert not (fleet.vardir(certname) / "ssl" / "certs" / f"{certname}.pem").exists()
    assert not fleet.connected(certname)

    # Signed through the server's CA API, as from an operator's laptop.
    sign = fleet.cli("ca", "sign", "--server-url", fleet.fleet.server_url, certname)

    assert sign.returncode == 0, sign.stdout + sign.stderr
    assert f"Signed the certificate of {certname}" in sign.stdout
    fleet.wait_connected(certname, timeout=15)
    assert fleet.echo_results([certname]) == echoed([certname])
