package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// wantCode checks that err is a gRPC status with the code, and returns
// its message.
func wantCode(t *testing.T, what string, err error, code codes.Code) string {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Errorf("%s: got %v, want code %v", what, err, code)
	}
	return st.Message()
}

// TestIntegrationGRPCTenant drives the tenant's side through a Go gRPC
// client that dials @nsbroker inside the namespace, checking every rpc's
// code exactly.
func TestIntegrationGRPCTenant(t *testing.T) {
	d := startDaemon(t)
	a, b := attachNetns(t, d), attachNetns(t, d)
	admin, _ := d.client(t)
	tenant, _ := tenantClient(t, a.name)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()

	echo, err := tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("ping")})
	if err != nil || string(echo.GetPayload()) != "ping" || echo.GetNetnsInode() != uint64(a.inode) {
		t.Errorf("Echo in own namespace: got %v, %v; want payload \"ping\" from inode %d", echo, err, a.inode)
	}
	echo, err = tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: a.name, Payload: []byte("by name")})
	if err != nil || echo.GetNetnsInode() != uint64(a.inode) {
		t.Errorf("Echo naming own namespace: got %v, %v; want inode %d", echo, err, a.inode)
	}
	ns, err := tenant.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{})
	if err != nil || ns.GetName() != a.name || ns.GetInode() != uint64(a.inode) {
		t.Errorf("GetNamespace(\"\"): got %v, %v; want %s with inode %d", ns, err, a.name, a.inode)
	}
	list, err := tenant.ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	if err != nil || len(list.GetNamespaces()) != 1 || list.GetNamespaces()[0].GetName() != a.name {
		t.Errorf("ListNamespaces: got %v, %v; want only %s", list, err, a.name)
	}
	stats, err := tenant.Stats(ctx, &nsbrokerv1.StatsRequest{})
	if err != nil || len(stats.GetNamespaces()) != 1 || stats.GetNamespaces()[0].GetNamespace() != a.name || stats.GetModuleInstances() != 0 {
		t.Errorf("Stats: got %v, %v; want only %s and module_instances 0", stats, err, a.name)
	}

	// Another namespace, existing or not: NOT_FOUND, the same message.
	const none = "nsb-test-none"
	notFound := func(what string, call func(name string) error) {
		t.Helper()
		other := wantCode(t, what+" naming "+b.name, call(b.name), codes.NotFound)
		missing := wantCode(t, what+" naming "+none, call(none), codes.NotFound)
		if strings.ReplaceAll(other, b.name, none) != missing {
			t.Errorf("%s: messages differ: %q for %s, %q for %s", what, other, b.name, missing, none)
		}
	}
	notFound("Echo", func(n string) error {
		_, err := tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: n})
		return err
	})
	notFound("Publish", func(n string) error {
		_, err := tenant.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: n, Group: 1})
		return err
	})
	notFound("GetNamespace", func(n string) error {
		_, err := tenant.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: n})
		return err
	})
	notFound("Stats", func(n string) error {
		_, err := tenant.Stats(ctx, &nsbrokerv1.StatsRequest{Namespace: n})
		return err
	})
	notFound("Subscribe", func(n string) error {
		stream, err := tenant.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: n, Groups: []uint32{1}})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	})
	notFound("PublishStream", func(n string) error {
		stream, err := tenant.PublishStream(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&nsbrokerv1.PublishRequest{Namespace: n, Group: 1}); err != nil {
			_, err = stream.CloseAndRecv()
			return err
		}
		_, err = stream.CloseAndRecv()
		return err
	})

	// Tenants never attach or detach.
	_, err = tenant.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{
		Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: b.name}},
	})
	wantCode(t, "AttachNamespace", err, codes.PermissionDenied)
	_, err = tenant.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: a.name})
	wantCode(t, "DetachNamespace of own namespace", err, codes.PermissionDenied)

	// Bad arguments, checked before anything reaches the kernel.
	_, err = tenant.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 0})
	wantCode(t, "Publish to group 0", err, codes.InvalidArgument)
	_, err = tenant.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 33})
	wantCode(t, "Publish to group 33", err, codes.InvalidArgument)
	_, err = tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: make([]byte, 16385)})
	wantCode(t, "Echo of 16385 bytes", err, codes.InvalidArgument)
	sub, err := tenant.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{})
	if err == nil {
		_, err = sub.Recv()
	}
	wantCode(t, "Subscribe to no group", err, codes.InvalidArgument)

	// The tenant's own publish and subscription, and the admin's view of
	// the same namespace.
	subCtx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	tenantSub, err := tenant.Subscribe(subCtx, &nsbrokerv1.SubscribeRequest{Groups: []uint32{5}})
	if err != nil {
		t.Fatal(err)
	}
	adminSub, err := admin.Subscribe(subCtx, &nsbrokerv1.SubscribeRequest{Namespace: a.name, Groups: []uint32{5}})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, admin, a.name, 2)
	pub, err := tenant.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 5, Payload: []byte("mine")})
	if err != nil || pub.GetSeq() != 1 || !pub.GetListeners() {
		t.Fatalf("Publish: got %v, %v; want seq 1 with listeners", pub, err)
	}
	for who, stream := range map[string]interface {
		Recv() (*nsbrokerv1.SubscribeResponse, error)
	}{"tenant": tenantSub, "admin": adminSub} {
		item, err := stream.Recv()
		e := item.GetEvent()
		if err != nil || e.GetNamespace() != a.name || e.GetSeq() != 1 || e.GetGroup() != 5 ||
			e.GetNetnsInode() != uint64(a.inode) || string(e.GetPayload()) != "mine" {
			t.Errorf("%s subscription: got %v, %v; want event %s seq 1 group 5 inode %d \"mine\"", who, item, err, a.name, a.inode)
		}
	}

	// The watch shows the tenant its own namespace only.
	watch, err := tenant.WatchNamespaces(subCtx, &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := watch.Recv()
	if err != nil || ev.GetKind() != nsbrokerv1.NamespaceEvent_KIND_ATTACHED || ev.GetNamespace().GetName() != a.name {
		t.Errorf("WatchNamespaces: first event %v, %v; want ATTACHED %s", ev, err, a.name)
	}
	// Detaching the tenant's namespace ends its subscription with ABORTED.
	start := time.Now()
	if _, err := admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: a.name}); err != nil {
		t.Fatal(err)
	}
	_, err = adminSub.Recv()
	msg := wantCode(t, "admin subscription after detach", err, codes.Aborted)
	if !strings.Contains(msg, "detached") {
		t.Errorf("admin subscription after detach: message %q does not say detached", msg)
	}
	_, err = tenantSub.Recv()
	if c := status.Code(err); c != codes.Aborted && c != codes.Unavailable {
		t.Errorf("tenant subscription after detach: got %v, want ABORTED or UNAVAILABLE", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("subscriptions ended %v after the detach, want within 2s", took)
	}
	stopSub()
	d.stop(t)
}
