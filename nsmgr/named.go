package nsmgr

import (
	"errors"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// NewNamed creates a network namespace and names it, as ip netns add does:
// it makes NetnsDir a shared mount point if needed (so that deleting a name
// propagates to other mount namespaces), creates the empty file
// NetnsDir/name, unshares a new network namespace on a locked thread and
// bind-mounts the thread's namespace onto the file. The result interoperates
// with iproute2 in both directions. The returned Namespace is open; closing
// it does not delete the name (DeleteNamed does).
func NewNamed(name string) (*Namespace, error) {
	ref := Ref{Name: name}
	fail := func(err error) (*Namespace, error) {
		return nil, &Error{Op: "create", Namespace: ref.String(), Err: err}
	}
	if err := validName(name); err != nil {
		return fail(err)
	}
	if err := prepareNetnsDir(); err != nil {
		return fail(err)
	}
	path := filepath.Join(NetnsDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return fail(err)
	}
	f.Close()

	fd := -1
	err = onFreshThread(ref.String(), func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return os.NewSyscallError("unshare", err)
		}
		self := threadNetnsPath()
		var err error
		if fd, err = unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return os.NewSyscallError("open", err)
		}
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return os.NewSyscallError("mount", err)
		}
		return nil
	}, func() error { return nil })
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		unix.Unmount(path, unix.MNT_DETACH) // in case only the restore failed
		os.Remove(path)
		return fail(err)
	}
	return newNamespace(fd, ref)
}

// prepareNetnsDir creates NetnsDir and makes it a shared mount point, the
// way iproute2 does and under the same flock, so concurrent ip netns add
// and NewNamed do not stack bind mounts.
func prepareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	lock, err := unix.Open(NetnsDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("open "+NetnsDir, err)
	}
	defer unix.Close(lock)
	if err := flock(lock, unix.LOCK_EX); err != nil {
		return os.NewSyscallError("flock "+NetnsDir, err)
	}
	defer flock(lock, unix.LOCK_UN)
	madeMount := false
	for {
		err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		// EINVAL: NetnsDir is not a mount point yet; make it one once.
		if !errors.Is(err, unix.EINVAL) || madeMount {
			return os.NewSyscallError("make "+NetnsDir+" shared", err)
		}
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return os.NewSyscallError("bind "+NetnsDir, err)
		}
		madeMount = true
	}
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// DeleteNamed removes a name made by NewNamed or ip netns add, as ip netns
// del does: it detaches the bind mount and unlinks the file. The namespace
// itself lives on while anything else holds it. A missing name gives an
// error matching fs.ErrNotExist.
func DeleteNamed(name string) error {
	ref := Ref{Name: name}
	if err := validName(name); err != nil {
		return &Error{Op: "delete", Namespace: ref.String(), Err: err}
	}
	path := filepath.Join(NetnsDir, name)
	// EINVAL means nothing is mounted there: still unlink a stale file.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return &Error{Op: "delete", Namespace: ref.String(), Err: os.NewSyscallError("umount", err)}
	}
	if err := os.Remove(path); err != nil {
		return &Error{Op: "delete", Namespace: ref.String(), Err: err}
	}
	return nil
}
