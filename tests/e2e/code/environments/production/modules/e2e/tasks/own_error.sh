#!/bin/sh
echo '{"_error": {"kind": "e2e/own-error", "msg": "the task says no", "details": {"why": "testing"}}}'
exit 1
