package server

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/internal/quote"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// maxStatusMessage is the most a refusal of an over-long name may say, in
// bytes: far below the 8 KiB of header gRPC C-core and Java clients take.
const maxStatusMessage = 1024

// nameCall calls an rpc as c with name in its namespace field (the attach
// name, for the attach rpcs, with a fresh namespace to attach). When the
// call succeeds it checks that it acted on the namespace named so.
type nameCall func(t *testing.T, e *env, c nsbrokerv1.BrokerClient, name string) error

// nameCalls has a call for every rpc whose request holds a namespace name.
var nameCalls = map[string]nameCall{
	"GetNamespace": func(t *testing.T, _ *env, c nsbrokerv1.BrokerClient, name string) error {
		r, err := c.GetNamespace(testContext(t), &nsbrokerv1.GetNamespaceRequest{Namespace: name})
		if err == nil && r.Name != name {
			t.Errorf("GetNamespace: got %.80q, want %.80q", r.Name, name)
		}
		return err
	},
	"Echo": func(t *testing.T, e *env, c nsbrokerv1.BrokerClient, name string) error {
		r, err := c.Echo(testContext(t), &nsbrokerv1.EchoRequest{Namespace: name, Payload: []byte("bound")})
		if err == nil && r.NetnsInode != uint64(attachedInode(t, e, name)) {
			t.Errorf("Echo: answered by inode %d, want %d", r.NetnsInode, attachedInode(t, e, name))
		}
		return err
	},
	"Publish": func(t *testing.T, _ *env, c nsbrokerv1.BrokerClient, name string) error {
		r, err := c.Publish(testContext(t), &nsbrokerv1.PublishRequest{Namespace: name, Group: matrixGroup, Payload: []byte("bound")})
		if err == nil && r.Seq != 1 {
			t.Errorf("Publish: seq %d, want 1 in a fresh namespace", r.Seq)
		}
		return err
	},
	"PublishStream": func(t *testing.T, _ *env, c nsbrokerv1.BrokerClient, name string) error {
		stream, err := c.PublishStream(testContext(t))
		if err != nil {
			return err
		}
		stream.Send(&nsbrokerv1.PublishRequest{Namespace: name, Group: matrixGroup, Payload: []byte("bound")})
		r, err := stream.CloseAndRecv()
		if err == nil && r.Published != 1 {
			t.Errorf("PublishStream: published %d, want 1", r.Published)
		}
		return err
	},
	"Subscribe": func(t *testing.T, e *env, c nsbrokerv1.BrokerClient, name string) error {
		ctx, cancel := context.WithCancel(testContext(t))
		defer cancel()
		stream, err := c.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: name, Groups: []uint32{matrixGroup}})
		if err != nil {
			return err
		}
		if _, err := stream.Header(); err != nil {
			return err
		}
		// An event published where name is attached must reach the
		// stream; a refused stream ends with its status instead.
		if in, err := e.b.Get(name); err == nil {
			e.k.Publish(in.Inode, matrixGroup, []byte("here"))
		}
		r, err := stream.Recv()
		if err == nil && (r.GetEvent().GetNamespace() != name || string(r.GetEvent().GetPayload()) != "here") {
			t.Errorf("Subscribe: got %v, want the event published", r)
		}
		return err
	},
	"Stats": func(t *testing.T, _ *env, c nsbrokerv1.BrokerClient, name string) error {
		r, err := c.Stats(testContext(t), &nsbrokerv1.StatsRequest{Namespace: name})
		if err == nil && (len(r.Namespaces) != 1 || r.Namespaces[0].Namespace != name) {
			t.Errorf("Stats: got %d namespaces, want only the one named", len(r.Namespaces))
		}
		return err
	},
	"DetachNamespace": func(t *testing.T, e *env, c nsbrokerv1.BrokerClient, name string) error {
		_, err := c.DetachNamespace(testContext(t), &nsbrokerv1.DetachNamespaceRequest{Namespace: name})
		if _, getErr := e.b.Get(name); err == nil && getErr == nil {
			t.Errorf("DetachNamespace succeeded, but the name is still attached")
		}
		return err
	},
	"AttachNamespace": func(t *testing.T, e *env, c nsbrokerv1.BrokerClient, name string) error {
		fresh, ns := newNamed(t)
		r, err := c.AttachNamespace(testContext(t), &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: byName(fresh)})
		return checkAttached(t, e, "AttachNamespace", name, ns, r, err)
	},
	"AttachNamespaces": func(t *testing.T, e *env, c nsbrokerv1.BrokerClient, name string) error {
		fresh, ns := newNamed(t)
		r, err := c.AttachNamespaces(testContext(t), &nsbrokerv1.AttachNamespacesRequest{
			Namespaces: []*nsbrokerv1.AttachNamespaceRequest{{Name: name, Ref: byName(fresh)}}})
		var got *nsbrokerv1.Namespace
		if err == nil {
			if len(r.Results) != 1 {
				t.Fatalf("AttachNamespaces of one namespace: %d results", len(r.Results))
			}
			got = r.Results[0].Namespace
			if c := r.Results[0].Code; c != 0 {
				err = status.Error(codes.Code(c), r.Results[0].Message)
			}
		}
		return checkAttached(t, e, "AttachNamespaces", name, ns, got, err)
	},
}

// attachedInode is the inode of the namespace attached under name.
func attachedInode(t *testing.T, e *env, name string) uint32 {
	in, err := e.b.Get(name)
	if err != nil {
		t.Fatalf("Get(%.80q): %v", name, err)
	}
	return in.Inode
}

// namedRPCs lists, in the way the authorization matrix walks the service,
// every rpc whose request holds a namespace name anywhere.
func namedRPCs(t *testing.T) []string {
	sd := nsbrokerv1.File_nsbroker_v1_broker_proto.Services().ByName("Broker")
	var rpcs []string
	for _, rpc := range serviceRPCs() {
		md := sd.Methods().ByName(protoreflect.Name(rpc))
		if md == nil {
			t.Fatalf("%s: no such method in the service descriptor", rpc)
		}
		if holdsName(md.Input(), map[protoreflect.FullName]bool{}) {
			rpcs = append(rpcs, rpc)
		}
	}
	slices.Sort(rpcs)
	return rpcs
}

// serviceRPCs is every rpc of the service.
func serviceRPCs() []string {
	var rpcs []string
	for _, m := range nsbrokerv1.Broker_ServiceDesc.Methods {
		rpcs = append(rpcs, m.MethodName)
	}
	for _, s := range nsbrokerv1.Broker_ServiceDesc.Streams {
		rpcs = append(rpcs, s.StreamName)
	}
	return rpcs
}

// holdsName reports whether m, or a message in it, has a string field
// namespace or name.
func holdsName(m protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[m.FullName()] {
		return false
	}
	seen[m.FullName()] = true
	fields := m.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		switch {
		case f.Kind() == protoreflect.StringKind && (f.Name() == "namespace" || f.Name() == "name"):
			return true
		case f.Kind() == protoreflect.MessageKind && holdsName(f.Message(), seen):
			return true
		}
	}
	return false
}

// TestNameCallsCoverEveryNamedRPC fails when an rpc whose request holds a
// namespace name has no call in nameCalls, or a call is for no such rpc.
func TestNameCallsCoverEveryNamedRPC(t *testing.T) {
	named := namedRPCs(t)
	for _, rpc := range named {
		if nameCalls[rpc] == nil {
			t.Errorf("%s takes a namespace name but has no call in nameCalls", rpc)
		}
	}
	for rpc := range nameCalls {
		if !slices.Contains(named, rpc) {
			t.Errorf("nameCalls has %s, which takes no namespace name", rpc)
		}
	}
	// The walk itself must find the rpcs known to take a name.
	for _, rpc := range []string{"AttachNamespaces", "DetachNamespace", "Subscribe"} {
		if !slices.Contains(named, rpc) {
			t.Errorf("namedRPCs misses %s: got %v", rpc, named)
		}
	}
}

// TestIntegrationNameBound calls every rpc that takes a namespace name,
// as the admin and as a tenant, with a name of 100 KiB and one of
// broker.MaxNameLen+1 bytes: each is refused with INVALID_ARGUMENT (or
// PERMISSION_DENIED for what the caller may not call at all), in a short
// message that names the limit and shows a bounded part of the name, and
// nothing changes. A name of exactly broker.MaxNameLen bytes is taken: it
// works for the admin, and is an unreachable NOT_FOUND for the tenant.
func TestIntegrationNameBound(t *testing.T) {
	e := newEnv(t, nil)
	principals := []principal{
		{name: "admin", client: e.adminClient(), admin: true},
		{name: "tenantA", client: e.localClient("A"), home: "A"},
	}
	over := map[string]string{
		"100KiB": strings.Repeat("x", 100*1024),
		"max+1":  strings.Repeat("o", broker.MaxNameLen+1),
	}
	for _, rpc := range namedRPCs(t) {
		call := nameCalls[rpc]
		if call == nil {
			t.Errorf("%s: no call in nameCalls", rpc)
			continue
		}
		attaches := strings.HasPrefix(rpc, "Attach")
		for _, p := range principals {
			permitted := p.admin || slices.Contains(access[rpc], RoleTenant)
			for label, name := range over {
				t.Run(p.name+"/"+rpc+"/"+label, func(t *testing.T) {
					before := e.attachedNames()
					err := call(t, e, p.client, name)
					st := status.Convert(err)
					want := codes.InvalidArgument
					if !permitted {
						want = codes.PermissionDenied
					}
					if st.Code() != want {
						t.Fatalf("got %v %.200q, want %v", st.Code(), st.Message(), want)
					}
					if len(st.Message()) >= maxStatusMessage || strings.Contains(st.Message(), name[:quote.Max+1]) {
						t.Errorf("message of %d bytes shows more than %d bytes of the name: %.300q", len(st.Message()), quote.Max, st.Message())
					}
					if want == codes.InvalidArgument && !strings.Contains(st.Message(), strconv.Itoa(broker.MaxNameLen)+" bytes") {
						t.Errorf("message %q does not name the limit of %d bytes", st.Message(), broker.MaxNameLen)
					}
					if after := e.attachedNames(); !slices.Equal(after, before) {
						t.Errorf("a refused call changed the attached namespaces from %v to %v", before, after)
					}
				})
			}
			t.Run(p.name+"/"+rpc+"/max", func(t *testing.T) {
				name := rpc + "-" + p.name + "-"
				name += strings.Repeat("m", broker.MaxNameLen-len(name))
				if !attaches && p.admin {
					// Attached under the longest name, so that the rpc
					// can act on it.
					fresh, _ := newNamed(t)
					if _, err := e.b.Attach(context.Background(), name, nsmgr.Ref{Name: fresh}); err != nil {
						t.Fatalf("Attach under a name of %d bytes: %v", len(name), err)
					}
					t.Cleanup(func() { e.b.Detach(name) })
				}
				want := codes.OK
				switch {
				case !permitted:
					want = codes.PermissionDenied
				case !p.admin:
					want = codes.NotFound // another tenant's name
				}
				if got := status.Convert(call(t, e, p.client, name)); got.Code() != want {
					t.Fatalf("a name of %d bytes: got %v %q, want %v", len(name), got.Code(), got.Message(), want)
				}
			})
		}
	}
}

// attachedNames is the names the broker has attached, sorted.
func (e *env) attachedNames() []string {
	var names []string
	for _, in := range e.b.List() {
		names = append(names, in.Name)
	}
	return names
}

// TestIntegrationRefBound attaches by references at and over their
// bounds: a name under /run/netns of nsmgr.NameMax bytes, a path of
// nsmgr.PathMax bytes are looked for (NOT_FOUND, as none exists); one
// byte more, or 100 KiB, is INVALID_ARGUMENT in a short message, in
// AttachNamespace and in each entry of AttachNamespaces.
func TestIntegrationRefBound(t *testing.T) {
	e := newEnv(t, nil)
	admin := e.adminClient()
	path := func(n int) string { return "/nsb-no-such/" + strings.Repeat("p/", n)[:n-len("/nsb-no-such/")] }
	tests := []struct {
		what string
		ref  *nsbrokerv1.NamespaceRef
		want codes.Code
	}{
		{"name of NameMax bytes", byName(strings.Repeat("n", nsmgr.NameMax)), codes.NotFound},
		{"name of NameMax+1 bytes", byName(strings.Repeat("n", nsmgr.NameMax+1)), codes.InvalidArgument},
		{"name of 100 KiB", byName(strings.Repeat("n", 100*1024)), codes.InvalidArgument},
		{"path of PathMax bytes", byPath(path(nsmgr.PathMax)), codes.NotFound},
		{"path of PathMax+1 bytes", byPath(path(nsmgr.PathMax + 1)), codes.InvalidArgument},
		{"path of 100 KiB", byPath(path(100 * 1024)), codes.InvalidArgument},
	}
	for _, tt := range tests {
		req := &nsbrokerv1.AttachNamespaceRequest{Name: "nsb-ref-bound", Ref: tt.ref}
		_, err := admin.AttachNamespace(testContext(t), req)
		r, manyErr := admin.AttachNamespaces(testContext(t), &nsbrokerv1.AttachNamespacesRequest{
			Namespaces: []*nsbrokerv1.AttachNamespaceRequest{req}})
		if manyErr != nil || len(r.Results) != 1 {
			t.Fatalf("AttachNamespaces, %s: %v (%d results)", tt.what, manyErr, len(r.GetResults()))
		}
		entry := status.New(codes.Code(r.Results[0].Code), r.Results[0].Message)
		for _, st := range []*status.Status{status.Convert(err), entry} {
			if st.Code() != tt.want || len(st.Message()) >= maxStatusMessage {
				t.Errorf("attach, %s: got %v %.300q (%d bytes), want %v in under %d bytes",
					tt.what, st.Code(), st.Message(), len(st.Message()), tt.want, maxStatusMessage)
			}
		}
	}
	if names := e.attachedNames(); len(names) != 2 {
		t.Errorf("attached after refused attaches: %v, want only A and B", names)
	}
}

func byPath(path string) *nsbrokerv1.NamespaceRef {
	return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Path{Path: path}}
}
