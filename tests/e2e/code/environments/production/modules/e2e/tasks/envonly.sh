#!/bin/sh
# With input_method environment, stdin is empty.
stdin=$(cat)
printf 'word=%s stdin=[%s] task=%s\n' "$PT_word" "$stdin" "$PT__task"
