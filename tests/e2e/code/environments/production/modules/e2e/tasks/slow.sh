#!/bin/sh
sleep 1000 &
echo $! > "$PT_pidfile"
wait
