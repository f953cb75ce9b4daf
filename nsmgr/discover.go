package nsmgr

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DefaultDirs are the directories Discover and NewWatcher look in when
// given none: iproute2's named namespaces and Docker's.
var DefaultDirs = []string{NetnsDir, "/var/run/docker/netns"}

// Discover lists the network namespaces in dirs (DefaultDirs if none), in
// directory order and then by name. Entries of NetnsDir are returned as
// names, others as paths. A missing directory is skipped; entries that are
// not network namespaces (a name being created, a stale file) are left out.
func Discover(dirs ...string) ([]Ref, error) {
	dirs, err := cleanDirs(dirs)
	if err != nil {
		return nil, err
	}
	var refs []Ref
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, &Error{Op: "discover", Namespace: "path:" + dir, Err: err}
		}
		for _, e := range entries {
			if isNetns(filepath.Join(dir, e.Name())) {
				refs = append(refs, refIn(dir, e.Name()))
			}
		}
	}
	return refs, nil
}

// cleanDirs applies the default, makes dirs absolute and drops duplicates.
func cleanDirs(dirs []string) ([]string, error) {
	if len(dirs) == 0 {
		dirs = DefaultDirs
	}
	seen := make(map[string]bool)
	var out []string
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		if !seen[abs] {
			seen[abs] = true
			out = append(out, abs)
		}
	}
	return out, nil
}

// isNetns reports whether path is a network namespace now.
func isNetns(path string) bool {
	fd, err := openNetns(path)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
