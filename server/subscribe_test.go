package server

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// subscribed opens a subscription and waits until it is in place.
func subscribed(t *testing.T, c nsbrokerv1.BrokerClient, ns string, groups ...uint32) grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse] {
	t.Helper()
	s, err := c.Subscribe(testContext(t), &nsbrokerv1.SubscribeRequest{Namespace: ns, Groups: groups})
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", ns, err)
	}
	if md, _ := s.Header(); md == nil {
		_, err := s.Recv()
		t.Fatalf("Subscribe(%q): %v", ns, err)
	}
	return s
}

func recvItem(t *testing.T, s grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse]) *nsbrokerv1.SubscribeResponse {
	t.Helper()
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return r
}

func TestIntegrationSubscribeEventsAndGaps(t *testing.T) {
	e := newEnv(t, nil)
	name, inode := e.names["A"], e.inode("A")
	s := subscribed(t, e.localClient("A"), "", 1, 2)
	e.k.Publish(inode, 1, []byte("one"))
	e.k.Publish(inode, 2, []byte("two"))
	e.k.DropEvents(inode, 3) // group 1 seq 2..4 overrun the daemon's socket
	for range 3 {
		e.k.Publish(inode, 1, nil)
	}
	e.k.Publish(inode, 1, []byte("five"))

	event := func(group uint32, seq uint64, payload string) *nsbrokerv1.SubscribeResponse {
		return &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Event{Event: &nsbrokerv1.Event{
			Namespace: name, Group: group, Seq: seq, Payload: []byte(payload), NetnsInode: uint64(inode), Epoch: 1, Instance: 1}}}
	}
	want := []*nsbrokerv1.SubscribeResponse{
		event(1, 1, "one"),
		event(2, 1, "two"),
		{Item: &nsbrokerv1.SubscribeResponse_Gap{Gap: &nsbrokerv1.Gap{Namespace: name, Group: 1, FromSeq: 2, ToSeq: 4,
			Reason: nsbrokerv1.LossReason_LOSS_REASON_KERNEL_OVERRUN, Instance: 1}}},
		event(1, 5, "five"),
	}
	for i, w := range want {
		got := recvItem(t, s)
		if ev := got.GetEvent(); ev != nil {
			if ev.Timestamp == nil {
				t.Errorf("item %d: event without a timestamp", i)
			}
			ev.Timestamp = nil // the fake kernel's clock
		}
		if !proto.Equal(got, w) {
			t.Fatalf("item %d: got %v, want %v", i, got, w)
		}
	}
}

func TestIntegrationSubscriptionEndsWithTheNamespace(t *testing.T) {
	e := newEnv(t, nil)
	admin := e.adminClient()
	// Detached: the admin's and the tenant's streams end with ABORTED.
	adminSub := subscribed(t, admin, e.names["A"], 1)
	tenantSub := subscribed(t, e.localClient("A"), "", 1)
	watch, err := e.localClient("A").WatchNamespaces(testContext(t), &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := watch.Recv(); err != nil || ev.Kind != nsbrokerv1.NamespaceEvent_KIND_ATTACHED {
		t.Fatalf("tenant watch: got %v (%v), want ATTACHED", ev, err)
	}
	if _, err := admin.DetachNamespace(testContext(t), &nsbrokerv1.DetachNamespaceRequest{Namespace: e.names["A"]}); err != nil {
		t.Fatal(err)
	}
	_, err = adminSub.Recv()
	wantStatus(t, "admin subscription after detach", err, codes.Aborted, "namespace detached")
	_, err = tenantSub.Recv()
	wantStatus(t, "tenant subscription after detach", err, codes.Aborted, "namespace detached")
	// The tenant's watch reports the detach and ends: its namespace is gone.
	if ev, err := watch.Recv(); err != nil || ev.Kind != nsbrokerv1.NamespaceEvent_KIND_DETACHED || ev.Namespace.Name != e.names["A"] {
		t.Fatalf("tenant watch: got %v (%v), want DETACHED %s", ev, err, e.names["A"])
	}
	_, err = watch.Recv()
	wantStatus(t, "tenant watch after its namespace was detached", err, codes.Aborted, "detached")

	// Deleted: the stream ends with ABORTED saying it is gone.
	sub := subscribed(t, admin, e.names["B"], 1)
	if err := nsmgr.DeleteNamed(e.names["B"]); err != nil {
		t.Fatal(err)
	}
	_, err = sub.Recv()
	wantStatus(t, "subscription after the namespace was deleted", err, codes.Aborted, "namespace gone")
}

func TestIntegrationSubscriptionEndsAtShutdown(t *testing.T) {
	e := newEnv(t, nil)
	sub := subscribed(t, e.localClient("A"), "", 1)
	watch, err := e.adminClient().WatchNamespaces(testContext(t), &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	e.b.Close()
	_, err = sub.Recv()
	wantStatus(t, "subscription at shutdown", err, codes.Unavailable, "server shutting down")
	for err == nil {
		_, err = watch.Recv()
	}
	wantStatus(t, "watch at shutdown", err, codes.Unavailable, "server shutting down")
}

// A local tenant reaches its namespace, not whatever is attached under its
// name later.
func TestIntegrationLocalTenantPinnedToItsNamespace(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tenant := e.localClient("A")
	name := e.names["A"]
	if r, err := tenant.Echo(testContext(t), &nsbrokerv1.EchoRequest{}); err != nil || r.NetnsInode != uint64(e.inode("A")) {
		t.Fatalf("Echo(): got %v (%v), want inode %d", r, err, e.inode("A"))
	}
	if err := e.b.Detach(name); err != nil {
		t.Fatal(err)
	}
	// B's namespace, attached again under A's name.
	if _, err := e.b.Attach(ctx, name, nsmgr.Ref{Name: e.names["B"]}); err == nil {
		t.Fatal("attaching B twice succeeded")
	}
	other, ns := newNamed(t)
	if _, err := e.b.Attach(ctx, name, nsmgr.Ref{Name: other}); err != nil {
		t.Fatal(err)
	}
	_, err := tenant.Echo(testContext(t), &nsbrokerv1.EchoRequest{})
	wantStatus(t, "Echo() after the name moved to another namespace", err, codes.NotFound, `namespace "`+name+`" not attached`)
	if l, err := tenant.ListNamespaces(testContext(t), &nsbrokerv1.ListNamespacesRequest{}); err != nil || len(l.Namespaces) != 0 {
		t.Fatalf("ListNamespaces: got %v (%v), want none", l, err)
	}
	if r, err := e.adminClient().Echo(testContext(t), &nsbrokerv1.EchoRequest{Namespace: name}); err != nil || r.NetnsInode != uint64(ns.Inode()) {
		t.Fatalf("admin Echo(%s): got %v (%v), want inode %d", name, r, err, ns.Inode())
	}
}
