#!/usr/bin/env python3
"""Prints, as JSON, what the runner gave this task (never the password itself)."""

import json
import os
import sys

data = json.load(sys.stdin)
installdir = data["_installdir"]
sys.path.insert(0, os.path.join(installdir, "helpers", "lib"))
from e2e.util import shout  # noqa: E402  (an extra file from another module)

with open(os.path.join(installdir, "helpers", "files", "greet.sh")) as f:
    greeting = f.read().strip()
env = {k: v for k, v in os.environ.items() if k.startswith("PT_") and k != "PT_password"}
print(
    json.dumps(
        {
            "input": sorted(data),
            "name": data["name"],
            "count": data["count"],
            "mode": data.get("mode"),
            "opts": data.get("opts"),
            "noop": data.get("_noop", False),
            "task": data["_task"],
            "env_name": env.get("PT_name"),
            "has_password": "password" in data,
            "password_length": len(data.get("password") or ""),
            "shout": shout(data["name"]),
            "greeting": greeting,
        }
    )
)
