package nlfuzz

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// reportPattern matches the first line of a kernel report: the same list
// the VM harness fails a run on (test/netns/vm/lib/run.sh, KLOG_PATTERNS).
var reportPattern = regexp.MustCompile(strings.Join([]string{
	`WARNING:`, `BUG:`, `kernel BUG`, `Oops`, `Call Trace:`, `general protection fault`,
	`KASAN:`, `UBSAN:`, `KFENCE:`, `unreferenced object`, `kmemleak:.*suspected memory leak`,
	`possible recursive locking`, `possible circular locking dependency`,
	`inconsistent lock state`, `suspicious RCU usage`, `DEBUG_LOCKS_WARN_ON`,
	`INFO: task .* blocked`, `rcu.*detected stalls?`, `soft lockup`, `hard LOCKUP`,
	`Kernel panic`, `list_(add|del) corruption`, `refcount_t: `,
	`ref_tracker: .*has [0-9]+/[0-9]+ users`,
}, "|"))

// tidPatterns find the thread a report names: KASAN's "by task comm/tid",
// the "CPU: n PID: tid" of every stack dump and WARNING, lockdep's
// "comm/tid is trying to acquire".
var tidPatterns = []*regexp.Regexp{
	regexp.MustCompile(`by task \S+/(\d+)`),
	regexp.MustCompile(`\bPID: (\d+)`),
	regexp.MustCompile(`^\s*\S+/(\d+) is trying to acquire`),
}

// reportTIDs returns the thread ids a report names, in order.
func reportTIDs(lines []string) []int {
	var tids []int
	for _, l := range lines {
		for _, p := range tidPatterns {
			if m := p.FindStringSubmatch(l); m != nil {
				if tid, err := strconv.Atoi(m[1]); err == nil {
					tids = append(tids, tid)
				}
			}
		}
	}
	return tids
}

// kmsg reads the kernel log from where it stood when opened. Each reader
// has its own position, so every sender can read what its own last
// datagram made the kernel print.
type kmsg struct {
	fd  int
	buf []byte
}

func openKmsg() (*kmsg, error) {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open /dev/kmsg", err)
	}
	if _, err := unix.Seek(fd, 0, io.SeekEnd); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("seek /dev/kmsg", err)
	}
	return &kmsg{fd: fd, buf: make([]byte, 8192)}, nil
}

func (k *kmsg) close() { unix.Close(k.fd) }

// next returns the text of the next record, or ok false when there is
// none yet.
func (k *kmsg) next() (text string, ok bool, err error) {
	for {
		n, err := unix.Read(k.fd, k.buf)
		switch err {
		case nil:
			return recordText(k.buf[:n]), true, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return "", false, nil
		case unix.EPIPE:
			// Records were overwritten before this reader got to them;
			// the position moved on to the oldest one left.
			return "(kernel log records lost)", true, nil
		default:
			return "", false, os.NewSyscallError("read /dev/kmsg", err)
		}
	}
}

// recordText returns the message of a /dev/kmsg record
// ("prio,seq,usec,flags;message\n" and continuation lines).
func recordText(rec []byte) string {
	s := string(rec)
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[i+1:]
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// scan reads every new record and returns the first that starts a
// report, or "" if none does.
func (k *kmsg) scan() (string, error) {
	for {
		text, ok, err := k.next()
		if err != nil || !ok {
			return "", err
		}
		if reportPattern.MatchString(text) {
			return text, nil
		}
	}
}

// collect returns first and the records that follow it, until the log
// has been quiet for a moment (the rest of a report in another thread may
// still be printing) or max lines or a deadline are reached.
func (k *kmsg) collect(first string, max int, quiet, limit time.Duration) []string {
	lines := []string{first}
	deadline := time.Now().Add(limit)
	lastNew := time.Now()
	for len(lines) < max && time.Now().Before(deadline) && time.Since(lastNew) < quiet {
		text, ok, err := k.next()
		if err != nil {
			lines = append(lines, fmt.Sprintf("(reading the kernel log: %v)", err))
			break
		}
		if !ok {
			// Wait for the next record, or for the quiet time to pass.
			fds := []unix.PollFd{{Fd: int32(k.fd), Events: unix.POLLIN}}
			unix.Poll(fds, int(quiet/time.Millisecond))
			continue
		}
		lines = append(lines, text)
		lastNew = time.Now()
	}
	return lines
}
