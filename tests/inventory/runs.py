"""Puppet runs for the tests: PuppetDB's "store report" (v8) and "replace catalog" (v9)
payloads as Puppet's terminus sends them, and a small fleet of them.

The fleet: two web servers and a database server in production or staging, each with a
catalog and reports; a deactivated web server with a failed run; a node with facts and
no runs; a plan's report, newer than any agent run, that is no node's latest. Every
time is fixed, so answers can be written down (all but when the inventory received a
report or catalog).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from podium.inventory.reports import parse_catalog, parse_report
from podium.inventory.store import FactsCommand, InventoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SERVER = "puppet.example.com"


def at(minutes: float) -> str:
    """PuppetDB's wire time, ``minutes`` after T0."""
    when = T0 + timedelta(minutes=minutes)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def event(
    prop: str | None,
    old: Any,
    new: Any,
    status: str = "success",
    message: str | None = None,
    minutes: float = 0,
    corrective: bool | None = False,
) -> dict[str, Any]:
    return {
        "property": prop,
        "old_value": old,
        "new_value": new,
        "status": status,
        "message": message if message is not None else f"{prop} changed",
        "timestamp": at(minutes),
        "name": f"{prop}_changed" if prop else None,
        "corrective_change": corrective,
    }


def resource_status(
    kind: str,
    title: str,
    events: list[dict[str, Any]] | None = None,
    *,
    path: list[str] | None = None,
    skipped: bool = False,
    line: int | None = 1,
    minutes: float = 0,
) -> dict[str, Any]:
    return {
        "resource_type": kind,
        "resource_title": title,
        "skipped": skipped,
        "timestamp": at(minutes),
        "file": "/etc/puppet/code/environments/production/manifests/site.pp" if line else None,
        "line": line,
        "containment_path": path or ["Stage[main]", "Main", f"{kind}[{title}]"],
        "corrective_change": False,
        "events": events or [],
    }


def report_payload(
    certname: str,
    minutes: float = 0,
    *,
    status: str = "changed",
    environment: str = "production",
    resources: list[dict[str, Any]] | None = None,
    noop: bool = False,
    noop_pending: bool = False,
    corrective_change: bool | None = False,
    job_id: str | None = None,
    kind: str | None = None,
    cached_catalog_status: str = "not_used",
) -> dict[str, Any]:
    """A "store report" v8 payload, of a run ``minutes`` after T0 that took a minute."""
    payload: dict[str, Any] = {
        "certname": certname,
        "environment": environment,
        "puppet_version": "7.23.0",
        "report_format": 12,
        "configuration_version": str(1_700_000_000 + int(minutes)),
        "start_time": at(minutes),
        "end_time": at(minutes + 1),
        "producer_timestamp": at(minutes + 1.5),
        "producer": SERVER,
        "corrective_change": corrective_change,
        "noop": noop,
        "noop_pending": noop_pending,
        "status": status,
        "transaction_uuid": f"tx-{certname}-{minutes}",
        "catalog_uuid": f"cat-{certname}-{minutes}",
        "code_id": None,
        "job_id": job_id,
        "cached_catalog_status": cached_catalog_status,
        "logs": [
            {
                "file": None,
                "line": None,
                "level": "notice",
                "message": f"Applied catalog in 1.00 seconds ({status})",
                "source": "Puppet",
                "tags": ["notice"],
                "time": at(minutes + 1),
            }
        ],
        "metrics": [
            {"category": "resources", "name": "total", "value": len(resources or [])},
            {"category": "time", "name": "total", "value": 1.25},
        ],
        "resources": resources or [],
    }
    if kind is not None:
        payload["type"] = kind
    return payload


def resource(
    kind: str, title: str, line: int, tags: list[str], **parameters: Any
) -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "exported": False,
        "file": "/etc/puppet/code/environments/production/manifests/site.pp",
        "line": line,
        "tags": tags,
        "parameters": parameters,
    }


def edge(source: tuple[str, str], target: tuple[str, str], relationship: str) -> dict[str, Any]:
    return {
        "source": {"type": source[0], "title": source[1]},
        "target": {"type": target[0], "title": target[1]},
        "relationship": relationship,
    }


def catalog_payload(
    certname: str,
    minutes: float = 0,
    *,
    environment: str = "production",
    resources: list[dict[str, Any]] | None = None,
    edges: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A "replace catalog" v9 payload, compiled ``minutes`` after T0."""
    return {
        "certname": certname,
        "version": str(1_700_000_000 + int(minutes)),
        "environment": environment,
        "transaction_uuid": f"tx-{certname}-{minutes}",
        "catalog_uuid": f"cat-{certname}-{minutes}",
        "code_id": None,
        "job_id": None,
        "producer_timestamp": at(minutes),
        "producer": SERVER,
        "resources": [
            resource("Stage", "main", 0, ["stage"]),
            resource("Class", "Main", 0, ["class"]),
            *(resources or []),
        ],
        "edges": [edge(("Stage", "main"), ("Class", "Main"), "contains"), *(edges or [])],
    }


def _web(certname: str, ensure: str, minutes: float, environment: str) -> dict[str, Any]:
    resources = [
        resource("Class", "Apache", 3, ["class", "apache"]),
        resource("Package", "nginx", 5, ["package", "nginx", "class"], ensure="installed"),
        resource(
            "File",
            "/etc/nginx/nginx.conf",
            12,
            ["file", "nginx"],
            ensure="file",
            mode="0644",
            content="worker_processes 4;",
        ),
        resource(
            "Service", "nginx", 20, ["service", "nginx"], ensure=ensure, enable=True, restarts=3
        ),
    ]
    edges = [
        edge(("Class", "Main"), ("Class", "Apache"), "contains"),
        edge(("Package", "nginx"), ("File", "/etc/nginx/nginx.conf"), "before"),
        edge(("File", "/etc/nginx/nginx.conf"), ("Service", "nginx"), "notifies"),
    ]
    return catalog_payload(
        certname, minutes, environment=environment, resources=resources, edges=edges
    )


def _db(certname: str, minutes: float) -> dict[str, Any]:
    resources = [
        resource("Package", "postgresql", 4, ["package"], ensure="16"),
        resource("Service", "postgresql", 9, ["service"], ensure="running", enable="true"),
    ]
    edges = [edge(("Package", "postgresql"), ("Service", "postgresql"), "required-by")]
    return catalog_payload(
        certname, minutes, environment="staging", resources=resources, edges=edges
    )


_NGINX = ["Stage[main]", "Nginx", "Service[nginx]"]
_CONF = ["Stage[main]", "Nginx", "File[/etc/nginx/nginx.conf]"]


def reports() -> list[dict[str, Any]]:
    """The fleet's reports, oldest first within each node."""
    return [
        # web1: a change, then a failure (its latest)
        report_payload(
            "web1.example.com",
            0,
            resources=[
                resource_status(
                    "File", "/etc/nginx/nginx.conf", [event("content", "a", "b")], path=_CONF
                ),
            ],
        ),
        report_payload(
            "web1.example.com",
            60,
            status="failed",
            job_id="7",
            resources=[
                resource_status(
                    "File",
                    "/etc/nginx/nginx.conf",
                    [event("mode", "0600", "0644", minutes=60)],
                    path=_CONF,
                    minutes=60,
                ),
                resource_status(
                    "Service",
                    "nginx",
                    [
                        event(
                            "ensure",
                            "stopped",
                            "running",
                            status="failure",
                            message="Could not start Service[nginx]",
                            minutes=60,
                        )
                    ],
                    path=_NGINX,
                    minutes=60,
                ),
                resource_status("Exec", "reload nginx", skipped=True, line=None, minutes=60),
            ],
        ),
        # web2: an unchanged run
        report_payload("web2.example.com", 30, status="unchanged"),
        # db1: a noop run with pending changes, then a plan's run
        report_payload(
            "db1.example.com",
            45,
            environment="staging",
            status="unchanged",
            noop=True,
            noop_pending=True,
            corrective_change=True,
            cached_catalog_status="on_failure",
            resources=[
                resource_status(
                    "Service",
                    "postgresql",
                    [
                        event(
                            "ensure",
                            "stopped",
                            "running",
                            status="noop",
                            minutes=45,
                            corrective=True,
                        )
                    ],
                    path=["Stage[main]", "Postgresql::Server", "Service[postgresql]"],
                    minutes=45,
                )
            ],
        ),
        report_payload("db1.example.com", 90, environment="staging", status="changed", kind="plan"),
        # web3: failed, then deactivated
        report_payload(
            "web3.example.com",
            20,
            status="failed",
            resources=[
                resource_status(
                    "Service",
                    "nginx",
                    [event("ensure", "stopped", "running", status="failure", minutes=20)],
                    path=_NGINX,
                    minutes=20,
                )
            ],
        ),
    ]


def catalogs() -> list[dict[str, Any]]:
    return [
        _web("web1.example.com", "running", 59, "production"),
        _web("web2.example.com", "stopped", 29, "production"),
        _db("db1.example.com", 44),
        _web("web3.example.com", "running", 19, "production"),
    ]


FACTS = {
    "web1.example.com": ("production", {"role": "web", "ipaddress": "10.0.0.1"}),
    "web2.example.com": ("production", {"role": "web", "ipaddress": "10.0.0.2"}),
    "db1.example.com": ("staging", {"role": "db", "ipaddress": "10.0.0.3"}),
    "web3.example.com": ("production", {"role": "web", "ipaddress": "10.0.0.4"}),
    "cache1.example.com": ("production", {"role": "cache", "ipaddress": "10.0.0.5"}),
}
DEACTIVATED = "web3.example.com"


def load(inventory: InventoryStore) -> None:
    """Store the fleet: facts, catalogs, reports, then web3's deactivation."""
    inventory.replace_facts_many(
        [
            FactsCommand(name, values, env, T0, SERVER, received=T0)
            for name, (env, values) in FACTS.items()
        ]
    )
    assert set(inventory.replace_catalogs([parse_catalog(c) for c in catalogs()])) == {
        "incorporated"
    }
    assert set(inventory.store_reports([parse_report(r) for r in reports()])) == {"incorporated"}
    inventory.deactivate_node(DEACTIVATED, T0 + timedelta(hours=3))
