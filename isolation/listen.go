package isolation

import (
	"context"
	"fmt"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The NETLINK_LISTEN_ALL_NSID probes (see docs/protocol.md). The kernel
// delivers a namespace's multicast to a socket in another namespace only if
// the socket set NETLINK_LISTEN_ALL_NSID, the publishing namespace has an
// nsid in the socket's namespace, and whoever opened the socket has
// CAP_NET_BROADCAST over the publishing namespace. The first two probes
// must hold. The third is the documented privileged path: it crosses, which
// is outside nsbroker's security model, and the check requires it to cross
// exactly as documented, because it is also the evidence that the
// listeners would have seen a crossing in the first two.
var listenerProbeText = [3]struct{ name, expected string }{
	{
		"a privileged NETLINK_LISTEN_ALL_NSID listener, tenant namespace without an nsid",
		"nothing of the tenant's arrives: the kernel delivers across namespaces only from namespaces that have an nsid in the listener's",
	},
	{
		"a NETLINK_LISTEN_ALL_NSID listener opened by an unprivileged user, tenant namespace with an nsid",
		"nothing of the tenant's arrives: the socket's opener lacks CAP_NET_BROADCAST over the tenant's namespace",
	},
	{
		"a privileged NETLINK_LISTEN_ALL_NSID listener, tenant namespace with an nsid",
		"the tenant's event arrives, with the tenant's inode and an nsid control message: the kernel's documented path for privileged listeners (docs/protocol.md), outside nsbroker's security model",
	},
}

// listenerProbes runs the three probes with one tenant namespace, which
// publishes through its tenant socket to the probe group. After each
// publish the checker publishes a fence in its own namespace: the module
// multicasts before it answers, so anything of the tenant's that a
// listener receives arrives before the fence.
func (ch *checker) listenerProbes(ctx context.Context) []Probe {
	probes := make([]Probe, 3)
	for i, t := range listenerProbeText {
		probes[i] = Probe{Name: t.name, Expected: t.expected}
	}
	setAll := func(s Status, observed string) []Probe {
		for i := range probes {
			probes[i].Status, probes[i].Observed = s, observed
		}
		return probes
	}
	if ch.cfg.SkipListenerProbes {
		return setAll(StatusNotRun, "left out on request")
	}
	k := ch.env.Kernel()
	if k == nil {
		return setAll(StatusInconclusive, "the module cannot be reached from the checker's namespace")
	}
	lp := &listenerProbe{ch: ch, k: k, probes: probes}
	if err := lp.run(ctx); err != nil {
		for i := range probes {
			if probes[i].Status == "" {
				probes[i].Status, probes[i].Observed = StatusInconclusive, err.Error()
			}
		}
	}
	return probes
}

// listenerProbe is one run of the three listener probes.
type listenerProbe struct {
	ch     *checker
	k      Kernel
	probes []Probe
	tenant Namespace // the namespace that publishes
}

func (lp *listenerProbe) run(ctx context.Context) error {
	ch, k := lp.ch, lp.k
	group := ch.cfg.ProbeGroup
	// A namespace without an nsid: the ones the check created have none.
	found := false
	for _, ns := range ch.report.Namespaces {
		_, has, err := k.Nsid(ns.Name)
		if err != nil {
			return fmt.Errorf("read the nsid of %s: %w", ns.Name, err)
		}
		if !has {
			lp.tenant, found = ns, true
			break
		}
	}
	if !found {
		return fmt.Errorf("every namespace under test already has an nsid in the checker's namespace; an nsid cannot be removed")
	}
	priv, err := k.Listen(group, false)
	if err != nil {
		return fmt.Errorf("open a privileged listener: %w", err)
	}
	defer priv.Close()
	unpriv, err := k.Listen(group, true)
	if err != nil {
		return fmt.Errorf("open a listener as an unprivileged user: %w", err)
	}
	defer unpriv.Close()
	t := lp.tenant
	common := fmt.Sprintf("tenant %s (inode %d) published to group %d through its tenant socket; the listeners are in the checker's namespace (inode %d)",
		t.Name, t.Inode, group, k.Inode())

	// 1. No nsid.
	seq1, fence1, err := lp.publishAndFence(ctx, "without-nsid")
	if err != nil {
		return err
	}
	before, err := lp.until(ctx, priv, fence1)
	if err != nil {
		return fmt.Errorf("privileged listener: %w", err)
	}
	if _, err := lp.until(ctx, unpriv, fence1); err != nil {
		return fmt.Errorf("unprivileged listener: %w", err)
	}
	lp.judgeAbsent(0, before, fmt.Sprintf("%s has no nsid; %s; it published seq %d", t.Name, common, seq1), fence1)

	// 2 and 3. With an nsid.
	nsid, err := k.AssignNsid(t.Name)
	if err != nil {
		return fmt.Errorf("assign an nsid to %s: %w", t.Name, err)
	}
	seq2, fence2, err := lp.publishAndFence(ctx, "with-nsid")
	if err != nil {
		return err
	}
	beforeU, err := lp.until(ctx, unpriv, fence2)
	if err != nil {
		return fmt.Errorf("unprivileged listener: %w", err)
	}
	beforeP, err := lp.until(ctx, priv, fence2)
	if err != nil {
		return fmt.Errorf("privileged listener: %w", err)
	}
	ctxt := fmt.Sprintf("%s was given nsid %d in the checker's namespace; %s; it published seq %d", t.Name, nsid, common, seq2)
	lp.judgeAbsent(1, beforeU, ctxt, fence2)
	lp.judgeDocumented(beforeP, ctxt, seq2, nsid, fence2)
	return nil
}

// fence is an event the checker published in its own namespace.
type fence struct {
	payload string
	seq     uint64
}

// publishAndFence publishes through the tenant socket, then a fence in
// the checker's namespace.
func (lp *listenerProbe) publishAndFence(ctx context.Context, phase string) (uint64, fence, error) {
	ch := lp.ch
	g := ch.cfg.ProbeGroup
	rctx, cancel := ch.rpcCtx(ctx)
	defer cancel()
	payload := ch.tag(lp.tenant.Name, g, phase)
	r, err := ch.tenants[lp.tenant.Name].Publish(rctx, &nsbrokerv1.PublishRequest{Group: g, Payload: []byte(payload)})
	if err != nil {
		return 0, fence{}, fmt.Errorf("publish to group %d through the tenant socket in %s: %s", g, lp.tenant.Name, statusText(err))
	}
	f := fence{payload: ch.tag("checker", g, "fence-"+phase)}
	if f.seq, err = lp.k.Publish(g, []byte(f.payload)); err != nil {
		return 0, fence{}, fmt.Errorf("publish the fence in the checker's namespace: %w", err)
	}
	return r.GetSeq(), f, nil
}

// until returns what l received before the fence.
func (lp *listenerProbe) until(ctx context.Context, l Listener, f fence) ([]ListenedEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, lp.ch.cfg.Timeout)
	defer cancel()
	var got []ListenedEvent
	for {
		ev, err := l.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("waiting for the fence seq %d: %w", f.seq, err)
		}
		if ev.Payload == f.payload && !ev.HasNsid && ev.Inode == lp.k.Inode() {
			return got, nil
		}
		got = append(got, ev)
	}
}

// fromTenant splits received events into the tenant's and other
// namespaces' (other publishers on a real host); events of the checker's
// own namespace are not evidence either way.
func (lp *listenerProbe) fromTenant(evs []ListenedEvent) (tenant, others []ListenedEvent) {
	for _, ev := range evs {
		switch {
		case ev.Inode == lp.tenant.Inode:
			tenant = append(tenant, ev)
		case ev.HasNsid || ev.Inode != lp.k.Inode():
			others = append(others, ev)
		}
	}
	return tenant, others
}

func describe(ev ListenedEvent) string {
	s := fmt.Sprintf("seq %d of group %d from inode %d", ev.Seq, ev.Group, ev.Inode)
	if ev.HasNsid {
		s += fmt.Sprintf(" with control message nsid=%d", ev.Nsid)
	} else {
		s += " without an nsid control message"
	}
	return s
}

func (lp *listenerProbe) noteOthers(p *Probe, others []ListenedEvent) {
	if len(others) > 0 {
		p.Evidence = append(p.Evidence, fmt.Sprintf("also received %d event(s) from other namespaces that have nsids here, e.g. %s", len(others), describe(others[0])))
	}
}

// judgeAbsent decides a probe that must see nothing of the tenant's.
func (lp *listenerProbe) judgeAbsent(i int, before []ListenedEvent, setting string, f fence) {
	p := &lp.probes[i]
	tenant, others := lp.fromTenant(before)
	p.Evidence = append(p.Evidence, setting)
	if len(tenant) == 0 {
		p.Status = StatusHeld
		p.Observed = fmt.Sprintf("nothing of the tenant's arrived: the listener's next event was the checker's own fence, seq %d", f.seq)
	} else {
		p.Status = StatusBroken
		p.Observed = fmt.Sprintf("received the tenant's %s before the fence seq %d", describe(tenant[0]), f.seq)
	}
	lp.noteOthers(p, others)
}

// judgeDocumented decides the privileged probe, which must cross exactly
// as documented: the tenant's event, its inode, the nsid it was given.
func (lp *listenerProbe) judgeDocumented(before []ListenedEvent, setting string, seq uint64, nsid int32, f fence) {
	p := &lp.probes[2]
	tenant, others := lp.fromTenant(before)
	p.Evidence = append(p.Evidence, setting)
	switch {
	case len(tenant) == 1 && tenant[0].Seq == seq && tenant[0].HasNsid && tenant[0].Nsid == nsid:
		p.Status = StatusDocumented
		p.Observed = fmt.Sprintf("received the tenant's %s before the fence seq %d: privileged listeners are outside the security model", describe(tenant[0]), f.seq)
	case len(tenant) == 0:
		p.Status = StatusInconclusive
		p.Observed = fmt.Sprintf("the documented delivery did not happen (the next event was the fence seq %d), so this kernel differs from docs/protocol.md and the listener probes above prove nothing", f.seq)
	default:
		p.Status = StatusBroken
		var ds []string
		for _, ev := range tenant {
			ds = append(ds, describe(ev))
		}
		p.Observed = fmt.Sprintf("received %d event(s) of the tenant, not exactly seq %d with nsid=%d: %v", len(tenant), seq, nsid, ds)
	}
	lp.noteOthers(p, others)
}
