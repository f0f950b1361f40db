#!/bin/sh
# Podium's built-in service task: start, stop, restart, enable, disable or inspect one
# service, through systemd when it runs the node (/run/systemd/system exists) and else
# through the service's /etc/init.d script (update-rc.d or chkconfig to enable it).
# Input comes as PT_* variables; the result is one JSON object on stdout, and a failure
# is {"_error": {kind, msg, details}} with a non-zero exit.
#
# Results (the shapes of PE's service task), after the action:
#   {"status": "running"|"stopped"|..., "enabled": "enabled"|"disabled"|..., "manager": M}
#   systemd adds its own words: "active_state", "sub_state" (ActiveState, SubState).
#   With _noop: the current state plus "noop": true and "would": <action>|"nothing".
set -u

# Keep tool output untranslated, and [A-Za-z] meaning ASCII letters.
caller_lang=${LANG:-}
LC_ALL=C
export LC_ALL

# -- JSON output (put, detail, succeed, fail: see podium/files/json.sh) -----------------

# shellcheck disable=SC2034 # read by fail() in json.sh
error_kind_prefix=podium.service
# shellcheck source-path=SCRIPTDIR source=../../podium/files/json.sh
. "${PT__installdir:?the agent passes _installdir}/podium/files/json.sh"

# -- input ------------------------------------------------------------------------------

action=${PT_action:-}
name=${PT_name:-}
manager=${PT_manager:-}
noop=${PT__noop:-false}
[ "$manager" = null ] && manager=""

case $action in
start | stop | restart | status | enable | disable) ;;
*)
	detail action "$action"
	fail invalid-parameter "action must be one of start, stop, restart, status, enable, disable (got '$action')"
	;;
esac
# Service and unit names: letters, digits and . _ @ : + -, starting with a letter or
# digit. No slash, so /etc/init.d/$name stays in /etc/init.d.
case $name in
'' | [!A-Za-z0-9]* | *[!A-Za-z0-9._@:+-]*)
	detail name "$name"
	fail invalid-parameter "name must be a service name: letters, digits and . _ @ : + -, starting with a letter or digit (got '$name')"
	;;
esac
case $manager in
'' | systemd | init) ;;
*)
	detail manager "$manager"
	fail invalid-parameter "manager must be systemd or init (got '$manager')"
	;;
esac
case $noop in
true | false) ;;
*) noop=false ;;
esac
detail name "$name"

log=$(mktemp "${TMPDIR:-/tmp}/podium-service.XXXXXX") || fail internal "cannot create a temporary file"
trap 'rm -f "$log"' EXIT
trap 'exit 130' INT TERM

have() { command -v "$1" >/dev/null 2>&1; }
systemd_running() { [ -d /run/systemd/system ] && have systemctl; }

case $manager in
systemd)
	if ! systemd_running; then
		detail manager systemd
		fail no-service-manager "manager=systemd was asked for, but systemd is not running on this node (/run/systemd/system does not exist)"
	fi
	;;
init) ;;
*) if systemd_running; then manager=systemd; else manager=init; fi ;;
esac
detail manager "$manager"

# The last lines of a command's output, for error details.
output_tail() { tail -n 20 "$log" | tail -c 4000; }

# action_failed WHAT RC: the error for a service command that failed.
action_failed() {
	detail_raw exitcode "$2"
	detail output "$(output_tail)"
	first=$(awk 'NF { print; exit }' "$log")
	fail action-failed "$1 exited with code $2: ${first:-it printed nothing}"
}

# -- systemd ----------------------------------------------------------------------------

# Reads `systemctl show` KEY=VALUE lines on stdin into load, active, sub, unit_file.
parse_show() {
	load="" active="" sub="" unit_file=""
	while IFS= read -r line; do
		case $line in
		LoadState=*) load=${line#*=} ;;
		ActiveState=*) active=${line#*=} ;;
		SubState=*) sub=${line#*=} ;;
		UnitFileState=*) unit_file=${line#*=} ;;
		esac
	done
}

# The task's status word for a systemd ActiveState.
systemd_status() {
	case $1 in
	active | reloading) echo running ;;
	inactive | failed) echo stopped ;;
	activating) echo starting ;;
	deactivating) echo stopping ;;
	*) echo unknown ;;
	esac
}

systemd_read() {
	systemctl show --no-pager -p LoadState -p ActiveState -p SubState -p UnitFileState \
		-- "$name" </dev/null >"$log" 2>&1 || action_failed "systemctl show $name" $?
	parse_show <"$log"
	if [ "$load" = not-found ] && [ "$active" = inactive ]; then
		fail unknown-service "no service named '$name' on this node: systemd has no unit $name"
	fi
	status=$(systemd_status "$active")
	# is-enabled knows more states than UnitFileState (generated, alias, ...).
	enabled=$(systemctl is-enabled -- "$name" 2>/dev/null </dev/null | sed -n 1p)
	[ -n "$enabled" ] || enabled=${unit_file:-unknown}
}

systemd_report() {
	put status "$status"
	put enabled "$enabled"
	put manager systemd
	put active_state "$active"
	put sub_state "$sub"
}

systemd_act() {
	systemctl --no-ask-password "$action" -- "$name" </dev/null >"$log" 2>&1 || action_failed "systemctl $action $name" $?
}

# -- init scripts -----------------------------------------------------------------------

script=/etc/init.d/$name

# init_run ACTION: the init script with a clean environment, as service(8) runs it.
init_run() {
	env -i PATH="${PATH:-/usr/sbin:/usr/bin:/sbin:/bin}" TERM=dumb ${caller_lang:+LANG="$caller_lang"} \
		"$script" "$1" </dev/null >"$log" 2>&1
}

# The rc directories' start links say whether the service starts at boot.
init_enabled() {
	dirs=0
	for d in /etc/rc[2345].d /etc/rc.d/rc[2345].d; do
		[ -d "$d" ] || continue
		dirs=1
		for link in "$d"/S[0-9][0-9]"$name"; do
			if [ -e "$link" ] || [ -L "$link" ]; then
				echo enabled
				return
			fi
		done
	done
	if [ "$dirs" = 1 ]; then echo disabled; else echo unknown; fi
}

init_read() {
	if [ ! -f "$script" ] || [ ! -x "$script" ]; then
		if [ "$manager" = init ] && systemd_running; then
			fail unknown-service "no service named '$name' on this node: there is no executable init script $script"
		fi
		fail unknown-service "no service named '$name' on this node: there is no executable init script $script (and systemd is not running)"
	fi
	init_run status
	# LSB: 0 running; 1, 2 dead but a pid or lock file is left; 3 not running.
	case $? in
	0) status=running ;;
	1 | 2 | 3) status=stopped ;;
	*) status=unknown ;;
	esac
	enabled=$(init_enabled)
}

init_report() {
	put status "$status"
	put enabled "$enabled"
	put manager init
}

init_boot() { # enable|disable
	if have update-rc.d; then
		if [ "$1" = enable ]; then
			update-rc.d "$name" defaults </dev/null >"$log" 2>&1 || action_failed "update-rc.d $name defaults" $?
		fi
		update-rc.d "$name" "$1" </dev/null >"$log" 2>&1 || action_failed "update-rc.d $name $1" $?
	elif have chkconfig; then
		if [ "$1" = enable ]; then
			chkconfig --list "$name" </dev/null >/dev/null 2>&1 ||
				chkconfig --add "$name" </dev/null >"$log" 2>&1 ||
				action_failed "chkconfig --add $name" $?
			set -- on
		else
			set -- off
		fi
		chkconfig "$name" "$1" </dev/null >"$log" 2>&1 || action_failed "chkconfig $name $1" $?
	else
		fail unsupported-action "cannot $action '$name': this node has neither update-rc.d nor chkconfig to change what starts at boot"
	fi
}

init_act() {
	case $action in
	enable | disable) init_boot "$action" ;;
	*) init_run "$action" || action_failed "$script $action" $? ;;
	esac
}

# -- main -------------------------------------------------------------------------------

read_state() { if [ "$manager" = systemd ]; then systemd_read; else init_read; fi; }
report() { if [ "$manager" = systemd ]; then systemd_report; else init_report; fi; }
act() { if [ "$manager" = systemd ]; then systemd_act; else init_act; fi; }

read_state

# What the action would change, given the state now.
case $action in
status) would=nothing ;;
start) if [ "$status" = running ]; then would=nothing; else would=start; fi ;;
stop) if [ "$status" = stopped ]; then would=nothing; else would=stop; fi ;;
restart) would=restart ;;
enable) if [ "$enabled" = enabled ]; then would=nothing; else would=enable; fi ;;
disable) if [ "$enabled" = disabled ]; then would=nothing; else would=disable; fi ;;
esac

if [ "$noop" = true ]; then
	report
	put_raw noop true
	[ "$action" = status ] || put would "$would"
	succeed
fi

if [ "$would" != nothing ]; then
	act
	read_state
fi
report
succeed
