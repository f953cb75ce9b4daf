package nsmgr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// WatchOp says what a WatchEvent reports.
type WatchOp int

const (
	// Added: a network namespace appeared under a watched directory, or
	// was there when the watch began.
	Added WatchOp = iota + 1
	// Removed: a name reported Added was unlinked or renamed away, or its
	// directory disappeared.
	Removed
	// Failed: the watcher could not watch a directory (Ref.Path) and may
	// miss changes in it; Err says why. It retries on the next change it
	// sees there.
	Failed
)

// String returns "added", "removed" or "failed".
func (op WatchOp) String() string {
	switch op {
	case Added:
		return "added"
	case Removed:
		return "removed"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("WatchOp(%d)", int(op))
}

// WatchEvent is one change a Watcher reports.
type WatchEvent struct {
	Op WatchOp
	// Ref names the namespace: a Name for entries of NetnsDir, a Path
	// elsewhere.
	Ref Ref
	// Err is set for Failed only.
	Err error
}

// String returns the event as "added name:x".
func (ev WatchEvent) String() string {
	if ev.Err != nil {
		return fmt.Sprintf("%s %s: %v", ev.Op, ev.Ref, ev.Err)
	}
	return fmt.Sprintf("%s %s", ev.Op, ev.Ref)
}

// Watcher reports network namespaces appearing in and disappearing from a
// set of directories. It first reports every namespace already present as
// Added, then the changes, so a caller needs no separate Discover.
//
// A name counts as added once it is a network namespace, not when its file
// is created: ip netns add and NewNamed create an empty file and only then
// bind-mount the namespace onto it, and the watcher waits for that mount
// (it polls /proc/self/mountinfo, which signals every mount) before
// reporting the name. A directory that does not exist yet is handled by
// watching its nearest existing ancestor until it appears; a directory that
// disappears reports its names Removed. Names are reported removed when
// unlinked, as ip netns del and DeleteNamed do, not when merely unmounted.
type Watcher struct {
	fd        int      // the inotify descriptor, for adding watches
	inotify   *os.File // fd, read through the runtime poller
	mountinfo *os.File // /proc/self/mountinfo, polled for mount changes

	events   chan WatchEvent
	raw      chan rawBatch
	mounts   chan struct{}
	done     chan struct{} // closed by Close
	loopDone chan struct{} // closed when loop returns
	readers  sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	// Owned by loop (and by NewWatcher before loop starts).
	targets []*target
	refs    map[int32]int // watch descriptor -> number of target slots holding it
	queue   []WatchEvent  // events not yet delivered
}

// rawBatch is what one read of the inotify descriptor returned.
type rawBatch struct {
	events []rawEvent
	err    error
}

type rawEvent struct {
	wd   int32
	mask uint32
	name string
}

// watchMask is used for every watch, so re-adding a watch on an inode that
// two targets share never changes what it reports.
const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// NewWatcher starts watching dirs (DefaultDirs if none). A directory that
// does not exist yet is fine; a path that exists and is not a directory is
// an error. Close the Watcher to release it.
func NewWatcher(dirs ...string) (*Watcher, error) {
	dirs, err := cleanDirs(dirs)
	if err != nil {
		return nil, &Error{Op: "watch", Err: err}
	}
	for _, d := range dirs {
		if st, err := os.Stat(d); err == nil && !st.IsDir() {
			return nil, &Error{Op: "watch", Namespace: "path:" + d, Err: syscall.ENOTDIR}
		}
	}
	w := &Watcher{
		events:   make(chan WatchEvent, 64),
		raw:      make(chan rawBatch),
		mounts:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
		refs:     make(map[int32]int),
	}
	if err := w.open(); err != nil {
		w.closeFiles()
		return nil, &Error{Op: "watch", Err: err}
	}
	for _, d := range dirs {
		t := &target{dir: d, wd: -1, anc: -1, known: map[string]bool{}, pending: map[string]bool{}}
		w.targets = append(w.targets, t)
		if err := w.resync(t); err != nil {
			w.closeFiles()
			return nil, &Error{Op: "watch", Namespace: "path:" + d, Err: err}
		}
	}
	rc, err := w.mountinfo.SyscallConn()
	if err != nil {
		w.closeFiles()
		return nil, &Error{Op: "watch", Err: err}
	}
	w.readers.Add(2)
	go w.readInotify()
	go w.watchMounts(rc)
	go w.loop()
	return w, nil
}

// open creates the inotify descriptor and opens mountinfo, both pollable.
func (w *Watcher) open() error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return os.NewSyscallError("inotify_init1", err)
	}
	w.fd = fd
	w.inotify = os.NewFile(uintptr(fd), "inotify")
	mfd, err := unix.Open("/proc/self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return os.NewSyscallError("open /proc/self/mountinfo", err)
	}
	w.mountinfo = os.NewFile(uintptr(mfd), "/proc/self/mountinfo")
	// Only files the runtime poller manages accept deadlines; both must be.
	for _, f := range []*os.File{w.inotify, w.mountinfo} {
		if err := f.SetReadDeadline(time.Time{}); err != nil {
			return fmt.Errorf("%s cannot be polled: %w", f.Name(), err)
		}
	}
	return nil
}

// Events returns the channel of events. It is closed by Close.
func (w *Watcher) Events() <-chan WatchEvent { return w.events }

// Close stops the watcher, releases its descriptors and closes the Events
// channel; undelivered events are dropped.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		<-w.loopDone // the loop uses w.fd; it must stop before fd closes
		w.closeErr = w.closeFiles()
		w.readers.Wait()
		close(w.events)
	})
	return w.closeErr
}

func (w *Watcher) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{w.inotify, w.mountinfo} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &Error{Op: "watch", Err: err}
	}
	return nil
}

// readInotify reads and decodes inotify events until Close closes the
// descriptor, which unblocks the read.
func (w *Watcher) readInotify() {
	defer w.readers.Done()
	buf := make([]byte, 64<<10)
	for {
		n, err := w.inotify.Read(buf)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		b := rawBatch{err: err}
		if err == nil {
			b.events = decodeInotify(buf[:n])
		}
		select {
		case w.raw <- b:
		case <-w.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func decodeInotify(buf []byte) []rawEvent {
	var evs []rawEvent
	for len(buf) >= unix.SizeofInotifyEvent {
		nameLen := int(binary.NativeEndian.Uint32(buf[12:16]))
		end := unix.SizeofInotifyEvent + nameLen
		if end > len(buf) {
			break
		}
		name := buf[unix.SizeofInotifyEvent:end]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		evs = append(evs, rawEvent{
			wd:   int32(binary.NativeEndian.Uint32(buf[0:4])),
			mask: binary.NativeEndian.Uint32(buf[4:8]),
			name: string(name),
		})
		buf = buf[end:]
	}
	return evs
}

// watchMounts signals w.mounts whenever the mount table may have changed.
// Reading mountinfo never blocks, so the wait goes through the raw poller
// callback: the runtime wakes it on each mount-table wakeup. The kernel
// reports a change once per poll and the runtime's epoll consumes it, so
// every wakeup counts as a possible change; a spurious one costs a recheck.
func (w *Watcher) watchMounts(rc syscall.RawConn) {
	defer w.readers.Done()
	rc.Read(func(uintptr) bool {
		select {
		case w.mounts <- struct{}{}:
		default:
		}
		return false // keep waiting until Close
	})
}

// loop owns the watch state: it applies inotify and mount changes and
// delivers queued events without ever blocking on a slow reader.
func (w *Watcher) loop() {
	defer close(w.loopDone)
	for {
		var out chan<- WatchEvent
		var next WatchEvent
		if len(w.queue) > 0 {
			out, next = w.events, w.queue[0]
		}
		select {
		case out <- next:
			w.queue[0] = WatchEvent{}
			w.queue = w.queue[1:]
		case b := <-w.raw:
			if b.err != nil {
				for _, t := range w.targets {
					w.emit(Failed, Ref{Path: t.dir}, fmt.Errorf("reading inotify: %w", b.err))
				}
			}
			for _, ev := range b.events {
				w.handle(ev)
			}
		case <-w.mounts:
			w.mountsChanged()
		case <-w.done:
			return
		}
	}
}

func (w *Watcher) emit(op WatchOp, ref Ref, err error) {
	w.queue = append(w.queue, WatchEvent{Op: op, Ref: ref, Err: err})
}
