package nsmgr

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// SocketID returns the identity of the network namespace a socket lives
// in (SIOCGSKNS, which needs CAP_NET_ADMIN). An accepted unix socket lives
// in the namespace of the process that connected; a listening one in the
// namespace it was opened in.
func SocketID(c syscall.Conn) (ID, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return ID{}, err
	}
	var id ID
	var opErr error
	if err := rc.Control(func(fd uintptr) {
		nsfd, err := unix.IoctlRetInt(int(fd), unix.SIOCGSKNS)
		if err != nil {
			opErr = os.NewSyscallError("ioctl SIOCGSKNS", err)
			return
		}
		defer unix.Close(nsfd)
		var st unix.Stat_t
		if err := unix.Fstat(nsfd, &st); err != nil {
			opErr = os.NewSyscallError("fstat", err)
			return
		}
		id = ID{Dev: st.Dev, Ino: st.Ino}
	}); err != nil {
		return ID{}, err
	}
	if opErr == nil && id == (ID{}) {
		opErr = errors.New("socket namespace has no identity")
	}
	if opErr != nil {
		return ID{}, fmt.Errorf("socket's network namespace: %w", opErr)
	}
	return id, nil
}
