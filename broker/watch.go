package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/nsbroker/nsbroker/nsmgr"
)

// watchQueueLen bounds a namespace watcher's backlog; past it the watcher
// is cut off with ErrWatchOverflow rather than growing without limit.
const watchQueueLen = 4096

// nsWatcher is one Watch call.
type nsWatcher struct {
	keep   func(Info) bool // nil: every namespace
	out    chan NamespaceEvent
	notify chan struct{}
	ctx    context.Context

	mu    sync.Mutex // guards queue and end
	queue []NamespaceEvent
	end   error
}

func (w *nsWatcher) push(ev NamespaceEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.end != nil || (w.keep != nil && !w.keep(ev.Info)) {
		return
	}
	if len(w.queue) >= watchQueueLen {
		w.end = ErrWatchOverflow
	} else {
		w.queue = append(w.queue, ev)
	}
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *nsWatcher) finish(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.end == nil {
		w.end = err
	}
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *nsWatcher) pump(done func()) {
	defer close(w.out)
	defer done()
	for {
		w.mu.Lock()
		var ev NamespaceEvent
		have := len(w.queue) > 0
		if have {
			ev, w.queue = w.queue[0], w.queue[1:]
		}
		end := w.end
		w.mu.Unlock()
		if !have {
			if end != nil {
				return
			}
			select {
			case <-w.notify:
				continue
			case <-w.ctx.Done():
				return
			}
		}
		select {
		case w.out <- ev:
		case <-w.ctx.Done():
			return
		}
	}
}

// Watch reports every attached namespace (as NamespaceAttached), then
// every change, until ctx is cancelled. The channel is closed at the end.
func (b *Broker) Watch(ctx context.Context) (<-chan NamespaceEvent, error) {
	return b.WatchOnly(ctx, nil)
}

// WatchOnly is Watch for the namespaces keep reports true for (nil: all);
// the others' events are never queued, so a watcher that falls behind
// holds only what it watches.
func (b *Broker) WatchOnly(ctx context.Context, keep func(Info) bool) (<-chan NamespaceEvent, error) {
	w := &nsWatcher{keep: keep, out: make(chan NamespaceEvent), notify: make(chan struct{}, 1), ctx: ctx}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, opError("watch", "", ErrClosed)
	}
	// The snapshot is queued under the same lock as every later event, so
	// it comes first and nothing is reported twice.
	for _, c := range b.byName {
		if c.announced {
			w.push(NamespaceEvent{Kind: NamespaceAttached, Info: c.info()})
		}
	}
	b.watchers[w] = struct{}{}
	b.mu.Unlock()
	go w.pump(func() {
		b.mu.Lock()
		delete(b.watchers, w)
		b.mu.Unlock()
	})
	return w.out, nil
}

// notify reports a change of an announced namespace to the watchers.
func (b *Broker) notify(kind NamespaceEventKind, c *nsConn, err error) {
	in := c.info()
	b.mu.Lock()
	defer b.mu.Unlock()
	if c.announced {
		b.lockedNotify(kind, in, err)
	}
}

func (b *Broker) lockedNotify(kind NamespaceEventKind, in Info, err error) {
	for w := range b.watchers {
		w.push(NamespaceEvent{Kind: kind, Info: in, Err: err})
	}
}

// dirWatch follows one directory of namespace files for the namespaces
// attached from it.
type dirWatch struct {
	w    *nsmgr.Watcher
	refs int
}

// lifetimeSource says how the broker learns that a namespace is gone:
// through the exit of a process, or the removal of a file in a directory.
func lifetimeSource(ref nsmgr.Ref) (pid int, dir, file string) {
	if pid := ref.Process(); pid != 0 {
		return pid, "", ""
	}
	if ref.Name != "" {
		return 0, nsmgr.NetnsDir, ref.Name
	}
	path := filepath.Clean(ref.Path)
	return 0, filepath.Dir(path), filepath.Base(path)
}

// watchLifetime arranges for c to be detached with ErrNamespaceGone when
// its namespace disappears.
func (b *Broker) watchLifetime(c *nsConn) error {
	pid, dir, file := lifetimeSource(c.ref)
	if pid != 0 {
		ctx, cancel := context.WithCancel(context.Background())
		exited, err := nsmgr.WatchPID(ctx, pid)
		if err != nil {
			cancel()
			return fmt.Errorf("watch process %d: %w", pid, err)
		}
		c.stopWatch = cancel
		go func() {
			select {
			case <-exited:
				b.remove(c, fmt.Errorf("%w: process %d exited", ErrNamespaceGone, pid))
			case <-ctx.Done():
			}
		}()
		// The pid may have exited, and been reused, before the watch began.
		if !sameNamespace(fmt.Sprintf("/proc/%d/ns/net", pid), c.ns) {
			go b.remove(c, fmt.Errorf("%w: process %d exited", ErrNamespaceGone, pid))
		}
		return nil
	}

	b.mu.Lock()
	d, ok := b.dirWatches[dir]
	if !ok {
		w, err := nsmgr.NewWatcher(dir)
		if err != nil {
			b.mu.Unlock()
			return fmt.Errorf("watch %s: %w", dir, err)
		}
		d = &dirWatch{w: w}
		b.dirWatches[dir] = d
		go b.followDir(dir, w)
	}
	d.refs++
	b.mu.Unlock()
	c.stopWatch = func() { b.unwatchDir(dir) }

	// The file may have gone before the watch began.
	path := filepath.Join(dir, file)
	if !sameNamespace(path, c.ns) {
		go b.remove(c, fmt.Errorf("%w: %s no longer names it", ErrNamespaceGone, path))
	}
	return nil
}

func (b *Broker) unwatchDir(dir string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.dirWatches[dir]
	if !ok {
		return
	}
	if d.refs--; d.refs == 0 {
		delete(b.dirWatches, dir)
		d.w.Close()
	}
}

// followDir detaches the namespaces whose files are removed from dir.
func (b *Broker) followDir(dir string, w *nsmgr.Watcher) {
	for ev := range w.Events() {
		if ev.Op != nsmgr.Removed {
			continue
		}
		b.mu.Lock()
		var gone []*nsConn
		for _, c := range b.byName {
			_, cdir, file := lifetimeSource(c.ref)
			if cdir == dir && file == eventFile(ev.Ref) && !sameNamespace(filepath.Join(dir, file), c.ns) {
				gone = append(gone, c)
			}
		}
		b.mu.Unlock()
		for _, c := range gone {
			b.remove(c, fmt.Errorf("%w: %s removed", ErrNamespaceGone, filepath.Join(dir, eventFile(ev.Ref))))
		}
	}
}

func eventFile(ref nsmgr.Ref) string {
	if ref.Name != "" {
		return ref.Name
	}
	return filepath.Base(ref.Path)
}

// sameNamespace reports whether path still names the namespace ns.
func sameNamespace(path string, ns *nsmgr.Namespace) bool {
	other, err := nsmgr.Open(nsmgr.Ref{Path: path})
	if err != nil {
		return false
	}
	defer other.Close()
	return other.ID() == ns.ID()
}
