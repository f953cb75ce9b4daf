package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

// labelled tags what its listener accepts with the listener's label, as
// a tenant listener tags its connections with their tenant.
type labelled struct {
	net.Listener
	label string
	// refuse closes and skips each connection while set.
	refuse atomic.Bool
}

type labelledConn struct {
	net.Conn
	label string
}

func (l *labelled) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.refuse.Load() {
			c.Close()
			continue
		}
		return labelledConn{c, l.label}, nil
	}
}

// acceptorListen opens an abstract unix socket named after the test and i.
func acceptorListen(t *testing.T, i int) (*net.UnixListener, string) {
	t.Helper()
	addr := fmt.Sprintf("@nsb-acceptor-test-%d-%s-%d", os.Getpid(), t.Name(), i)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, addr
}

func newTestAcceptor(t *testing.T) *Acceptor {
	t.Helper()
	a, err := NewAcceptor()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// acceptAsync runs one Accept and delivers what it returned.
func acceptAsync(a *Acceptor) <-chan net.Conn {
	out := make(chan net.Conn, 1)
	go func() {
		c, err := a.Accept()
		if err != nil {
			close(out)
			return
		}
		out <- c
	}()
	return out
}

func dialUnix(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantLabel(t *testing.T, got <-chan net.Conn, label string) {
	t.Helper()
	select {
	case c, ok := <-got:
		if !ok {
			t.Fatalf("Accept failed, want a connection of %s", label)
		}
		if lc, isLabelled := c.(labelledConn); !isLabelled || lc.label != label {
			t.Fatalf("accepted %#v, want a connection through %s's chain", c, label)
		}
		c.Close()
	case <-time.After(waitLimit):
		t.Fatalf("no connection of %s accepted", label)
	}
}

// TestAcceptorOneLoopForAll: one Accept loop serves a thousand listening
// sockets, each connection through its own listener's chain, and the
// sockets cost no goroutine.
func TestAcceptorOneLoopForAll(t *testing.T) {
	a := newTestAcceptor(t)
	const n = 1000
	before := runtime.NumGoroutine()
	addrs := make([]string, n)
	for i := range n {
		ln, addr := acceptorListen(t, i)
		addrs[i] = addr
		if err := a.Add(ln, func(l net.Listener) net.Listener { return &labelled{Listener: l, label: addr} }); err != nil {
			t.Fatal(err)
		}
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("goroutines: %d before adding %d listeners, %d after; want none more", before, n, after)
	}
	for _, i := range []int{0, n / 2, n - 1, 7} {
		got := acceptAsync(a)
		dialUnix(t, addrs[i])
		wantLabel(t, got, addrs[i])
	}
}

// TestAcceptorRemove: a listener removed is no longer accepted from, and
// the others still are.
func TestAcceptorRemove(t *testing.T) {
	a := newTestAcceptor(t)
	ln1, addr1 := acceptorListen(t, 1)
	ln2, addr2 := acceptorListen(t, 2)
	for _, m := range []struct {
		ln   *net.UnixListener
		addr string
	}{{ln1, addr1}, {ln2, addr2}} {
		if err := a.Add(m.ln, func(l net.Listener) net.Listener { return &labelled{Listener: l, label: m.addr} }); err != nil {
			t.Fatal(err)
		}
	}
	a.Remove(ln1)
	dialUnix(t, addr1) // waits in ln1's backlog
	got := acceptAsync(a)
	time.Sleep(50 * time.Millisecond)
	dialUnix(t, addr2)
	wantLabel(t, got, addr2)
	if err := a.Add(ln1, func(l net.Listener) net.Listener { return &labelled{Listener: l, label: addr1} }); err != nil {
		t.Fatalf("adding a removed listener again: %v", err)
	}
	wantLabel(t, acceptAsync(a), addr1) // the one that waited
}

// TestAcceptorChainRefuses: a connection the chain refuses is not
// returned, and Accept goes on to the next.
func TestAcceptorChainRefuses(t *testing.T) {
	a := newTestAcceptor(t)
	ln, addr := acceptorListen(t, 0)
	chain := &labelled{label: addr}
	chain.refuse.Store(true)
	if err := a.Add(ln, func(l net.Listener) net.Listener { chain.Listener = l; return chain }); err != nil {
		t.Fatal(err)
	}
	got := acceptAsync(a)
	refused := dialUnix(t, addr)
	refused.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := refused.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the refused connection: read %v, want it closed", err)
	}
	select {
	case c := <-got:
		t.Fatalf("Accept returned %v for a refused connection", c)
	default:
	}
	chain.refuse.Store(false)
	dialUnix(t, addr)
	wantLabel(t, got, addr)
}

// TestAcceptorClose: Close ends an Accept in progress with net.ErrClosed
// and closes the listeners.
func TestAcceptorClose(t *testing.T) {
	a := newTestAcceptor(t)
	ln, addr := acceptorListen(t, 0)
	if err := a.Add(ln, func(l net.Listener) net.Listener { return l }); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.Accept()
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Accept still waiting after Close")
	}
	if c, err := net.Dial("unix", addr); err == nil {
		c.Close()
		t.Fatal("the listener still accepts connections after the Acceptor's Close")
	}
	if err := a.Add(ln, func(l net.Listener) net.Listener { return l }); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Add after Close: %v, want net.ErrClosed", err)
	}
}

// TestAcceptorShutOut: a tenant listener whose tenant is shut out has its
// connection closed and is taken out of the set until the shut-out ends;
// the connections that come meanwhile wait in its backlog and are
// accepted then.
func TestAcceptorShutOut(t *testing.T) {
	testenv.RequireRoot(t) // a tenant listener reads the connection's namespace (SIOCGSKNS)
	a := newTestAcceptor(t)
	ln, addr := acceptorListen(t, 0)
	const shutOut = 300 * time.Millisecond
	var until atomic.Int64 // unix nanoseconds
	gate := func(tenantKey) time.Duration { return time.Until(time.Unix(0, until.Load())) }
	if err := a.Add(ln, func(l net.Listener) net.Listener {
		tl := &tenantListener{Listener: l, namespace: "red", gate: gate, done: make(chan struct{})}
		return tl
	}); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(shutOut)
	until.Store(end.UnixNano())
	got := acceptAsync(a)
	first := dialUnix(t, addr)
	first.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := first.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the connection of a shut-out tenant: read %v, want it closed", err)
	}
	dialUnix(t, addr) // waits in the backlog
	select {
	case c, ok := <-got:
		if ok && time.Now().Before(end) {
			t.Fatalf("accepted %v while the tenant is shut out", c.RemoteAddr())
		}
		if !ok {
			t.Fatal("Accept failed")
		}
	case <-time.After(waitLimit):
		t.Fatal("the connection that waited was not accepted after the shut-out")
	}
}
