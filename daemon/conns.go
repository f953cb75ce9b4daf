package daemon

import (
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// connSet remembers the connections a listener accepted, so that the
// daemon can cut them: a namespace's tenants when it is detached (their
// sockets would keep the namespace alive), TCP tenants when the tenant
// map changes. The connections are handed on unwrapped, because the
// server's listeners read their peer credentials and namespace from the
// concrete socket, so closed ones are forgotten lazily.
type connSet struct {
	mu     sync.Mutex // guards the fields below
	conns  map[net.Conn]struct{}
	prune  int  // prune when len(conns) reaches this
	closed bool // closeAll was called: close newcomers at once
}

const minPrune = 64

// add remembers c; false if the set is closed (c is closed then).
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.conns == nil {
		s.conns = make(map[net.Conn]struct{})
	}
	if len(s.conns) >= s.prune {
		for c := range s.conns {
			if isClosed(c) {
				delete(s.conns, c)
			}
		}
		s.prune = max(2*len(s.conns), minPrune)
	}
	s.conns[c] = struct{}{}
	return true
}

// cut closes the connections accepted so far and returns how many were
// still open.
func (s *connSet) cut() int {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.prune = 0
	s.mu.Unlock()
	n := 0
	for c := range conns {
		if !isClosed(c) {
			n++
		}
		c.Close()
	}
	return n
}

// closeAll cuts every connection, now and later.
func (s *connSet) closeAll() int {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.cut()
}

// isClosed reports whether c was closed: a closed socket refuses access
// to its descriptor.
func isClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	return rc.Control(func(uintptr) {}) != nil
}

// trackingListener adds every accepted connection to a connSet, and
// closes each maxAge after it was accepted (0: never).
type trackingListener struct {
	net.Listener
	conns  *connSet
	maxAge time.Duration
}

// SyscallConn is the listening socket's, so that what wraps the listener
// can set its options.
func (l *trackingListener) SyscallConn() (syscall.RawConn, error) {
	sc, ok := l.Listener.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("%T has no socket", l.Listener)
	}
	return sc.SyscallConn()
}

func (l *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.conns.add(c) {
			if l.maxAge > 0 {
				time.AfterFunc(l.maxAge, func() { c.Close() })
			}
			return c, nil
		}
	}
}
