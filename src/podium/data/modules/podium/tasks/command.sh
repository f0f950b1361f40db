#!/bin/sh
# Runs PT_command with /bin/sh -c, stderr folded into stdout so that the result shows
# what a terminal would; the exit code is the command's own.
exec /bin/sh -c "$PT_command" 2>&1
