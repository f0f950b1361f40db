#!/usr/bin/env python3
import json
import os
import sys

data = json.load(sys.stdin)
extra = os.path.join(data["_installdir"], "helpers", "files", "greet.sh")
print(json.dumps({"ran": "python", "has_extra_file": os.path.exists(extra)}))
