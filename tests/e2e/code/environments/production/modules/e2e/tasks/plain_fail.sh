#!/bin/sh
# No metadata: takes any parameters. Plain output and a failing exit code.
echo "not json at all"
echo "something went wrong" >&2
exit 3
