#!/bin/sh
# The nsbroker demo, run inside the test VM by `make demo` (demo/run.sh),
# with nsbroker.ko loaded and nsbrokerd, nsbrokerctl and
# nsbroker-isolation-check in /usr/local/bin.
#
# It loads the module as on a real host, starts nsbrokerd, creates three
# tenant namespaces (red, green, blue), has a client in each talk to the
# daemon through the socket the daemon opens inside that namespace,
# attaches a "container" by its process id, shows who received what, and
# runs the isolation check. Each step is checked; the last lines are the
# verdict, and the exit status is 0 only if every check passed.
#
# README.md shows several of these commands; demo/readme_test.go checks
# that they are here, word for word.
#
# What it shows goes to the console, which the host prints as the VM runs;
# standard output, which the harness reports, gets the verdict lines.
set -u

if [ -z "${DEMO_SHOWN:-}" ]; then
	: >/tmp/demo-verdict
	DEMO_SHOWN=1 /bin/sh "$0" >"${DEMO_CONSOLE:-/dev/console}" 2>&1
	rc=$?
	cat /tmp/demo-verdict
	exit $rc
fi

FAILED=""

step() { printf '\n==== %s\n' "$*"; }
# show CMD: print a command as it is run. To stderr, which is the console
# too, so that a command's redirected output does not take it along.
show() { printf '$ %s\n' "$*" >&2; }
# run CMD...: show a command, quoting the words with spaces, then run it.
run() {
	line=""
	for word in "$@"; do
		case $word in
		*" "*) line="$line \"$word\"" ;;
		*) line="$line $word" ;;
		esac
	done
	show "${line# }"
	"$@"
}
fail() {
	printf 'demo: FAIL: %s\n' "$*"
	FAILED="$FAILED
demo: FAIL: $*"
}
ok() { printf 'demo: ok: %s\n' "$*"; }

MATRIX="verdict: none (the demo stopped before it)"
CHECK=$MATRIX

# finish: print the verdict lines and exit, 0 only if nothing failed.
finish() {
	if [ -n "$FAILED" ] && [ -s /tmp/nsbrokerd.log ]; then
		printf '\nThe last lines of nsbrokerd'"'"'s log:\n'
		tail -n 20 /tmp/nsbrokerd.log
	fi
	printf '\n'
	{
		echo "demo: matrix: ${MATRIX#verdict: }"
		echo "demo: isolation check: ${CHECK#verdict: }"
		if [ -z "$FAILED" ]; then
			echo "demo: PASS: every tenant received exactly its own namespace's messages and nothing else; every way across held or behaved as documented"
		else
			printf '%s\n' "${FAILED#?}"
		fi
	} | tee -a /tmp/demo-verdict
	[ -z "$FAILED" ]
	exit
}

# die: a failure the rest of the demo cannot go on after.
die() {
	fail "$*"
	[ -z "${DAEMON:-}" ] || kill -TERM "$DAEMON" 2>/dev/null
	finish
}

# wait_for SECONDS CMD...: run CMD every 0.1 s until it succeeds; nothing
# announces when the daemon is ready or a subscription is registered.
wait_for() {
	tries=$(($1 * 10))
	shift
	while ! "$@" >/dev/null 2>&1; do
		tries=$((tries - 1))
		[ "$tries" -gt 0 ] || return 1
		sleep 0.1
	done
}

# subscribed NS: the daemon counts one subscriber in NS.
# shellcheck disable=SC2317 # called through wait_for
subscribed() { nsbrokerctl ns get "$1" | grep -q '^subscribers: *1$'; }
# gone NS: NS is no longer attached.
# shellcheck disable=SC2317 # called through wait_for
gone() { ! nsbrokerctl ns get "$1"; }

# The VM's root holds the module at /kmod/nsbroker.ko, so from / the
# commands read as they do in a checkout on a real host.
cd /

step "1. The module (the VM loaded it at boot; here it is loaded again as on a real host)"
run rmmod nsbroker || die "rmmod nsbroker"
run insmod kmod/nsbroker.ko || die "insmod kmod/nsbroker.ko"
run cat /sys/module/nsbroker/parameters/unit

step "2. Start nsbrokerd (admin socket /run/nsbroker/nsbroker.sock; its log: /tmp/nsbrokerd.log)"
show "nsbrokerd &"
nsbrokerd 2>/tmp/nsbrokerd.log &
DAEMON=$!
if wait_for 20 nsbrokerctl ns list; then
	ok "nsbrokerd (pid $DAEMON) answers on its admin socket"
else
	die "nsbrokerd did not answer on its admin socket within 20 s"
fi

step "3. Three tenants: network namespaces red, green and blue, attached through the admin socket"
for ns in red green blue; do
	run ip netns add "$ns" || die "ip netns add $ns"
done
for ns in red green blue; do
	run nsbrokerctl ns attach "$ns" >/dev/null || die "nsbrokerctl ns attach $ns"
done
run nsbrokerctl ns list

step "4. Each tenant talks to the daemon through the socket inside its own namespace"
for ns in red green blue; do
	inode=$(stat -L -c %i "/run/netns/$ns")
	out=$(run ip netns exec "$ns" nsbrokerctl --local echo "hello from $ns")
	printf '%s\n' "$out"
	case $out in
	*"echo inode=$inode "*) ok "$ns's echo was answered in $ns (inode $inode)" ;;
	*) fail "$ns's echo was not answered by $ns's inode $inode" ;;
	esac
done

# Each tenant subscribes to group 2 and stops after one event; then each
# publishes to group 2, green first: were green's message to leak, red's
# and blue's subscribers would see it before their own. (busybox's timeout
# would run its own ip applet: hence /sbin/ip there.)
for ns in red green blue; do
	show "ip netns exec $ns nsbrokerctl --local subscribe --group 2 --count 1 &"
	timeout 20 /sbin/ip netns exec "$ns" nsbrokerctl --local subscribe --group 2 --count 1 >"/tmp/$ns.sub" 2>&1 &
	eval "SUB_$ns=\$!"
done
for ns in red green blue; do
	wait_for 20 subscribed "$ns" || fail "$ns's subscription was not registered within 20 s"
done
for ns in green blue red; do
	run ip netns exec "$ns" nsbrokerctl --local publish --group 2 "hello from $ns" ||
		fail "publish from $ns"
done
for ns in red green blue; do
	eval "wait \$SUB_$ns" || fail "$ns's subscriber exited with status $?"
	printf "%s's subscriber received: %s\n" "$ns" "$(cat "/tmp/$ns.sub")"
	case $(cat "/tmp/$ns.sub") in
	*"payload=\"hello from $ns\""*) ok "$ns received its own message, not another tenant's" ;;
	*) fail "$ns's first event was not its own message" ;;
	esac
done

# A tenant naming another namespace is told it does not exist.
show "ip netns exec red nsbrokerctl --local echo --namespace green hello"
out=$(ip netns exec red nsbrokerctl --local echo --namespace green hello 2>&1)
rc=$?
printf '%s\n(exit status %d)\n' "$out" "$rc"
case "$rc $out" in
"1 "*"not found"*) ok "red cannot reach green: NOT_FOUND, as if green did not exist" ;;
*) fail "red naming green was not refused with NOT_FOUND" ;;
esac

step "5. A container: a process in a network namespace of its own, attached by its pid"
show "unshare -n sleep 600 &"
unshare -n sleep 600 &
PID=$!
show "PID=$PID"
run nsbrokerctl ns attach --name web pid:$PID || fail "nsbrokerctl ns attach --name web pid:$PID"
inode=$(stat -L -c %i "/proc/$PID/ns/net")
out=$(run nsenter -t $PID -n nsbrokerctl --local echo hello)
printf '%s\n' "$out"
case $out in
*"echo inode=$inode "*) ok "the container's echo was answered in its namespace (inode $inode)" ;;
*) fail "the container's echo was not answered by its namespace's inode $inode" ;;
esac
run kill $PID
wait $PID 2>/dev/null
if wait_for 20 gone web; then
	ok "the container exited and nsbrokerd detached web by itself"
else
	fail "web is still attached 20 s after its process exited"
fi

step "6. Who received what: each tenant publishes 3 messages to group 1 and subscribes to it"
run nsbroker-isolation-check --attached --names red,green,blue --messages 3 --groups 1 --no-listener-probes --brief \
	--quiet >/tmp/matrix.txt
rc=$?
cat /tmp/matrix.txt
MATRIX=$(tail -n 1 /tmp/matrix.txt)
[ -n "$MATRIX" ] || MATRIX="verdict: none (the check could not be carried out)"
[ "$rc" -eq 0 ] || fail "who received what: exit status $rc: ${MATRIX#verdict: }"

step "7. The isolation check: 8 new namespaces, 2 groups, and the known ways across"
run nsbroker-isolation-check >/tmp/check.txt
rc=$?
cat /tmp/check.txt
CHECK=$(tail -n 1 /tmp/check.txt)
[ -n "$CHECK" ] || CHECK="verdict: none (the check could not be carried out)"
[ "$rc" -eq 0 ] || fail "the isolation check: exit status $rc: ${CHECK#verdict: }"

step "8. Stop nsbrokerd"
run kill -TERM "$DAEMON"
wait "$DAEMON"
rc=$?
if [ "$rc" -eq 0 ]; then
	ok "nsbrokerd stopped (exit status 0)"
else
	fail "nsbrokerd exited with status $rc after SIGTERM"
fi
for ns in red green blue; do
	ip netns del "$ns"
done

finish
