package nsmgr

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ID identifies a namespace: the device and inode of its nsfs file. Two
// open namespaces are the same namespace exactly when their IDs are equal.
type ID struct {
	Dev uint64
	Ino uint64
}

// String returns "dev:ino" in decimal.
func (id ID) String() string { return fmt.Sprintf("%d:%d", id.Dev, id.Ino) }

// Namespace is an open network namespace. It holds a file descriptor that
// keeps the namespace alive until Close.
type Namespace struct {
	ref Ref
	id  ID

	// mu guards fd: Close takes it for writing, users of fd for reading.
	mu sync.RWMutex
	fd int // -1 once closed

	// cookieMu guards cookie, which is 0 until first read successfully.
	cookieMu sync.Mutex
	cookie   uint64
}

// Open opens the network namespace ref names. A file that exists but is
// not a network namespace, or does not exist, gives an error matching
// ErrNotNetns (and fs.ErrNotExist when it is missing).
func Open(ref Ref) (*Namespace, error) {
	if err := ref.Validate(); err != nil {
		return nil, &Error{Op: "open", Namespace: ref.String(), Err: err}
	}
	fd, err := openNetns(ref.file())
	if err != nil {
		return nil, &Error{Op: "open", Namespace: ref.String(), Err: err}
	}
	return newNamespace(fd, ref)
}

// Current opens the network namespace of the calling OS thread, which is
// the process's namespace unless called from inside Do. Its Ref is the
// thread's /proc path, which goes away with the thread.
func Current() (*Namespace, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	path := threadNetnsPath()
	ref := Ref{Path: path}
	fd, err := openNetns(path)
	if err != nil {
		return nil, &Error{Op: "open", Namespace: ref.String(), Err: err}
	}
	return newNamespace(fd, ref)
}

// threadNetnsPath is the network namespace file of the calling thread; the
// caller must have locked its OS thread.
func threadNetnsPath() string {
	return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
}

func newNamespace(fd int, ref Ref) (*Namespace, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &Error{Op: "open", Namespace: ref.String(), Err: os.NewSyscallError("fstat", err)}
	}
	return &Namespace{ref: ref, fd: fd, id: ID{Dev: st.Dev, Ino: st.Ino}}, nil
}

// openNetns opens path and returns its descriptor if it is a network
// namespace.
func openNetns(path string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("%w: %w", ErrNotNetns, err)
		}
		return -1, os.NewSyscallError("stat", err)
	}
	// Namespace files are regular files; refusing anything else before
	// opening keeps FIFOs and devices from blocking or reacting.
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return -1, notNetns(fileKind(st.Mode) + ", not an nsfs file")
	}
	// O_NONBLOCK in case the path was swapped for a FIFO after the stat.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return -1, fmt.Errorf("%w: %w", ErrNotNetns, err)
		}
		return -1, os.NewSyscallError("open", err)
	}
	if err := checkNetns(fd); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkNetns reports whether fd is an nsfs file for a network namespace.
func checkNetns(fd int) error {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return os.NewSyscallError("fstatfs", err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return notNetns("a regular file, not an nsfs file")
	}
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err == nil {
		if typ != unix.CLONE_NEWNET {
			return notNetns("a namespace of another kind, clone flag " + fmt.Sprintf("%#x", typ))
		}
		return nil
	}
	if !errors.Is(err, unix.ENOTTY) {
		return os.NewSyscallError("ioctl NS_GET_NSTYPE", err)
	}
	// Kernels before 4.11 lack NS_GET_NSTYPE; the nsfs name says the kind.
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return err
	}
	if !strings.HasPrefix(link, "net:[") {
		return notNetns("namespace " + link)
	}
	return nil
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	}
	return "a special file"
}

// Fd returns the namespace's file descriptor, valid until Close, or -1
// after Close. It is what netlink.Config.NetNS and setns take.
func (ns *Namespace) Fd() int {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	return ns.fd
}

// ID returns the namespace's identity. It stays valid after Close.
func (ns *Namespace) ID() ID { return ns.id }

// Inode returns the namespace's inode number, the value the kernel reports
// as the namespace's inum (NSB_A_NETNS_INUM) and shows in net:[inode].
func (ns *Namespace) Inode() uint32 { return uint32(ns.id.Ino) }

// Ref returns how the namespace was opened.
func (ns *Namespace) Ref() Ref { return ns.ref }

// String returns the namespace's Ref and inode.
func (ns *Namespace) String() string { return fmt.Sprintf("%s net:[%d]", ns.ref, ns.id.Ino) }

// Cookie returns the namespace's network cookie (SO_NETNS_COOKIE), a 64-bit
// id the kernel never reuses, or 0 if the kernel cannot tell (before 5.14)
// or the namespace cannot be entered. It creates a socket inside the
// namespace on first use and remembers the answer.
func (ns *Namespace) Cookie() uint64 {
	ns.cookieMu.Lock()
	defer ns.cookieMu.Unlock()
	if ns.cookie != 0 {
		return ns.cookie
	}
	var cookie uint64
	err := ns.Do(func() error {
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(s)
		cookie, err = unix.GetsockoptUint64(s, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0
	}
	ns.cookie = cookie
	return cookie
}

// SetCookie records the namespace's network cookie, read from a socket
// the caller created inside it, so that Cookie need not create one. Zero
// (the kernel cannot tell) records nothing.
func (ns *Namespace) SetCookie(cookie uint64) {
	if cookie == 0 {
		return
	}
	ns.cookieMu.Lock()
	defer ns.cookieMu.Unlock()
	ns.cookie = cookie
}

// Close closes the namespace's descriptor. The namespace itself lives on
// while anything else (a name, a process, a socket) holds it.
func (ns *Namespace) Close() error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.fd < 0 {
		return &Error{Op: "close", Namespace: ns.ref.String(), Err: os.ErrClosed}
	}
	err := unix.Close(ns.fd)
	ns.fd = -1
	if err != nil {
		return &Error{Op: "close", Namespace: ns.ref.String(), Err: os.NewSyscallError("close", err)}
	}
	return nil
}
