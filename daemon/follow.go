package daemon

import (
	"context"
	"log/slog"

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
		for ev := range events {
			f.apply(ev)
		}
		if ctx.Err() != nil {
			return
		}
		// The watch fell behind and was cut off; a new one reports every
		// attached namespace again.
		f.log.Warn("namespace watch ended; following again")
	}
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
		f.openLocal(log, in)
		f.health.set(namespaceService(in.Name), f.serving(in))
	case broker.NamespaceReady:
		log.Info("namespace ready", "epoch", in.Epoch)
		f.openLocal(log, in)
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

// openLocal opens the namespace's local socket; a failure is logged and
// the namespace stays attached without one.
func (f *follower) openLocal(log *slog.Logger, in broker.Info) {
	if f.local == nil {
		return
	}
	if id, ok := f.local.has(in.Name); ok && id == in.ID {
		return
	}
	if err := f.local.ensure(in); err != nil {
		log.Warn("no local socket in namespace", "socket", f.local.name, "err", err)
		return
	}
	log.Debug("local socket open", "socket", f.local.name)
}

// serving is the namespace's health status from its current state: an
// event's snapshot can be older than an event queued before it (a watch
// that starts while the namespace connects reports it as it was).
func (f *follower) serving(in broker.Info) servingStatus {
	state := in.State
	if cur, err := f.b.Get(in.Name); err == nil && cur.ID == in.ID {
		state = cur.State
	}
	if state == broker.StateReady {
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
