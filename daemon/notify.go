package daemon

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// sdNotify tells the service manager about a state change (READY=1,
// STOPPING=1, ...) when it asked to be told, through $NOTIFY_SOCKET
// (systemd's Type=notify and Type=notify-reload).
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
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

// sdNotifyFiles is sdNotify with descriptors (SCM_RIGHTS).
func sdNotifyFiles(state string, files ...*os.File) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	var fds []int
	for _, f := range files {
		fds = append(fds, int(f.Fd()))
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix([]byte(state), oob, nil)
	return err
}
