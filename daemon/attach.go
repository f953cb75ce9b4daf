package daemon

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// attach attaches ref and logs the outcome; a namespace attached already
// is not an error when quiet.
func attach(ctx context.Context, b *broker.Broker, log *slog.Logger, ref nsmgr.Ref, quiet bool) {
	name := broker.DefaultName(ref)
	_, err := b.Attach(ctx, name, ref)
	switch {
	case err == nil:
	case quiet && errors.Is(err, broker.ErrExists):
		log.Debug("namespace attached already", "namespace", name)
	default:
		log.Error("cannot attach namespace", "namespace", name, "err", err)
	}
}

// attachListed attaches the namespaces of the attach setting (valid refs).
func attachListed(ctx context.Context, b *broker.Broker, log *slog.Logger, refs []string) {
	for _, s := range refs {
		if ctx.Err() != nil {
			return // stopping
		}
		ref, _ := nsmgr.ParseRef(s)
		// Restored from the state file already, under its own name.
		if in, err := b.Get(broker.DefaultName(ref)); err == nil && in.Ref == ref {
			log.Debug("namespace attached already", "namespace", in.Name)
			continue
		}
		attach(ctx, b, log, ref, false)
	}
}

// discoverer attaches every namespace that appears in its directories.
// The broker detaches the ones that disappear by itself.
type discoverer struct {
	w    *nsmgr.Watcher
	done chan struct{}
}

// startDiscovery attaches the namespaces present in dirs and then follows
// them until stop.
func startDiscovery(ctx context.Context, b *broker.Broker, log *slog.Logger, dirs []string) (*discoverer, error) {
	// Watch first, so that nothing created meanwhile is missed.
	w, err := nsmgr.NewWatcher(dirs...)
	if err != nil {
		return nil, err
	}
	refs, err := nsmgr.Discover(dirs...)
	if err != nil {
		w.Close()
		return nil, err
	}
	for _, ref := range refs {
		if ctx.Err() != nil {
			break // stopping
		}
		attach(ctx, b, log, ref, true)
	}
	d := &discoverer{w: w, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for ev := range w.Events() {
			switch ev.Op {
			case nsmgr.Added:
				attach(ctx, b, log, ev.Ref, true)
			case nsmgr.Removed:
				log.Debug("discovered namespace removed", "ref", ev.Ref.String())
			case nsmgr.Failed:
				log.Warn("discovery may miss namespaces", "dir", ev.Ref.Path, "err", ev.Err)
			}
		}
	}()
	return d, nil
}

func (d *discoverer) stop() {
	d.w.Close()
	<-d.done
}
