#!/bin/sh
# Podium's built-in package task: install, inspect, upgrade or remove one package with
# the node's own package manager (apt/dpkg on the Debian family, dnf or yum with rpm on
# the RedHat family). Input comes as PT_* variables; the result is one JSON object on
# stdout, and a failure is {"_error": {kind, msg, details}} with a non-zero exit.
#
# Results (the shapes of PE's package task):
#   status, install  {"status": "installed", "version": V[, "latest": L]}
#                    {"status": "uninstalled", "version": ""}
#   uninstall        {"status": "uninstalled"}
#   upgrade          {"old_version": V0, "version": V1}
#   with _noop       the current state plus "noop": true and "would": <action>|"nothing"
#                    (and "candidate": the version that would be installed, when known)
set -u

# Tool output is parsed and grepped below: keep it untranslated and byte-oriented, and
# make the name checks' [A-Za-z] ranges mean ASCII letters.
LC_ALL=C
export LC_ALL

# -- JSON output (put, detail, succeed, fail: see podium/files/json.sh) -----------------

# shellcheck disable=SC2034 # read by fail() in json.sh
error_kind_prefix=podium.package
# shellcheck source-path=SCRIPTDIR source=../../podium/files/json.sh
. "${PT__installdir:?the agent passes _installdir}/podium/files/json.sh"

# -- input ------------------------------------------------------------------------------

action=${PT_action:-}
name=${PT_name:-}
version=${PT_version:-}
manager=${PT_manager:-}
noop=${PT__noop:-false}
# An Optional parameter sent as null arrives as the text "null".
[ "$version" = null ] && version=""
[ "$manager" = null ] && manager=""

case $action in
install | status | uninstall | upgrade) ;;
*)
	detail action "$action"
	fail invalid-parameter "action must be one of install, status, uninstall, upgrade (got '$action')"
	;;
esac

# Package names and versions are letters, digits and .+-_:~ (Debian and rpm alike),
# starting with a letter or digit: nothing a shell, a glob or an option parser would read.
valid_word() {
	case $1 in
	'' | [!A-Za-z0-9]* | *[!A-Za-z0-9.+_:~-]*) return 1 ;;
	esac
	return 0
}
if ! valid_word "$name"; then
	detail name "$name"
	fail invalid-parameter "name must be a package name: letters, digits and . + - _ : ~, starting with a letter or digit (got '$name')"
fi
if [ -n "$version" ] && ! valid_word "$version"; then
	detail version "$version"
	fail invalid-parameter "version must be a package version: letters, digits and . + - _ : ~, starting with a letter or digit (got '$version')"
fi
case $manager in
'' | apt | dnf | yum) ;;
*)
	detail manager "$manager"
	fail invalid-parameter "manager must be one of apt, dnf, yum (got '$manager')"
	;;
esac
case $noop in
true | false) ;;
*) noop=false ;;
esac

detail name "$name"
[ -n "$version" ] && detail version "$version"

log=$(mktemp "${TMPDIR:-/tmp}/podium-package.XXXXXX") || fail internal "cannot create a temporary file"
trap 'rm -f "$log"' EXIT
trap 'exit 130' INT TERM

# -- choosing the package manager -------------------------------------------------------

have() { command -v "$1" >/dev/null 2>&1; }

usable() {
	case $1 in
	apt) have apt-get && have apt-cache && have dpkg-query ;;
	dnf) have dnf && have rpm ;;
	yum) have yum && have rpm ;;
	esac
}

# The words of ID and ID_LIKE in /etc/os-release (read, not sourced).
os_words() {
	[ -r /etc/os-release ] || return 0
	sed -n 's/^ID\(_LIKE\)\{0,1\}=//p' /etc/os-release | tr -d "\"'" | tr '\n' ' '
}

if [ -n "$manager" ]; then
	if ! usable "$manager"; then
		detail manager "$manager"
		fail no-package-manager "manager=$manager was asked for, but $manager is not installed on this node"
	fi
else
	os=$(os_words)
	case " $os " in
	*" debian "* | *" ubuntu "*) order="apt dnf yum" ;;
	*" rhel "* | *" fedora "* | *" centos "*) order="dnf yum apt" ;;
	*) order="apt dnf yum" ;;
	esac
	for m in $order; do
		if usable "$m"; then
			manager=$m
			break
		fi
	done
	if [ -z "$manager" ]; then
		detail os "$os"
		fail no-package-manager "no supported package manager on this node: the package task needs apt (with dpkg), dnf or yum (with rpm)"
	fi
fi
detail manager "$manager"

# The last lines of the manager's output, for error details.
output_tail() { tail -n 20 "$log" | tail -c 4000; }

# The first error line of the manager's output ("E: ..." for apt, "Error: ..." for dnf).
first_error() {
	sed -n -e 's/^E: *//p' -e 's/^Error: *//p' "$log" | head -n 1
}

# -- apt / dpkg -------------------------------------------------------------------------

# The installed version(s) of $name, comma-separated; empty when it is not installed
# (removed packages whose configuration files remain count as not installed).
apt_installed() {
	dpkg-query -W -f '${Status}\t${Version}\n' "$name" 2>/dev/null | awk -F '\t' '
		$1 ~ / installed$/ && !seen[$2]++ { v = v (v == "" ? "" : ", ") $2 }
		END { print v }'
}

# What the package sources offer for $name, read once (apt-cache is slow where its
# cache is disabled): $candidate, the version apt would install (empty when no source
# has $name), and $available, every version offered, space-separated. apt-cache reads
# a name it does not know as a regular expression, so only $name's own block counts.
policy_read=false
apt_policy() {
	[ "$policy_read" = true ] && return
	policy_read=true
	policy=$(apt-cache policy "$name" 2>/dev/null | awk -v pkg="$name:" -v base="${name%%:*}:" '
		/^[^ ]/ { mine = ($0 == pkg || $0 == base); next }
		!mine { next }
		$1 == "Candidate:" { candidate = ($2 == "(none)" ? "" : $2) }
		/^ \*\*\* / { versions = versions " " $2; next }
		/^     [^ ]/ { versions = versions " " $1 }
		END { print candidate; print substr(versions, 2) }')
	candidate=$(printf '%s\n' "$policy" | sed -n 1p)
	available=$(printf '%s\n' "$policy" | sed -n 2p)
}

# apt-get ARGS...: run non-interactively, output to $log; fail with a clear error.
apt_get() {
	DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_MODE=a \
		UCF_FORCE_CONFFOLD=1 apt-get -y -q \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"$@" </dev/null >"$log" 2>&1
	rc=$?
	[ "$rc" -eq 0 ] && return 0
	error=$(first_error)
	detail_raw exitcode "$rc"
	detail output "$(output_tail)"
	if grep -q -e 'Could not get lock' -e 'Unable to acquire the dpkg frontend lock' \
		-e 'Unable to lock' "$log"; then
		fail locked "the package database is locked by another process ($error); try again when it has finished"
	fi
	grep -q -e 'Unable to locate package' "$log" && apt_unknown
	if grep -q -e "Version '.*' for '.*' was not found" "$log"; then
		fail unknown-version "version '$version' of package '$name' is not available from this node's package sources"
	fi
	fail manager-failed "apt-get $1 $name failed with exit code $rc: ${error:-see details.output}"
}

apt_report_installed() {
	installed=$(apt_installed)
	if [ -z "$installed" ]; then
		put status uninstalled
		put version ""
		return
	fi
	put status installed
	put version "$installed"
	apt_policy
	if [ -n "$candidate" ] && [ "$candidate" != "$installed" ]; then
		put latest "$candidate"
	fi
}

# noop_report WOULD [CANDIDATE]: the current state and what a real run would do.
noop_report() {
	put_raw noop true
	put would "$1"
	[ -n "${2:-}" ] && put candidate "$2"
	succeed
}

apt_unknown() {
	fail unknown-package "no package named '$name' is available from this node's package sources (is the name right? the package lists may need an apt-get update)"
}

apt_target() {
	apt_policy
	[ -n "$available" ] || apt_unknown
	if [ -z "$version" ]; then
		[ -n "$candidate" ] || apt_unknown
		target=$candidate
		return
	fi
	case " $available " in
	*" $version "*) target=$version ;;
	*)
		detail available "$available"
		fail unknown-version "version '$version' of package '$name' is not available from this node's package sources (they offer: $available)"
		;;
	esac
}

apt_main() {
	current=$(apt_installed)
	case $action in
	status)
		apt_report_installed
		[ "$noop" = true ] && put_raw noop true
		succeed
		;;
	install)
		if [ -n "$current" ] && { [ -z "$version" ] || [ "$version" = "$current" ]; }; then
			apt_report_installed
			[ "$noop" = true ] && noop_report nothing
			succeed
		fi
		apt_target
		if [ "$noop" = true ]; then
			apt_report_installed
			noop_report install "$target"
		fi
		if [ -n "$version" ]; then
			apt_get install --allow-downgrades "$name=$version"
		else
			apt_get install "$name"
		fi
		apt_report_installed
		succeed
		;;
	uninstall)
		if [ -z "$current" ]; then
			put status uninstalled
			[ "$noop" = true ] && noop_report nothing
			succeed
		fi
		if [ "$noop" = true ]; then
			put status installed
			put version "$current"
			noop_report uninstall
		fi
		apt_get remove "$name"
		put status uninstalled
		succeed
		;;
	upgrade)
		if [ -z "$current" ]; then
			fail not-installed "package '$name' is not installed, so it cannot be upgraded; use action=install to install it"
		fi
		apt_target
		if [ "$noop" = true ]; then
			apt_report_installed
			if [ "$target" = "$current" ]; then
				noop_report nothing
			fi
			noop_report upgrade "$target"
		fi
		if [ "$target" != "$current" ]; then
			apt_get install --only-upgrade "$name=$target"
		fi
		put old_version "$current"
		put version "$(apt_installed)"
		succeed
		;;
	esac
}

# -- dnf / yum with rpm -----------------------------------------------------------------

# "NAME<TAB>VERSION-RELEASE" lines of the installed packages that are, or provide, $name
# ("vim" is installed as vim-enhanced); nothing when none is.
rpm_installed_lines() {
	rpm -q --qf '%{NAME}\t%{VERSION}-%{RELEASE}\n' "$name" 2>/dev/null ||
		rpm -q --whatprovides --qf '%{NAME}\t%{VERSION}-%{RELEASE}\n' "$name" 2>/dev/null ||
		true
}

rpm_installed() {
	rpm_installed_lines | awk -F '\t' 'NF == 2 && !seen[$2]++ { v = v (v == "" ? "" : ", ") $2 }
		END { print v }'
}

# The names of the installed packages behind $name, space-separated.
rpm_installed_names() {
	rpm_installed_lines | awk -F '\t' 'NF == 2 { printf "%s ", $1 }'
}

# A newer version in the manager's cache (no network), or nothing.
rpm_latest() {
	"$manager" -q -C check-update "$name" 2>/dev/null | awk -v n="$name" '
		NF >= 2 { split($1, p, "."); if (p[1] == n || $1 == n) { print $2; exit } }'
}

# dnf|yum ARGS...: run non-interactively, output to $log; fail with a clear error.
rpm_run() {
	"$manager" -y "$@" </dev/null >"$log" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ]; then
		# yum exits 0 when it finds nothing to act on.
		if grep -q -e 'No package .* available' -e 'No match for argument' "$log"; then
			detail output "$(output_tail)"
			rpm_missing
		fi
		return 0
	fi
	error=$(first_error)
	detail_raw exitcode "$rc"
	detail output "$(output_tail)"
	if grep -q -e 'No package .* available' -e 'No match for argument' \
		-e 'Unable to find a match' -e 'Nothing to do' "$log"; then
		rpm_missing
	fi
	fail manager-failed "$manager $1 $name failed with exit code $rc: ${error:-see details.output}"
}

rpm_missing() {
	if [ -n "$version" ]; then
		fail unknown-version "package '$name' version '$version' is not available from this node's repositories"
	fi
	fail unknown-package "no package named '$name' is available from this node's repositories"
}

rpm_report_installed() {
	installed=$(rpm_installed)
	if [ -z "$installed" ]; then
		put status uninstalled
		put version ""
		return
	fi
	put status installed
	put version "$installed"
	latest=$(rpm_latest)
	if [ -n "$latest" ] && [ "$latest" != "$installed" ]; then
		put latest "$latest"
	fi
}

rpm_main() {
	current=$(rpm_installed)
	spec=$name${version:+-$version}
	case $action in
	status)
		rpm_report_installed
		[ "$noop" = true ] && put_raw noop true
		succeed
		;;
	install)
		if [ -n "$current" ] && { [ -z "$version" ] || [ "$version" = "$current" ]; }; then
			rpm_report_installed
			[ "$noop" = true ] && noop_report nothing
			succeed
		fi
		if [ "$noop" = true ]; then
			rpm_report_installed
			noop_report install "$version"
		fi
		rpm_run install "$spec"
		rpm_report_installed
		succeed
		;;
	uninstall)
		if [ -z "$current" ]; then
			put status uninstalled
			[ "$noop" = true ] && noop_report nothing
			succeed
		fi
		if [ "$noop" = true ]; then
			put status installed
			put version "$current"
			noop_report uninstall
		fi
		# shellcheck disable=SC2046 # package names hold no spaces or glob characters
		rpm_run remove $(rpm_installed_names)
		put status uninstalled
		succeed
		;;
	upgrade)
		if [ -z "$current" ]; then
			fail not-installed "package '$name' is not installed, so it cannot be upgraded; use action=install to install it"
		fi
		if [ "$noop" = true ]; then
			rpm_report_installed
			target=${version:-$(rpm_latest)}
			if [ -z "$target" ] || [ "$target" = "$current" ]; then
				noop_report nothing
			fi
			noop_report upgrade "$target"
		fi
		rpm_run upgrade "$spec"
		put old_version "$current"
		put version "$(rpm_installed)"
		succeed
		;;
	esac
}

case $manager in
apt) apt_main ;;
*) rpm_main ;;
esac
