package daemon

import (
	"context"
	"log/slog"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// follower keeps the health statuses, the namespace-local sockets and
// the metrics' namespaces in step with the broker's attached namespaces.
// The health status changes last, so that a watcher of it sees the rest
// done: a namespace SERVING has had its chance at a local socket, one
// removed has its socket closed.
type follower struct {
	b      *broker.Broker
	health *healthServer
	local  *localSockets // nil when local sockets are off
	m      *metrics
	log    *slog.Logger
	// retry is how often a taken or failed local socket is tried again.
	retry time.Duration
	// settle asks the follower to close the reply once it has applied
	// every namespace attached so far.
	settle chan chan struct{}

	// known are the attached namespaces already reported, so that one
	// reported twice (a watch starting during an attach, or a new watch
	// after an overflow) is logged once.
	known map[string]nsmgr.ID
}

// run follows the broker until ctx is cancelled.
func (f *follower) run(ctx context.Context) {
	for {
		events, err := f.b.Watch(ctx)
		if err != nil {
			if ctx.Err() == nil {
				f.log.Error("cannot follow the attached namespaces", "err", err)
			}
			return
		}
		f.resync()
		f.follow(events)
		if ctx.Err() != nil {
			return
		}
		// The watch fell behind and was cut off; a new one reports every
		// attached namespace again.
		f.log.Warn("namespace watch ended; following again")
	}
}

// follow applies events until the watch ends, retrying the local
// sockets that are taken or failed, and answering settle requests.
func (f *follower) follow(events <-chan broker.NamespaceEvent) {
	tick := time.NewTicker(max(f.retry, 10*time.Millisecond))
	defer tick.Stop()
	var waiting []chan struct{} // settle requests not answered yet
	defer func() {
		for _, done := range waiting { // a watch cut short: do not hold start-up
			close(done)
		}
	}()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			f.apply(ev)
		case <-tick.C:
			if f.local == nil || !f.local.pending() {
				continue
			}
			for _, name := range f.local.retry(f.retry) {
				if in, err := f.b.Get(name); err == nil {
					f.health.set(namespaceService(name), f.serving(in))
				}
			}
		case done := <-f.settle:
			waiting = append(waiting, done)
		}
		if len(waiting) > 0 && f.caughtUp() {
			for _, done := range waiting {
				close(done)
			}
			waiting = nil
		}
	}
}

// caughtUp reports whether the follower has applied every namespace the
// broker has attached.
func (f *follower) caughtUp() bool {
	for _, in := range f.b.List() {
		if id, ok := f.known[in.Name]; !ok || id != in.ID {
			return false
		}
	}
	return true
}

// resync drops what is held for namespaces no longer attached; the watch
// just started reports the attached ones.
func (f *follower) resync() {
	attached := make(map[string]broker.Info)
	for _, in := range f.b.List() {
		attached[in.Name] = in
	}
	for name, id := range f.known {
		if in, ok := attached[name]; !ok || in.ID != id {
			delete(f.known, name)
		}
	}
	if f.local == nil {
		return
	}
	for _, name := range f.local.names() {
		in, ok := attached[name]
		if id, open := f.local.has(name); open && (!ok || id != in.ID) {
			f.local.close(name, connGrace)
		}
	}
}

func (f *follower) apply(ev broker.NamespaceEvent) {
	in := ev.Info
	log := f.log.With("namespace", in.Name)
	switch ev.Kind {
	case broker.NamespaceAttached:
		if id, ok := f.known[in.Name]; !ok || id != in.ID {
			f.known[in.Name] = in.ID
			log.Info("namespace attached", "ref", in.Ref.String(), "inode", in.Inode, "state", in.State.String(), "reason", in.Reason)
		}
		f.m.track(in.Name)
		f.openLocal(in)
		f.health.set(namespaceService(in.Name), f.serving(in))
	case broker.NamespaceReady:
		log.Info("namespace ready", "epoch", in.Epoch)
		f.openLocal(in)
		f.health.set(namespaceService(in.Name), f.serving(in))
	case broker.NamespaceUnavailable:
		log.Warn("namespace unavailable", "reason", errText(ev.Err, in.Reason))
		f.health.set(namespaceService(in.Name), f.serving(in))
	case broker.NamespaceDetached, broker.NamespaceGone:
		delete(f.known, in.Name)
		log.Info("namespace "+ev.Kind.String(), "reason", errText(ev.Err, in.Reason))
		if f.local != nil && f.local.close(in.Name, connGrace) {
			log.Debug("local socket closed")
		}
		f.m.forget(in.Name)
		f.health.remove(namespaceService(in.Name))
	}
}

// openLocal opens the namespace's local sockets; a failure is logged, and
// the namespace stays attached while the follower retries.
func (f *follower) openLocal(in broker.Info) {
	if f.local == nil {
		return
	}
	f.local.ensure(in)
}

// serving is the namespace's health status from its current state, and
// its local socket's (one taken by another process is NOT_SERVING): an
// event's snapshot can be older than an event queued before it (a watch
// that starts while the namespace connects reports it as it was).
func (f *follower) serving(in broker.Info) servingStatus {
	state := in.State
	if cur, err := f.b.Get(in.Name); err == nil && cur.ID == in.ID {
		state = cur.State
	}
	if state == broker.StateReady && (f.local == nil || f.local.healthy(in.Name, in.ID)) {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

func errText(err error, fallback string) string {
	if err != nil {
		return err.Error()
	}
	return fallback
}
