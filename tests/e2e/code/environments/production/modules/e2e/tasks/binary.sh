#!/bin/sh
# Output that is not UTF-8.
printf 'caf\351 \377\n'
