package nlfuzz

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// fsock is one socket to the module, opened with fuzzed options.
type fsock struct {
	fd   int
	opts string // the options set, for reports
}

// kernelAddr is the module's kernel socket: port id 0.
var kernelAddr = &unix.SockaddrNetlink{Family: unix.AF_NETLINK}

// openSock opens a socket to the module on unit in the calling thread's
// namespace with options drawn from r. Options the caller may not set
// (group membership without CAP_NET_ADMIN, NETLINK_LISTEN_ALL_NSID without
// CAP_NET_BROADCAST) are tried; the kernel's refusal is expected and the
// socket goes on without them.
func openSock(unit int, r *rand.Rand) (*fsock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unit)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	s := &fsock{fd: fd}
	var opts []string
	setopt := func(name string, level, opt, value int) error {
		if err := unix.SetsockoptInt(fd, level, opt, value); err != nil {
			return fmt.Errorf("setsockopt %s: %w", name, err)
		}
		opts = append(opts, name)
		return nil
	}
	err = func() error {
		// The first bind may ask for groups too; without the privilege
		// the kernel refuses, and the socket binds without them.
		groups := uint32(0)
		if r.IntN(10) == 0 {
			groups = r.Uint32()
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err == nil {
			if groups != 0 {
				opts = append(opts, fmt.Sprintf("groups=%#x", groups))
			}
		} else if groups == 0 || err != unix.EPERM {
			return os.NewSyscallError("bind", err)
		} else if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return os.NewSyscallError("bind", err)
		}
		for _, o := range []struct {
			name       string
			opt        int
			percent    int
			privileged bool // the kernel refuses it to an unprivileged caller
		}{
			{"ext_ack", unix.NETLINK_EXT_ACK, 50, false},
			{"cap_ack", unix.NETLINK_CAP_ACK, 30, false},
			{"no_enobufs", unix.NETLINK_NO_ENOBUFS, 20, false},
			{"listen_all_nsid", unix.NETLINK_LISTEN_ALL_NSID, 10, true},
			{"broadcast_error", unix.NETLINK_BROADCAST_ERROR, 20, false},
		} {
			if r.IntN(100) >= o.percent {
				continue
			}
			err := setopt(o.name, unix.SOL_NETLINK, o.opt, 1)
			if o.privileged && errors.Is(err, unix.EPERM) {
				opts = append(opts, o.name+"(refused)")
				continue
			}
			if err != nil {
				return err
			}
		}
		// A small receive buffer: replies that do not fit are lost.
		if r.IntN(10) == 0 {
			if err := setopt("rcvbuf=4096", unix.SOL_SOCKET, unix.SO_RCVBUF, 4096); err != nil {
				return err
			}
		}
		if r.IntN(5) == 0 {
			if err := unix.Connect(fd, kernelAddr); err != nil {
				return os.NewSyscallError("connect", err)
			}
			opts = append(opts, "connected")
		}
		return nil
	}()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s.opts = strings.Join(opts, ",")
	return s, nil
}

// openPlainSock opens a socket with no options, for the ECHO probes.
func openPlainSock(unit int) (*fsock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unit)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	return &fsock{fd: fd, opts: "plain"}, nil
}

// target is one network namespace the senders use: per sender a few
// sockets, and a probe socket for the ECHO checks. The sockets keep the
// namespace alive; closing them destroys it (unless it is the initial one).
type target struct {
	inum    uint32
	socks   [][]*fsock // by sender
	probeMu sync.Mutex // serialises ECHO probes, whose answers must not mix
	probe   *fsock
}

// sockets per sender in each namespace
const socksPerSender = 2

// openTarget opens the sockets of a target in the calling thread's
// namespace.
func openTarget(unit, senders int, r *rand.Rand) (*target, error) {
	inum, err := threadNetns()
	if err != nil {
		return nil, err
	}
	t := &target{inum: inum, socks: make([][]*fsock, senders)}
	for i := range t.socks {
		for range socksPerSender {
			s, err := openSock(unit, r)
			if err != nil {
				t.close()
				return nil, err
			}
			t.socks[i] = append(t.socks[i], s)
		}
	}
	if t.probe, err = openPlainSock(unit); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *target) close() {
	for _, ss := range t.socks {
		for _, s := range ss {
			unix.Close(s.fd)
		}
	}
	if t.probe != nil {
		unix.Close(t.probe.fd)
	}
}

// threadNetns returns the inode of the calling thread's network namespace.
func threadNetns() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, os.NewSyscallError("stat /proc/thread-self/ns/net", err)
	}
	return uint32(st.Ino), nil
}

// inNewNetns runs fn on a locked thread in a new network namespace, then
// returns the thread to the original one. If that fails the goroutine
// exits still locked, and the runtime discards the thread. The namespace
// lives as long as something fn opened in it.
func inNewNetns(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- os.NewSyscallError("open /proc/thread-self/ns/net", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- os.NewSyscallError("unshare(CLONE_NEWNET)", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("return to the original namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// newTarget creates a namespace and the sockets of a target in it.
func newTarget(unit, senders int, r *rand.Rand) (*target, error) {
	var t *target
	err := inNewNetns(func() (err error) {
		t, err = openTarget(unit, senders, r)
		return err
	})
	if err != nil && t != nil {
		t.close()
		t = nil
	}
	return t, err
}
