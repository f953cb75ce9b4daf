package server

import (
	"sync"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// LocalSocketFunc reports the local sockets of the namespace in: whether
// the daemon holds its abstract socket, and its filesystem socket.
type LocalSocketFunc func(in broker.Info) *nsbrokerv1.LocalSocket

// localWatchers tells WatchNamespaces streams which namespaces' local
// sockets changed. Each watcher keeps a set of names, so a slow one
// holds at most one entry per attached namespace and never misses the
// latest state.
type localWatchers struct {
	mu  sync.Mutex // guards set
	set map[*localWatcher]struct{}
}

type localWatcher struct {
	wake  chan struct{} // capacity 1: names has entries
	mu    sync.Mutex    // guards names
	names map[string]struct{}
}

func (w *localWatchers) add() *localWatcher {
	lw := &localWatcher{wake: make(chan struct{}, 1), names: make(map[string]struct{})}
	w.mu.Lock()
	if w.set == nil {
		w.set = make(map[*localWatcher]struct{})
	}
	w.set[lw] = struct{}{}
	w.mu.Unlock()
	return lw
}

func (w *localWatchers) remove(lw *localWatcher) {
	w.mu.Lock()
	delete(w.set, lw)
	w.mu.Unlock()
}

func (w *localWatchers) changed(name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for lw := range w.set {
		lw.mu.Lock()
		lw.names[name] = struct{}{}
		lw.mu.Unlock()
		select {
		case lw.wake <- struct{}{}:
		default:
		}
	}
}

// take returns the names that changed since the last take.
func (lw *localWatcher) take() []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	out := make([]string, 0, len(lw.names))
	for n := range lw.names {
		out = append(out, n)
	}
	clear(lw.names)
	return out
}

// LocalSocketChanged tells the WatchNamespaces streams that the local
// socket of the namespace attached as name changed state: they send a
// KIND_LOCAL_SOCKET event with its state as Config.LocalSocket reports it.
func (s *Server) LocalSocketChanged(name string) {
	s.localWatch.changed(name)
}

// namespace is the Namespace message for in, with its local sockets.
func (s *Server) namespace(in broker.Info) *nsbrokerv1.Namespace {
	ns := namespaceToProto(in)
	if s.localSocket != nil {
		ns.LocalSocket = s.localSocket(in)
	}
	return ns
}

// namespaceEvent is the NamespaceEvent message for ev.
func (s *Server) namespaceEvent(ev broker.NamespaceEvent) *nsbrokerv1.NamespaceEvent {
	out := namespaceEventToProto(ev)
	out.Namespace = s.namespace(ev.Info)
	return out
}
