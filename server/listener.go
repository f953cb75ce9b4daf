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

	"github.com/nsbroker/nsbroker/nsmgr"
)

// taggedConn is a connection whose Identity its listener established;
// Credentials hands the Identity to gRPC without a handshake.
type taggedConn struct {
	net.Conn
	id Identity
}

// adminListener tags the connections of allowed peers as admin.
type adminListener struct {
	net.Listener
	allow func(*unix.Ucred) error
}

// AdminListener wraps l, a unix socket listener, for the admin socket:
// each accepted connection's peer credentials (SO_PEERCRED) are passed to
// allow, and the connection is admin if allow returns nil; otherwise it is
// closed and Accept goes on to the next one. A nil allow admits uid 0
// only. allow is the place to log refusals.
func AdminListener(l net.Listener, allow func(*unix.Ucred) error) net.Listener {
	if allow == nil {
		allow = rootOnly
	}
	return &adminListener{Listener: l, allow: allow}
}

func rootOnly(cred *unix.Ucred) error {
	if cred.Uid != 0 {
		return fmt.Errorf("uid %d is not root", cred.Uid)
	}
	return nil
}

// Accept returns the next connection whose peer allow admits.
func (l *adminListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cred, err := peerCred(c)
		if err == nil {
			err = l.allow(cred)
		}
		if err != nil {
			c.Close()
			continue
		}
		peer := fmt.Sprintf("admin pid=%d uid=%d gid=%d", cred.Pid, cred.Uid, cred.Gid)
		return &taggedConn{Conn: c, id: Identity{Role: RoleAdmin, Peer: peer}}, nil
	}
}

// peerCred returns the credentials of a unix socket's peer.
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("%T is not a unix socket connection", c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if credErr != nil {
		return nil, os.NewSyscallError("getsockopt SO_PEERCRED", credErr)
	}
	return cred, nil
}

// tenantListener tags its connections as the tenant of one namespace.
type tenantListener struct {
	net.Listener
	namespace string
	want      nsmgr.ID    // zero: any namespace
	refused   func(error) // may be nil
	// gate, if set (Budget.Gate), says how long the tenant of a key is
	// shut out; done is closed by Close.
	gate      func(tenantKey) time.Duration
	done      chan struct{}
	closeOnce sync.Once
}

// TenantListener wraps l, a listener opened inside the network namespace
// attached under the name namespace: its connections belong to that
// namespace's tenant, who may reach that namespace only, and only while
// the name stays attached to the namespace the connection lives in. A
// connection whose namespace cannot be read (SIOCGSKNS, which needs
// CAP_NET_ADMIN) is closed.
//
// The socket's backlog is cut to TenantBacklog: connections the daemon has
// not accepted yet wait there, and a tenant that connects faster than the
// daemon turns it away is refused by the kernel (EAGAIN) instead of
// queueing work for the daemon.
func TenantListener(l net.Listener, namespace string) net.Listener {
	cutBacklog(l)
	return &tenantListener{Listener: l, namespace: namespace}
}

// TenantBacklog is the backlog of a tenant's listening socket.
const TenantBacklog = 64

// cutBacklog sets l's backlog to TenantBacklog: listen(2) again on a
// listening socket sets it.
func cutBacklog(l net.Listener) {
	if sc, ok := l.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) { unix.Listen(int(fd), TenantBacklog) })
		}
	}
}

// NamespaceListener is TenantListener for a listener that serves the
// namespace attached under the name namespace whose identity is netns:
// a connection whose socket lives in another network namespace is
// closed, and refused (if not nil) is told why. An accepted unix socket
// lives in the namespace of the process that connected, so this is what
// makes a filesystem socket safe to serve as a namespace's tenant
// listener: a process elsewhere that reaches its path (a bind mount
// shared too widely, the host) is not that namespace's tenant.
func NamespaceListener(l net.Listener, namespace string, netns nsmgr.ID, refused func(error)) net.Listener {
	cutBacklog(l)
	return &tenantListener{Listener: l, namespace: namespace, want: netns, refused: refused}
}

// Accept returns the next connection, tagged with the tenant's Identity.
// While the tenant is shut out it accepts nothing: the tenant's next
// connections wait in the backlog, and past it the kernel turns them
// away.
func (l *tenantListener) Accept() (net.Conn, error) {
	for {
		c, err := l.accept()
		var so shutOutWait
		if !errors.As(err, &so) {
			return c, err
		}
		select {
		case <-time.After(so.left):
		case <-l.done:
			return nil, net.ErrClosed
		}
	}
}

// shutOutWait is what accept returns, having closed the connection, when
// the listener's tenant is shut out for left more.
type shutOutWait struct{ left time.Duration }

func (e shutOutWait) Error() string {
	return fmt.Sprintf("the tenant is shut out for %v", e.left)
}

// accept returns the next connection of the wrapped listener that is the
// namespace's tenant's, tagged, or a shutOutWait.
func (l *tenantListener) accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		netns, err := socketNetns(c)
		if err == nil && l.want != (nsmgr.ID{}) && netns != l.want {
			err = fmt.Errorf("connection from network namespace %s, not the served %s", netns, l.want)
			if cred, cerr := peerCred(c); cerr == nil {
				err = fmt.Errorf("pid %d uid %d: %w", cred.Pid, cred.Uid, err)
			}
		}
		if err != nil {
			if l.refused != nil && l.want != (nsmgr.ID{}) {
				l.refused(err)
			}
			c.Close()
			continue
		}
		peer := "tenant " + l.namespace
		if cred, err := peerCred(c); err == nil {
			peer += fmt.Sprintf(" pid=%d uid=%d", cred.Pid, cred.Uid)
		} else if addr := c.RemoteAddr(); addr != nil && addr.String() != "" {
			peer += " " + addr.String()
		}
		id := Identity{Role: RoleTenant, Tenant: l.namespace, Namespaces: []string{l.namespace}, Peer: peer, netns: netns}
		if l.gate != nil {
			if d := l.gate(id.key()); d > 0 {
				c.Close()
				return nil, shutOutWait{d}
			}
		}
		return &taggedConn{Conn: c, id: id}, nil
	}
}

// Close closes the listener, and ends a wait for a shut-out to end.
func (l *tenantListener) Close() error {
	if l.done != nil {
		l.closeOnce.Do(func() { close(l.done) })
	}
	return l.Listener.Close()
}

// socketNetns returns the network namespace of a connection's socket.
// An accepted unix socket lives in the namespace of the process that
// connected, which for an abstract socket is the listener's.
func socketNetns(c net.Conn) (nsmgr.ID, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nsmgr.ID{}, fmt.Errorf("%T has no socket", c)
	}
	return nsmgr.SocketID(sc)
}
