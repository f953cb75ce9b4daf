package nsmgr

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// target is one watched directory and what has been reported about it.
type target struct {
	dir     string
	wd      int32  // watch on dir, or -1 while dir is missing
	dirID   ID     // identity of the directory wd watches
	anc     int32  // watch on ancDir while dir is missing, or -1
	ancDir  string // nearest existing ancestor of dir
	known   map[string]bool
	pending map[string]bool // entries that are not (yet) a namespace
}

// handle applies one inotify event.
func (w *Watcher) handle(ev rawEvent) {
	switch {
	case ev.mask&unix.IN_Q_OVERFLOW != 0:
		// Events were lost: rescanning every directory recovers them.
		for _, t := range w.targets {
			w.resyncOrFail(t)
		}
		return
	case ev.mask&unix.IN_IGNORED != 0:
		// The kernel dropped the watch (directory gone or unmounted).
		delete(w.refs, ev.wd)
		for _, t := range w.targets {
			if t.wd == ev.wd || t.anc == ev.wd {
				if t.wd == ev.wd {
					t.wd = -1
				}
				if t.anc == ev.wd {
					t.anc = -1
				}
				w.resyncOrFail(t)
			}
		}
		return
	}
	self := ev.mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0
	created := ev.mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0
	for _, t := range w.targets {
		switch ev.wd {
		case t.wd:
			switch {
			case self:
				w.resyncOrFail(t)
			case created:
				if !t.known[ev.name] {
					w.probe(t, ev.name)
				}
			case ev.mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0:
				delete(t.pending, ev.name)
				if t.known[ev.name] {
					delete(t.known, ev.name)
					w.emit(Removed, refIn(t.dir, ev.name), nil)
				}
			}
		case t.anc:
			if self || created && ev.name == nextComponent(t.ancDir, t.dir) {
				w.resyncOrFail(t)
			}
		}
	}
}

// mountsChanged rechecks what a mount can change: entries that were not
// namespaces yet, and which directory a watched path resolves to.
func (w *Watcher) mountsChanged() {
	for _, t := range w.targets {
		id, err := dirID(t.dir)
		if (t.wd < 0) != (err != nil) || t.wd >= 0 && id != t.dirID {
			w.resyncOrFail(t)
			continue
		}
		for name := range t.pending {
			w.probe(t, name)
		}
	}
}

func (w *Watcher) resyncOrFail(t *target) {
	if err := w.resync(t); err != nil {
		w.emit(Failed, Ref{Path: t.dir}, err)
	}
}

// resync makes t watch its directory, or its nearest existing ancestor
// while the directory is missing, and reconciles the reported names with
// what is there. Watches are added before looking, so a change made in
// between is also queued as an event, and handling it twice is harmless.
func (w *Watcher) resync(t *target) error {
	for range 16 {
		if id, err := dirID(t.dir); err == nil {
			wd, err := unix.InotifyAddWatch(w.fd, t.dir, watchMask)
			if isGone(err) {
				continue
			}
			if err != nil {
				return os.NewSyscallError("inotify_add_watch "+t.dir, err)
			}
			w.hold(&t.wd, wd)
			t.dirID = id
			w.release(&t.anc)
			return w.scan(t)
		}
		w.release(&t.wd)
		w.forgetAll(t)
		anc := nearestAncestor(t.dir)
		wd, err := unix.InotifyAddWatch(w.fd, anc, watchMask)
		if isGone(err) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("inotify_add_watch "+anc, err)
		}
		w.hold(&t.anc, wd)
		t.ancDir = anc
		// Done unless the path grew while the watch was being added.
		if nearestAncestor(t.dir) == anc && !isDir(t.dir) {
			return nil
		}
	}
	return fmt.Errorf("%s keeps changing while being watched", t.dir)
}

// scan reconciles t's reported names with the directory's entries.
func (w *Watcher) scan(t *target) error {
	entries, err := os.ReadDir(t.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // deleted meanwhile: IN_DELETE_SELF is on its way
	}
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(entries))
	for _, e := range entries {
		present[e.Name()] = true
	}
	for name := range t.known {
		if !present[name] {
			delete(t.known, name)
			w.emit(Removed, refIn(t.dir, name), nil)
		}
	}
	for name := range t.pending {
		if !present[name] {
			delete(t.pending, name)
		}
	}
	for _, e := range entries {
		if !t.known[e.Name()] {
			w.probe(t, e.Name())
		}
	}
	return nil
}

// probe reports name Added if it is a network namespace now, and
// otherwise remembers it for the next mount change.
func (w *Watcher) probe(t *target, name string) {
	if !isNetns(filepath.Join(t.dir, name)) {
		t.pending[name] = true
		return
	}
	delete(t.pending, name)
	t.known[name] = true
	w.emit(Added, refIn(t.dir, name), nil)
}

// forgetAll reports every known name of a vanished directory Removed.
func (w *Watcher) forgetAll(t *target) {
	for name := range t.known {
		w.emit(Removed, refIn(t.dir, name), nil)
	}
	clear(t.known)
	clear(t.pending)
}

// hold points a target's watch slot at wd, counting holders because
// inotify gives every watch of one inode the same descriptor.
func (w *Watcher) hold(slot *int32, wd int) {
	if *slot == int32(wd) {
		return
	}
	w.release(slot)
	*slot = int32(wd)
	w.refs[int32(wd)]++
}

// release empties a watch slot and removes the watch once nothing holds
// it.
func (w *Watcher) release(slot *int32) {
	wd := *slot
	if wd < 0 {
		return
	}
	*slot = -1
	if w.refs[wd]--; w.refs[wd] > 0 {
		return
	}
	delete(w.refs, wd)
	// EINVAL: the kernel already dropped it; IN_IGNORED will follow.
	unix.InotifyRmWatch(w.fd, uint32(wd))
}

// isGone reports errors that mean the path vanished under us.
func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

func dirID(path string) (ID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ID{}, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return ID{}, unix.ENOTDIR
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

func isDir(path string) bool {
	_, err := dirID(path)
	return err == nil
}

// nearestAncestor returns the deepest existing directory above dir.
func nearestAncestor(dir string) string {
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if p == "/" || isDir(p) {
			return p
		}
	}
}

// nextComponent returns the name under anc that leads towards dir.
func nextComponent(anc, dir string) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(dir, anc), "/")
	first, _, _ := strings.Cut(rest, "/")
	return first
}
