package daemon

import (
	"log/slog"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationLocalSocketsOneVisit: a namespace gets its abstract and
// its filesystem socket in one visit, each of them inside it; a visit that
// fails leaves the namespace with neither, each saying why.
func TestIntegrationLocalSocketsOneVisit(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	ls := newLocalSockets("@"+name, t.TempDir(), slog.New(slog.DiscardHandler))
	visits := 0
	ls.enter = func(_ broker.Info, fn func() error) error { visits++; return ns.Do(fn) }
	t.Cleanup(func() { ls.stopAll(false) })

	in := broker.Info{Name: name, ID: ns.ID(), Ref: ns.Ref()}
	ls.ensure(in)
	if visits != 1 {
		t.Errorf("visits to the namespace: got %d, want 1", visits)
	}
	ls.mu.Lock()
	s := ls.open[name]
	ls.mu.Unlock()
	if s == nil || s.abstract == nil || s.file == nil || s.state != nsbrokerv1.LocalSocket_STATE_OPEN {
		t.Fatalf("local socket: got %+v, want both listeners, state OPEN", s)
	}
	for _, ln := range []interface{ File() (*os.File, error) }{s.abstract, s.file} {
		f, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		cookie, err := unix.GetsockoptUint64(int(f.Fd()), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		f.Close()
		if err != nil || cookie != ns.Cookie() {
			t.Errorf("listener's namespace cookie: got %d, %v; want the namespace's %d", cookie, err, ns.Cookie())
		}
	}

	other, otherName := newNamespace(t)
	ls.enter = func(broker.Info, func() error) error { visits++; return os.ErrPermission }
	ls.ensure(broker.Info{Name: otherName, ID: other.ID(), Ref: other.Ref()})
	ls.mu.Lock()
	s = ls.open[otherName]
	ls.mu.Unlock()
	if s == nil || s.abstract != nil || s.file != nil || s.state != nsbrokerv1.LocalSocket_STATE_FAILED || s.reason == "" {
		t.Errorf("local socket of a namespace that cannot be entered: got %+v, want no listener, state FAILED with a reason", s)
	}
}
