#!/bin/sh
# Prints the message given as PT_message; the runner turns the output into {"_output": ...}.
printf '%s\n' "$PT_message"
