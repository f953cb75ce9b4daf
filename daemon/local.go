package daemon

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
	"github.com/nsbroker/nsbroker/server"
)

// localSockets keeps one abstract unix socket open inside each attached
// namespace, served as that namespace's tenant listener.
type localSockets struct {
	name  string                  // the abstract socket, "@nsbroker"
	serve func(net.Listener)      // serves a listener until it is closed
	gauge func(open int)          // reports how many are open
	mu    sync.Mutex              // guards open
	open  map[string]*localSocket // by attach name
}

type localSocket struct {
	id    nsmgr.ID // the namespace it lives in
	ln    net.Listener
	conns connSet
}

// ensure opens the socket for the namespace in unless it is open there
// already. An error leaves the namespace without a local socket.
func (ls *localSockets) ensure(in broker.Info) error {
	ls.mu.Lock()
	cur, ok := ls.open[in.Name]
	ls.mu.Unlock()
	if ok && cur.id == in.ID {
		return nil
	}
	if ok {
		ls.close(in.Name, connGrace) // the name now means another namespace
	}
	ln, err := listenIn(in, ls.name)
	if err != nil {
		return err
	}
	s := &localSocket{id: in.ID, ln: ln}
	ls.mu.Lock()
	ls.open[in.Name] = s
	ls.gauge(len(ls.open))
	ls.mu.Unlock()
	go ls.serve(server.TenantListener(&trackingListener{Listener: ln, conns: &s.conns}, in.Name))
	return nil
}

// listenIn opens the abstract socket inside the namespace in describes:
// an abstract socket belongs to the network namespace of the thread
// that creates it.
func listenIn(in broker.Info, name string) (net.Listener, error) {
	ns, err := nsmgr.Open(in.Ref)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	if ns.ID() != in.ID {
		return nil, fmt.Errorf("%s is now namespace %s, not the attached %s", in.Ref, ns.ID(), in.ID)
	}
	var ln net.Listener
	err = ns.Do(func() error {
		var err error
		ln, err = net.Listen("unix", name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// connGrace is how long the connections of a closed local socket live on:
// the namespace's streams are ending with their status (ABORTED, the
// namespace is gone), and cutting the connection first would turn that
// into UNAVAILABLE with no reason.
const connGrace = time.Second

// close closes the namespace's socket at once and cuts its connections
// after grace; false if it had none.
func (ls *localSockets) close(name string, grace time.Duration) bool {
	ls.mu.Lock()
	s, ok := ls.open[name]
	delete(ls.open, name)
	ls.gauge(len(ls.open))
	ls.mu.Unlock()
	if !ok {
		return false
	}
	s.ln.Close()
	if grace <= 0 {
		s.conns.closeAll()
	} else {
		time.AfterFunc(grace, func() { s.conns.closeAll() })
	}
	return true
}

// has reports whether name has an open socket, in which namespace.
func (ls *localSockets) has(name string) (nsmgr.ID, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	s, ok := ls.open[name]
	if !ok {
		return nsmgr.ID{}, false
	}
	return s.id, true
}

// names lists the namespaces with an open socket.
func (ls *localSockets) names() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := make([]string, 0, len(ls.open))
	for n := range ls.open {
		out = append(out, n)
	}
	return out
}

// closeAll closes every socket and cuts every connection now.
func (ls *localSockets) closeAll() {
	for _, n := range ls.names() {
		ls.close(n, 0)
	}
}
