package daemon

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// sdNotify tells the service manager about a state change (READY=1,
// STOPPING=1, ...) when it asked to be told, through $NOTIFY_SOCKET
// (systemd's Type=notify and Type=notify-reload).
func sdNotify(state string) error {
	return sdNotifyFiles(state)
}

// reloadingState is the notification that a reload began; the service
// manager wants the CLOCK_MONOTONIC time with it.
func reloadingState() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000)
}

// fdStoreOn reports whether the service manager keeps descriptors for
// the daemon: systemd sets $FDSTORE to FileDescriptorStoreMax= (since
// version 254) along with $NOTIFY_SOCKET.
func fdStoreOn() bool {
	n, err := strconv.Atoi(os.Getenv("FDSTORE"))
	return err == nil && n > 0 && os.Getenv("NOTIFY_SOCKET") != ""
}

// sdStore hands f to the service manager's fd store under name
// (FDSTORE=1): it keeps the descriptor while the daemon restarts and
// passes it back at the next start (LISTEN_FDS). Storing one again is a
// no-op.
func sdStore(name string, f *os.File) error {
	return sdNotifyFiles("FDSTORE=1\nFDNAME="+name, f)
}

// sdUnstore closes the descriptors stored under name.
func sdUnstore(name string) error {
	return sdNotifyFiles("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// sdNotifyFiles is sdNotify with descriptors (SCM_RIGHTS). It sends from
// an unconnected datagram socket with sendmsg, as sd_pid_notify_with_fds
// does: Go's net package refuses WriteMsgUnix on a connected datagram
// socket (ErrWriteToConnected), whatever the address.
func sdNotifyFiles(state string, files ...*os.File) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	var oob []byte
	if len(files) > 0 {
		oob = unix.UnixRights(rawFDs(files)...)
	}
	for {
		err = unix.Sendmsg(fd, []byte(state), oob, &unix.SockaddrUnix{Name: addr}, unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			break
		}
	}
	runtime.KeepAlive(files)
	if err != nil {
		return os.NewSyscallError("sendmsg", err)
	}
	return nil
}

// rawFDs returns the descriptors of files, which must stay open while
// they are used. Unlike File.Fd it leaves them in non-blocking mode: the
// mode belongs to the open file description, which a listener's File()
// shares with the listener, and a listener in blocking mode makes its
// Accept block in the kernel, where Close cannot end it.
func rawFDs(files []*os.File) []int {
	fds := make([]int, 0, len(files))
	for _, f := range files {
		fd := -1
		if rc, err := f.SyscallConn(); err == nil {
			rc.Control(func(p uintptr) { fd = int(p) })
		}
		fds = append(fds, fd)
	}
	return fds
}
