package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// containerSocketDir is where a container finds the directory of its
// network namespace's filesystem socket, so that its clients dial
// containerSocket, the admin socket's usual path.
const (
	containerSocketDir = "/run/nsbroker"
	containerSocket    = containerSocketDir + "/nsbroker.sock"
)

// maxConfig bounds the bundle's config.json.
const maxConfig = 16 << 20

// mountSocket runs at createContainer, in the container's namespaces,
// before its root becomes its "/": the runtime's root is still there, so
// the daemon's socket directory and the bundle are reached by their host
// paths. It checks that the hook runs in the network namespace that
// createRuntime attached, and bind-mounts that namespace's socket
// directory on containerSocketDir inside the container's root.
func mountSocket(opts *options, state *specs.State, stderr io.Writer) error {
	n, err := readNote(opts.stateDir, state.ID)
	if err != nil {
		return err
	}
	own, err := ownNetns()
	if err != nil {
		return err
	}
	if own.Dev != n.Dev || own.Ino != n.Ino {
		return fmt.Errorf("createRuntime saw the container in net:[%d] (dev %d), this hook runs in net:[%d] (dev %d)", n.Ino, n.Dev, own.Ino, own.Dev)
	}
	if n.Name == "" {
		fmt.Fprintf(stderr, "nsbroker-oci-hook: %s shares the runtime's network namespace; no socket mounted\n", state.ID)
		return nil
	}
	if n.Socket == "" {
		return fmt.Errorf("nsbrokerd serves no filesystem socket for %q (file_socket_dir is off, or its log says why)", n.Name)
	}
	if filepath.Base(n.Socket) != filepath.Base(containerSocket) {
		return fmt.Errorf("nsbrokerd's socket for %q is %s; the container would look for %s", n.Name, n.Socket, containerSocket)
	}
	root, err := rootfs(state.Bundle)
	if err != nil {
		return err
	}
	if err := bindDir(filepath.Dir(n.Socket), root, containerSocketDir); err != nil {
		return fmt.Errorf("mounting the socket of %q: %w", n.Name, err)
	}
	return nil
}

// rootfs returns the container's root file system, from the bundle's
// config.json.
func rootfs(bundle string) (string, error) {
	if !filepath.IsAbs(bundle) {
		return "", fmt.Errorf("the container state's bundle %q is not an absolute path", bundle)
	}
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	var spec specs.Spec
	if err := json.NewDecoder(io.LimitReader(f, maxConfig)).Decode(&spec); err != nil {
		return "", fmt.Errorf("%s: %w", f.Name(), err)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return "", fmt.Errorf("%s: no root.path", f.Name())
	}
	if filepath.IsAbs(spec.Root.Path) {
		return spec.Root.Path, nil
	}
	return filepath.Join(bundle, spec.Root.Path), nil
}

// bindDir bind-mounts the directory src on dir inside root, read-only,
// without set-user-id, devices or executables, and with private
// propagation. dir and its parents are made in root where missing, and
// symbolic links in root are resolved as if root were "/", so a link in
// the image cannot point the mount at the host.
func bindDir(src, root, dir string) error {
	srcFd, err := unix.Open(src, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: src, Err: err}
	}
	defer unix.Close(srcFd)
	var srcSt, sockSt unix.Stat_t
	if err := unix.Fstat(srcFd, &srcSt); err != nil {
		return &os.PathError{Op: "stat", Path: src, Err: err}
	}
	sock := filepath.Join(src, filepath.Base(containerSocket))
	if err := unix.Fstatat(srcFd, filepath.Base(sock), &sockSt, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "stat", Path: sock, Err: err}
	}
	if sockSt.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s is not a socket", sock)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(srcFd, &sfs); err != nil {
		return &os.PathError{Op: "statfs", Path: src, Err: err}
	}

	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rootFd)
	target, err := mountPoint(rootFd, dir)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", dir, root, err)
	}
	err = unix.Mount(fdPath(srcFd), fdPath(target), "", unix.MS_BIND, "")
	unix.Close(target)
	if err != nil {
		return fmt.Errorf("bind-mount %s on %s in %s: %w", src, dir, root, err)
	}
	// From here on the mount is undone on failure.
	mounted, err := inRoot(rootFd, dir)
	if err == nil {
		err = finishBind(mounted, srcSt, sfs)
		unix.Close(mounted)
	}
	if err != nil {
		if mounted, rerr := inRoot(rootFd, dir); rerr == nil {
			unix.Unmount(fdPath(mounted), unix.MNT_DETACH)
			unix.Close(mounted)
		}
		return fmt.Errorf("%s in %s: %w", dir, root, err)
	}
	return nil
}

// finishBind checks that mounted, the root of the new mount, is the
// source directory, and makes the mount read-only and private. A bind
// mount takes its flags from the mount it copies, and a remount must keep
// the access time flags (in a user namespace they are locked), so those
// are carried over from the source's.
func finishBind(mounted int, srcSt unix.Stat_t, sfs unix.Statfs_t) error {
	var st unix.Stat_t
	if err := unix.Fstat(mounted, &st); err != nil {
		return err
	}
	if st.Dev != srcSt.Dev || st.Ino != srcSt.Ino {
		return fmt.Errorf("the mount shows inode %d of device %d, not the socket directory's %d of %d", st.Ino, st.Dev, srcSt.Ino, srcSt.Dev)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	for stf, ms := range map[int64]uintptr{unix.ST_NOATIME: unix.MS_NOATIME, unix.ST_NODIRATIME: unix.MS_NODIRATIME, unix.ST_RELATIME: unix.MS_RELATIME} {
		if int64(sfs.Flags)&stf != 0 {
			flags |= ms
		}
	}
	if err := unix.Mount("", fdPath(mounted), "", flags, ""); err != nil {
		return fmt.Errorf("remount read-only: %w", err)
	}
	if err := unix.Mount("", fdPath(mounted), "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make the mount private: %w", err)
	}
	return nil
}

// mountPoint opens dir (an absolute path inside the root rootFd) as an
// O_PATH descriptor, making each missing directory on the way mode 0755.
func mountPoint(rootFd int, dir string) (int, error) {
	parts := strings.Split(strings.Trim(filepath.Clean(dir), "/"), "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fd, err := inRoot(rootFd, p)
		if errors.Is(err, unix.ENOENT) {
			parent := strings.Join(parts[:i], "/")
			if parent == "" {
				parent = "."
			}
			pfd, perr := inRoot(rootFd, parent)
			if perr != nil {
				return -1, perr
			}
			// EEXIST: made meanwhile, or a dangling link (found below).
			if err := unix.Mkdirat(pfd, parts[i], 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(pfd)
				return -1, &os.PathError{Op: "mkdir", Path: "/" + p, Err: err}
			}
			unix.Close(pfd)
			fd, err = inRoot(rootFd, p)
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: "/" + p, Err: err}
		}
		if i == len(parts)-1 {
			return fd, nil
		}
		unix.Close(fd)
	}
	return -1, errors.New("no directory to mount on")
}

// inRoot opens the directory p (relative) inside the root rootFd as an
// O_PATH descriptor, resolving symbolic links and ".." as if rootFd were
// "/" (openat2's RESOLVE_IN_ROOT, Linux 5.6).
func inRoot(rootFd int, p string) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(rootFd, p, how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue // a rename raced the lookup
		}
		return fd, err
	}
}

// fdPath names an open file by its descriptor, for mount(2).
func fdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }
