#!/bin/sh
echo '{"ran": "shell"}'
