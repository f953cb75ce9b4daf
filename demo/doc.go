// Package demo holds `make demo` (run.sh on the host, guest/demo.sh in the
// VM) and, in its test, the check that keeps README.md honest: every
// command the README shows must be one that CI runs.
//
// A fenced block of shell commands in the README (```sh) must follow a
// marker naming the files that run those commands:
//
//	<!-- exercised by: demo/guest/demo.sh demo/run.sh -->
//
// Each command line of the block must occur in one of the files as a
// command: the same words in the same order, where the file may use a
// shell variable for a word ("$ns" for red), name the program by its path
// (/sbin/ip for ip), put something before it (run, timeout 20, VAR=value)
// and redirect, pipe or background it. A unit file block (```ini) is
// checked the same way for its ExecStart line. Each named file must be one
// CI runs, through a chain the test checks link by link: .ci/run runs
// `make test` and `make demo`, the Makefile includes mk/demo.mk, which runs
// demo/run.sh, which boots the VM with demo/guest as VM_EXTRA and
// ./demo.sh as VM_CMD. Blocks of other kinds (```text for output and
// pictures) hold no commands; a fence without a language is an error, so
// that nothing escapes the check.
package demo
