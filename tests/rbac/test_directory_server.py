"""A directory user logs in to a real server and gets the role of their directory group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from slapd import GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, SlapdServer

from e2e.installation import start_installation
from podium.cli.client import ApiClient
from podium.errors import PodiumError

pytestmark = pytest.mark.e2e


def test_a_directory_user_logs_in_with_the_role_of_their_group(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    secret = tmp_path / "ldap-password"
    secret.write_text(SERVICE_PASSWORD + "\n")
    secret.chmod(0o600)
    config = tmp_path / "ldap.json"
    config.write_text(
        json.dumps(
            {
                "url": slapd.url,
                "bind_dn": SERVICE_DN,
                "bind_password_file": str(secret),
                "user_base": PEOPLE,
                "group_base": GROUPS,
            }
        )
    )
    with start_installation([], server_args=("--ldap-config", str(config))) as fleet:
        where = (fleet.fleet.server_url, fleet.fleet.cacert)
        with ApiClient(*where, fleet.fleet.api_token, api="/rbac-api/v1") as admin:
            operators = next(
                r for r in admin.call("GET", "/roles") if r["display_name"] == "Operators"
            )
            admin.call("POST", "/groups", json={"login": "ops", "role_ids": [operators["id"]]})
        token = fleet.fleet.login("alice", "alice-secret")
        with ApiClient(*where, token, api="/rbac-api/v1") as alice:
            me = alice.call("GET", "/users/current")
            assert me["is_remote"] and me["inherited_role_ids"] == [operators["id"]]
            assert {"object_type": "tasks", "action": "run", "instance": "*"} in me["permissions"]
        shown = fleet.cli("job", "show", token=token)
        assert shown.returncode == 0, shown.stderr
        with pytest.raises(PodiumError, match="cannot log in as alice"):
            fleet.fleet.login("alice", "not-her-password")
        with (
            ApiClient(*where, token, api="/activity-api/v1") as activity,
            pytest.raises(PodiumError, match="activity:view"),
        ):
            activity.call("GET", "/events")  # Operators may not read the activity log
