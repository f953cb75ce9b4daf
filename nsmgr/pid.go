package nsmgr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// WatchPID returns a channel that is closed when process pid exits. It
// opens a pidfd and waits for it through the runtime's poller, so no thread
// blocks. It fails if the process does not exist (matching unix.ESRCH).
// Cancelling ctx stops the watch and releases the pidfd; the channel is
// then never closed, so callers select on ctx.Done as well.
//
// This is how the broker notices that a namespace attached by pid is gone:
// its open Namespace keeps the kernel namespace alive after the process
// exits, so the broker watches the process and closes what it holds when
// the channel closes. To be sure the namespace belongs to the process and
// not to a later one that reused the pid, call WatchPID first, then Open
// the pid's namespace, then check that the channel is still open.
func WatchPID(ctx context.Context, pid int) (<-chan struct{}, error) {
	name := Ref{PID: pid}.String()
	fail := func(err error) (<-chan struct{}, error) {
		return nil, &Error{Op: "watch pid", Namespace: name, Err: err}
	}
	if pid <= 0 {
		return fail(fmt.Errorf("%w: pid %d", ErrInvalidRef, pid))
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.EINVAL) {
		// Kernels before 5.10 lack PIDFD_NONBLOCK; the flag works via fcntl.
		fd, err = unix.PidfdOpen(pid, 0)
		if err == nil {
			if err = unix.SetNonblock(fd, true); err != nil {
				unix.Close(fd)
			}
		}
	}
	if err != nil {
		return fail(os.NewSyscallError("pidfd_open", err))
	}
	f := os.NewFile(uintptr(fd), "pidfd:"+name)
	// A zero deadline is accepted only by files the poller manages.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return fail(err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fail(err)
	}
	exited := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { f.SetReadDeadline(time.Unix(1, 0)) })
	go func() {
		defer f.Close()
		defer stop()
		// A pidfd polls readable once the process has exited.
		err := rc.Read(func(fd uintptr) bool { return pollIn(int(fd)) })
		if err == nil {
			close(exited)
		}
	}()
	return exited, nil
}

// pollIn reports whether fd is readable without waiting.
func pollIn(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(p, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0 && p[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0
	}
}

// ProcessStart returns when process pid started, in clock ticks after
// boot (field 22 of /proc/PID/stat). A pid the kernel gives to a new
// process has another start time, so a pid and its start time name one
// process for as long as the machine runs. It fails if the process does
// not exist (matching fs.ErrNotExist).
func ProcessStart(pid int) (uint64, error) {
	name := Ref{PID: pid}.String()
	fail := func(err error) (uint64, error) {
		return 0, &Error{Op: "process start", Namespace: name, Err: err}
	}
	if pid <= 0 {
		return fail(fmt.Errorf("%w: pid %d", ErrInvalidRef, pid))
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return fail(err)
	}
	// The command (field 2) is in parentheses and may hold anything, ")"
	// and spaces included: the fields after it start after the last ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return fail(errors.New("malformed /proc/PID/stat"))
	}
	fields := strings.Fields(string(b[i+1:]))
	const startField = 22 - 3 // fields[0] is field 3, the state
	if len(fields) <= startField {
		return fail(errors.New("malformed /proc/PID/stat: too few fields"))
	}
	start, err := strconv.ParseUint(fields[startField], 10, 64)
	if err != nil {
		return fail(fmt.Errorf("malformed /proc/PID/stat: start time: %w", err))
	}
	return start, nil
}
