package isolation

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// A fake nsbrokerd with a fake kernel, in-process over bufconn, whose
// faults each break one isolation property. Tenants get their own gRPC
// server whose identity is fixed, as the daemon's per-namespace socket
// fixes it.

// faults are the ways the fake misbehaves; the zero value is a correct
// daemon and kernel.
type faults struct {
	leakFrom, leakTo string // leakFrom's events also reach leakTo's subscribers
	dropSeq          uint64 // never deliver this seq (in every namespace and group)
	dropWithGap      bool   // ... but report it with a gap marker
	swapSeq          uint64 // deliver this seq after the next one
	dupSeq           uint64 // deliver this seq twice
	wrongInode       bool   // events carry the inode of the next namespace
	tenantCrossName  bool   // tenants may name other namespaces
	revealExisting   bool   // NOT_FOUND for another tenant's namespace says so
	tenantDetach     bool   // tenants may detach
	echoOtherInode   bool   // tenant echo answered by another namespace
	endStream        bool   // subscriptions end right after the first event

	kernelNoNsidCross  bool // LISTEN_ALL_NSID crosses without an nsid
	kernelUnprivCross  bool // ... and for unprivileged openers
	kernelNoDocumented bool // the documented privileged crossing does not happen
}

const initInode = 4026531840

type fakeDaemon struct {
	f  faults
	mu sync.Mutex
	// The "kernel": namespaces that exist, by name, their inodes, nsids.
	inodes    map[string]uint64
	nextInode uint64
	nsids     map[string]int32
	listeners []*fakeListener
	initSeq   map[uint32]uint64
	// The daemon: attached namespaces.
	attached map[string]*fakeNS
}

type fakeNS struct {
	name  string
	inode uint64
	seq   map[uint32]uint64
	subs  map[*fakeSub]bool
	held  map[uint32]*nsbrokerv1.Event // events delayed by swapSeq, per group
}

type fakeSub struct {
	group uint32
	ch    chan *nsbrokerv1.SubscribeResponse
}

func newFakeDaemon(f faults) *fakeDaemon {
	return &fakeDaemon{f: f, inodes: map[string]uint64{}, nextInode: 4026532000,
		nsids: map[string]int32{}, initSeq: map[uint32]uint64{}, attached: map[string]*fakeNS{}}
}

// server is the daemon's service as one identity sees it ("" is admin).
type server struct {
	nsbrokerv1.UnimplementedBrokerServer
	d      *fakeDaemon
	tenant string
}

func notFound(name string) error {
	return status.Errorf(codes.NotFound, "namespace %q not attached", name)
}

// lookup resolves the namespace an rpc names, with the tenancy rules.
func (s *server) lookup(name string) (*fakeNS, error) {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if name == "" {
		name = s.tenant
	}
	if s.tenant != "" && name != s.tenant && !d.f.tenantCrossName {
		if _, ok := d.attached[name]; ok && d.f.revealExisting {
			return nil, status.Errorf(codes.NotFound, "namespace %q belongs to another tenant", name)
		}
		return nil, notFound(name)
	}
	ns, ok := d.attached[name]
	if !ok {
		return nil, notFound(name)
	}
	return ns, nil
}

func (s *server) describe(ns *fakeNS) *nsbrokerv1.Namespace {
	return &nsbrokerv1.Namespace{Name: ns.name, Inode: ns.inode, Cookie: ns.inode + 1,
		State: nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY, Subscribers: uint32(len(ns.subs))}
}

func (s *server) AttachNamespace(_ context.Context, r *nsbrokerv1.AttachNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	if s.tenant != "" {
		return nil, status.Error(codes.PermissionDenied, "tenants cannot attach")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	inode, ok := d.inodes[r.GetRef().GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no namespace %q", r.GetRef().GetName())
	}
	if _, ok := d.attached[r.GetName()]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "%q attached", r.GetName())
	}
	ns := &fakeNS{name: r.GetName(), inode: inode, seq: map[uint32]uint64{}, subs: map[*fakeSub]bool{}, held: map[uint32]*nsbrokerv1.Event{}}
	d.attached[r.GetName()] = ns
	return s.describe(ns), nil
}

func (s *server) DetachNamespace(_ context.Context, r *nsbrokerv1.DetachNamespaceRequest) (*nsbrokerv1.DetachNamespaceResponse, error) {
	if s.tenant != "" && !s.d.f.tenantDetach {
		return nil, status.Error(codes.PermissionDenied, "tenants cannot detach")
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	ns, ok := d.attached[r.GetNamespace()]
	if !ok {
		return nil, notFound(r.GetNamespace())
	}
	delete(d.attached, r.GetNamespace())
	for sub := range ns.subs {
		close(sub.ch)
	}
	ns.subs = nil
	return &nsbrokerv1.DetachNamespaceResponse{}, nil
}

func (s *server) GetNamespace(_ context.Context, r *nsbrokerv1.GetNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	ns, err := s.lookup(r.GetNamespace())
	if err != nil {
		return nil, err
	}
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return s.describe(ns), nil
}

func (s *server) ListNamespaces(context.Context, *nsbrokerv1.ListNamespacesRequest) (*nsbrokerv1.ListNamespacesResponse, error) {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	var out nsbrokerv1.ListNamespacesResponse
	for name, ns := range d.attached {
		if s.tenant == "" || name == s.tenant || d.f.tenantCrossName {
			out.Namespaces = append(out.Namespaces, s.describe(ns))
		}
	}
	slices.SortFunc(out.Namespaces, func(a, b *nsbrokerv1.Namespace) int {
		return cmpString(a.GetName(), b.GetName())
	})
	return &out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *server) Echo(_ context.Context, r *nsbrokerv1.EchoRequest) (*nsbrokerv1.EchoResponse, error) {
	ns, err := s.lookup(r.GetNamespace())
	if err != nil {
		return nil, err
	}
	inode := ns.inode
	if s.d.f.echoOtherInode {
		inode++
	}
	return &nsbrokerv1.EchoResponse{Payload: r.GetPayload(), NetnsInode: inode}, nil
}

func (s *server) Stats(_ context.Context, r *nsbrokerv1.StatsRequest) (*nsbrokerv1.StatsResponse, error) {
	ns, err := s.lookup(r.GetNamespace())
	if err != nil {
		return nil, err
	}
	return &nsbrokerv1.StatsResponse{Namespaces: []*nsbrokerv1.NamespaceStats{{Namespace: ns.name}}}, nil
}

func (s *server) Publish(_ context.Context, r *nsbrokerv1.PublishRequest) (*nsbrokerv1.PublishResponse, error) {
	ns, err := s.lookup(r.GetNamespace())
	if err != nil {
		return nil, err
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	g := r.GetGroup()
	ns.seq[g]++
	seq := ns.seq[g]
	ev := &nsbrokerv1.Event{Namespace: ns.name, Group: g, Seq: seq, Payload: r.GetPayload(), NetnsInode: ns.inode}
	if d.f.wrongInode {
		ev.NetnsInode++
	}
	d.kernelMulticast(ns, ev)
	switch {
	case d.f.dropSeq == seq:
		if d.f.dropWithGap {
			d.deliver(ns, g, &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Gap{
				Gap: &nsbrokerv1.Gap{Namespace: ns.name, Group: g, FromSeq: seq, ToSeq: seq, Reason: nsbrokerv1.LossReason_LOSS_REASON_QUEUE_FULL}}})
		}
	case d.f.swapSeq == seq:
		ns.held[g] = ev
	default:
		d.deliverEvent(ns, ev)
		if d.f.dupSeq == seq {
			d.deliverEvent(ns, ev)
		}
		if h := ns.held[g]; h != nil {
			delete(ns.held, g)
			d.deliverEvent(ns, h)
		}
	}
	return &nsbrokerv1.PublishResponse{Group: g, Seq: seq, Listeners: true}, nil
}

// deliverEvent queues ev for ns's subscribers (and, with the leak fault,
// for another namespace's).
func (d *fakeDaemon) deliverEvent(ns *fakeNS, ev *nsbrokerv1.Event) {
	item := &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Event{Event: ev}}
	d.deliver(ns, ev.GetGroup(), item)
	if ns.name == d.f.leakFrom {
		if to := d.attached[d.f.leakTo]; to != nil {
			d.deliver(to, ev.GetGroup(), item)
		}
	}
}

func (d *fakeDaemon) deliver(ns *fakeNS, group uint32, item *nsbrokerv1.SubscribeResponse) {
	for sub := range ns.subs {
		if sub.group == group {
			sub.ch <- item
		}
	}
}

func (s *server) Subscribe(r *nsbrokerv1.SubscribeRequest, stream nsbrokerv1.Broker_SubscribeServer) error {
	ns, err := s.lookup(r.GetNamespace())
	if err != nil {
		return err
	}
	if len(r.GetGroups()) != 1 {
		return status.Error(codes.Unimplemented, "the fake takes one group per subscription")
	}
	sub := &fakeSub{group: r.GetGroups()[0], ch: make(chan *nsbrokerv1.SubscribeResponse, 4096)}
	d := s.d
	d.mu.Lock()
	if ns.subs == nil {
		d.mu.Unlock()
		return notFound(ns.name)
	}
	ns.subs[sub] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(ns.subs, sub)
		d.mu.Unlock()
	}()
	for {
		select {
		case item, ok := <-sub.ch:
			if !ok {
				return status.Error(codes.Aborted, "namespace detached")
			}
			if err := stream.Send(item); err != nil {
				return err
			}
			if d.f.endStream {
				return status.Error(codes.Internal, "fault: stream ended")
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// The fake kernel's NETLINK_LISTEN_ALL_NSID semantics (af_netlink.c
// do_one_broadcast), bent by the kernel faults.

type fakeListener struct {
	d            *fakeDaemon
	group        uint32
	unprivileged bool
	ch           chan ListenedEvent
}

func (l *fakeListener) Next(ctx context.Context) (ListenedEvent, error) {
	select {
	case ev := <-l.ch:
		return ev, nil
	case <-ctx.Done():
		return ListenedEvent{}, ctx.Err()
	}
}

func (l *fakeListener) Close() error {
	l.d.mu.Lock()
	defer l.d.mu.Unlock()
	l.d.listeners = slices.DeleteFunc(l.d.listeners, func(o *fakeListener) bool { return o == l })
	return nil
}

// kernelMulticast delivers a tenant namespace's event to the listeners in
// the initial namespace that the kernel would deliver it to.
func (d *fakeDaemon) kernelMulticast(ns *fakeNS, ev *nsbrokerv1.Event) {
	nsid, has := d.nsids[ns.name]
	for _, l := range d.listeners {
		if l.group != ev.GetGroup() {
			continue
		}
		deliver := has && !l.unprivileged && !d.f.kernelNoDocumented
		deliver = deliver || (d.f.kernelNoNsidCross && !l.unprivileged) || (d.f.kernelUnprivCross && has)
		if deliver {
			l.ch <- ListenedEvent{Group: ev.GetGroup(), Seq: ev.GetSeq(), Inode: ns.inode, Payload: string(ev.GetPayload()), Nsid: nsid, HasNsid: has}
		}
	}
}

type fakeKernel struct{ d *fakeDaemon }

func (k fakeKernel) Inode() uint64 { return initInode }

func (k fakeKernel) Listen(group uint32, unprivileged bool) (Listener, error) {
	l := &fakeListener{d: k.d, group: group, unprivileged: unprivileged, ch: make(chan ListenedEvent, 64)}
	k.d.mu.Lock()
	defer k.d.mu.Unlock()
	k.d.listeners = append(k.d.listeners, l)
	return l, nil
}

func (k fakeKernel) Publish(group uint32, payload []byte) (uint64, error) {
	d := k.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.initSeq[group]++
	for _, l := range d.listeners {
		if l.group == group {
			l.ch <- ListenedEvent{Group: group, Seq: d.initSeq[group], Inode: initInode, Payload: string(payload)}
		}
	}
	return d.initSeq[group], nil
}

func (k fakeKernel) Nsid(name string) (int32, bool, error) {
	k.d.mu.Lock()
	defer k.d.mu.Unlock()
	id, ok := k.d.nsids[name]
	return id, ok, nil
}

func (k fakeKernel) AssignNsid(name string) (int32, error) {
	k.d.mu.Lock()
	defer k.d.mu.Unlock()
	id := int32(100 + len(k.d.nsids))
	k.d.nsids[name] = id
	return id, nil
}

// fakeEnv serves the fake daemon over bufconn: one server for the admin,
// one per tenant.
type fakeEnv struct {
	t      *testing.T
	d      *fakeDaemon
	admin  nsbrokerv1.BrokerClient
	kernel bool
}

func newFakeEnv(t *testing.T, f faults) *fakeEnv {
	e := &fakeEnv{t: t, d: newFakeDaemon(f), kernel: true}
	cl, closer := e.serve("")
	t.Cleanup(func() { closer.Close() })
	e.admin = cl
	return e
}

// serve starts a server for identity tenant and connects a client to it.
func (e *fakeEnv) serve(tenant string) (nsbrokerv1.BrokerClient, io.Closer) {
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	nsbrokerv1.RegisterBrokerServer(g, &server{d: e.d, tenant: tenant})
	go g.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///fake",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		e.t.Fatal(err)
	}
	return nsbrokerv1.NewBrokerClient(conn), closeFunc(func() error {
		conn.Close()
		g.Stop()
		return nil
	})
}

type closeFunc func() error

func (f closeFunc) Close() error { return f() }

func (e *fakeEnv) Admin() nsbrokerv1.BrokerClient { return e.admin }

func (e *fakeEnv) Tenant(_ context.Context, name string) (nsbrokerv1.BrokerClient, io.Closer, error) {
	cl, closer := e.serve(name)
	return cl, closer, nil
}

func (e *fakeEnv) CreateNamespace(name string) error {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	if _, ok := e.d.inodes[name]; ok {
		return fmt.Errorf("%s exists", name)
	}
	e.d.nextInode++
	e.d.inodes[name] = e.d.nextInode
	return nil
}

func (e *fakeEnv) DeleteNamespace(name string) error {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	if _, ok := e.d.inodes[name]; !ok {
		return fmt.Errorf("%s does not exist", name)
	}
	delete(e.d.inodes, name)
	return nil
}

func (e *fakeEnv) Inode(name string) (uint64, error) {
	e.d.mu.Lock()
	defer e.d.mu.Unlock()
	inode, ok := e.d.inodes[name]
	if !ok {
		return 0, fmt.Errorf("%s does not exist", name)
	}
	return inode, nil
}

func (e *fakeEnv) Kernel() Kernel {
	if !e.kernel {
		return nil
	}
	return fakeKernel{e.d}
}

func attachRequest(name string) *nsbrokerv1.AttachNamespaceRequest {
	return &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}}}
}
