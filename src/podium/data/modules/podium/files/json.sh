# JSON results for POSIX sh tasks, sourced by Podium's built-in tasks (their metadata
# lists "podium/files/json.sh"; the agent places it under $PT__installdir).
#
#   put KEY VALUE / put_raw KEY JSON        add a field to the result
#   detail KEY VALUE / detail_raw KEY JSON  add a field to the error's details
#   succeed                                 print the result, exit 0
#   fail KIND MESSAGE                       print {"_error": ...} (kind: $error_kind_prefix/KIND), exit 1

# The JSON string body for $1: backslash, quote and every control character escaped;
# other bytes (UTF-8 included) pass through.
json_escape() {
	printf '%s\n' "$1" | awk '
		BEGIN { for (i = 1; i < 32; i++) ctl[sprintf("%c", i)] = sprintf("\\u%04x", i)
			ctl[sprintf("%c", 127)] = "\\u007f" }
		{ out = ""; n = length($0)
		  for (i = 1; i <= n; i++) {
			c = substr($0, i, 1)
			if (c == "\\") out = out "\\\\"
			else if (c == "\"") out = out "\\\""
			else if (c in ctl) out = out ctl[c]
			else out = out c
		  }
		  printf "%s%s", (NR > 1 ? "\\n" : ""), out }'
}

result=""
details=""

put() { result="$result${result:+, }\"$1\": \"$(json_escape "$2")\""; }
put_raw() { result="$result${result:+, }\"$1\": $2"; }
detail() { details="$details${details:+, }\"$1\": \"$(json_escape "$2")\""; }
detail_raw() { details="$details${details:+, }\"$1\": $2"; }

succeed() {
	printf '{%s}\n' "$result"
	exit 0
}

fail() {
	printf '{"_error": {"kind": "%s/%s", "msg": "%s", "details": {%s}}}\n' \
		"${error_kind_prefix:-podium.task}" "$1" "$(json_escape "$2")" "$details"
	exit 1
}
