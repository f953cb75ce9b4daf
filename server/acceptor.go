package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An Acceptor serves the listening sockets of many namespaces through one
// net.Listener, so that one grpc.Server.Serve, on one goroutine, accepts
// for all of them. A listener served on its own costs a goroutine parked
// in accept(2), with its stack, and the server's state for each Serve;
// with thousands of namespaces, each with two local sockets, that was
// most of what a namespace cost the daemon.
//
// The listening descriptors are in one epoll set, itself waited on
// through the runtime's poller. When one is ready, the acceptor accepts a
// connection from it and hands that to the listener's own chain of
// wrappers (NamespaceListener and what it wraps) as if the chain had
// accepted it, so each connection is checked and tagged as it would be on
// a listener served alone. A tenant that is shut out (Budget.Gate) has
// its listening sockets taken out of the set until the shut-out ends: its
// connections wait in the backlog, and past it the kernel turns them
// away, at no cost to the daemon.
type Acceptor struct {
	ep  *os.File // the epoll set, in the runtime's poller
	fd  int      // its descriptor (ep.Fd would make it blocking)
	raw syscall.RawConn

	mu      sync.Mutex
	members map[int32]*member           // by registration number
	byLn    map[*net.UnixListener]int32 // registration numbers, by listener
	next    int32
	ready   []int32 // members with connections waiting, oldest first
	closed  bool
}

// member is one listening socket of an Acceptor.
type member struct {
	ln    *net.UnixListener
	fd    int
	fed   *fedListener
	chain net.Listener // what wraps fed: accept goes through it
	out   bool         // taken out of the set while its tenant is shut out
}

// NewAcceptor returns an Acceptor with no listener.
func NewAcceptor() (*Acceptor, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(fd), "epoll")
	raw, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &Acceptor{ep: ep, fd: fd, raw: raw,
		members: make(map[int32]*member), byLn: make(map[*net.UnixListener]int32)}, nil
}

// Add serves ln through the Acceptor: wrap is given a listener standing
// for ln (Accept returns the connection the Acceptor took from ln) and
// returns the chain a connection goes through, as it would wrap ln served
// alone. It is called once, and its result is closed when the Acceptor
// is. Remove takes ln out again.
func (a *Acceptor) Add(ln *net.UnixListener, wrap func(net.Listener) net.Listener) error {
	sc, err := ln.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	if err := sc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return err
	}
	fed := &fedListener{ln: ln}
	m := &member{ln: ln, fd: fd, fed: fed, chain: wrap(fed)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return net.ErrClosed
	}
	if _, ok := a.byLn[ln]; ok {
		return fmt.Errorf("listener %v added twice", ln.Addr())
	}
	a.next++
	id := a.next
	if err := unix.EpollCtl(a.epfd(), unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: id}); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	a.members[id], a.byLn[ln] = m, id
	return nil
}

// Remove stops serving ln; the caller closes it. Its connections are not
// affected.
func (a *Acceptor) Remove(ln *net.UnixListener) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.byLn[ln]
	if !ok {
		return
	}
	a.lockedRemove(id)
}

func (a *Acceptor) lockedRemove(id int32) {
	m := a.members[id]
	if !m.out {
		// Before ln is closed: a registration outlives the descriptor
		// while a duplicate of it is open (one handed to a successor).
		unix.EpollCtl(a.epfd(), unix.EPOLL_CTL_DEL, m.fd, nil)
	}
	delete(a.members, id)
	delete(a.byLn, m.ln)
}

// epfd is the epoll set's descriptor, for a.mu's holder: Close, which
// closes it, takes a.mu first.
func (a *Acceptor) epfd() int { return a.fd }

// Accept returns the next connection of any listener, as its chain
// returns it. A failure to accept that is not the connection's (out of
// descriptors, or of memory) is returned as a temporary error: the
// server waits before it calls Accept again, and the socket, still ready,
// is tried again then.
func (a *Acceptor) Accept() (net.Conn, error) {
	for {
		id, ok, err := a.nextReady()
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		c, err := a.acceptFrom(id)
		if err != nil {
			return nil, err
		}
		if c != nil {
			return c, nil
		}
	}
}

// nextReady returns a member that had a connection waiting, waiting for
// one if there is none; ok is false if the wait found only events of
// members removed since.
func (a *Acceptor) nextReady() (id int32, ok bool, err error) {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return 0, false, net.ErrClosed
	}
	if len(a.ready) > 0 {
		// First in, first out: a socket with more waiting goes to the
		// back, so one tenant's flood of connections does not keep the
		// others waiting.
		id = a.ready[0]
		a.ready = a.ready[1:]
		_, ok = a.members[id]
		a.mu.Unlock()
		return id, ok, nil
	}
	a.mu.Unlock()

	var events [64]unix.EpollEvent
	var n int
	var werr error
	rerr := a.raw.Read(func(fd uintptr) bool {
		n, werr = unix.EpollWait(int(fd), events[:], 0)
		if werr == unix.EINTR {
			n, werr = 0, nil
		}
		return n > 0 || werr != nil
	})
	if rerr != nil {
		return 0, false, net.ErrClosed
	}
	if werr != nil {
		return 0, false, os.NewSyscallError("epoll_wait", werr)
	}
	a.mu.Lock()
	for _, ev := range events[:n] {
		a.ready = append(a.ready, ev.Fd)
	}
	a.mu.Unlock()
	return 0, false, nil
}

// acceptFrom takes one connection from member id and passes it through
// the member's chain; nil if there was none, or the chain refused it.
func (a *Acceptor) acceptFrom(id int32) (net.Conn, error) {
	a.mu.Lock()
	m, ok := a.members[id]
	ok = ok && !m.out // shut out since it was ready
	a.mu.Unlock()
	if !ok {
		return nil, nil
	}
	c, err := acceptNow(m.ln)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return nil, nil // none left: the set says when one comes
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE), errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
		return nil, temporaryError{err}
	case err != nil:
		a.requeue(id) // that connection's failure (ECONNABORTED): the next
		return nil, nil
	}
	a.requeue(id) // there may be more
	m.fed.put(c)
	out, err := acceptChain(m.chain)
	m.fed.take() // what the chain did not take
	var so shutOutWait
	if errors.As(err, &so) {
		a.takeOut(id, so.left)
	}
	if err != nil {
		return nil, nil
	}
	return out, nil
}

// temporaryError is an accept failure the server waits out.
type temporaryError struct{ error }

func (temporaryError) Temporary() bool { return true }
func (e temporaryError) Unwrap() error { return e.error }

// acceptChain runs the chain's Accept without waiting: a tenant listener
// reports a shut-out instead of waiting for its end.
func acceptChain(chain net.Listener) (net.Conn, error) {
	if tl, ok := chain.(*tenantListener); ok {
		return tl.accept()
	}
	return chain.Accept()
}

// requeue marks member id as ready again.
func (a *Acceptor) requeue(id int32) {
	a.mu.Lock()
	a.ready = append(a.ready, id)
	a.mu.Unlock()
}

// takeOut takes member id out of the set for d, while its tenant is shut
// out.
func (a *Acceptor) takeOut(id int32, d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, ok := a.members[id]
	if !ok || m.out {
		return
	}
	unix.EpollCtl(a.epfd(), unix.EPOLL_CTL_DEL, m.fd, nil)
	m.out = true
	time.AfterFunc(d, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.closed || a.members[id] != m {
			return
		}
		m.out = false
		unix.EpollCtl(a.epfd(), unix.EPOLL_CTL_ADD, m.fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: id})
	})
}

// Close stops accepting, ends an Accept in progress and closes every
// listener's chain.
func (a *Acceptor) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	members := a.members
	a.members, a.byLn, a.ready = nil, nil, nil
	for _, m := range members {
		if !m.out {
			unix.EpollCtl(a.fd, unix.EPOLL_CTL_DEL, m.fd, nil)
		}
	}
	err := a.ep.Close()
	a.mu.Unlock()
	for _, m := range members {
		m.chain.Close()
	}
	return err
}

// Addr is a name for the Acceptor's many sockets.
func (a *Acceptor) Addr() net.Addr { return acceptorAddr{} }

type acceptorAddr struct{}

func (acceptorAddr) Network() string { return "unix" }
func (acceptorAddr) String() string  { return "namespace sockets" }

// acceptNow accepts a connection from ln if one is waiting, without
// waiting: EAGAIN if there is none.
func acceptNow(ln *net.UnixListener) (net.Conn, error) {
	sc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var aerr error
	if err := sc.Control(func(fd uintptr) {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
	}); err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	f := os.NewFile(uintptr(nfd), "unix")
	defer f.Close()
	return net.FileConn(f)
}

// fedListener stands for a listening socket of an Acceptor in the
// socket's chain: Accept returns the connection the Acceptor took from
// it, once, and then errNothingFed.
type fedListener struct {
	ln *net.UnixListener
	c  net.Conn // only the Acceptor's goroutine touches it
}

// errNothingFed ends a chain's Accept once it has used the connection
// it was fed.
var errNothingFed = errors.New("no connection waiting")

func (l *fedListener) put(c net.Conn) { l.c = c }

// take returns what was fed and not taken, closing it.
func (l *fedListener) take() {
	if l.c != nil {
		l.c.Close()
		l.c = nil
	}
}

func (l *fedListener) Accept() (net.Conn, error) {
	c := l.c
	l.c = nil
	if c == nil {
		return nil, errNothingFed
	}
	return c, nil
}

// Close closes the listening socket.
func (l *fedListener) Close() error { return l.ln.Close() }

func (l *fedListener) Addr() net.Addr { return l.ln.Addr() }

// SyscallConn is the listening socket's, for what sets its options
// (NamespaceListener cuts its backlog).
func (l *fedListener) SyscallConn() (syscall.RawConn, error) { return l.ln.SyscallConn() }
