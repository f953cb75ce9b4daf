package server

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationAttachNamespaces attaches a batch in which some entries
// fail: each result says what AttachNamespace would have, in the order of
// the request, and the failures leave the others attached.
func TestIntegrationAttachNamespaces(t *testing.T) {
	e := newEnv(t, nil)
	admin := e.adminClient()
	ctx := testContext(t)

	var fresh []string
	for range 5 {
		name, _ := newNamed(t)
		fresh = append(fresh, name)
	}
	type entry struct {
		req  *nsbrokerv1.AttachNamespaceRequest
		code codes.Code
	}
	entries := []entry{
		{&nsbrokerv1.AttachNamespaceRequest{Ref: byName(fresh[0])}, codes.OK},
		{&nsbrokerv1.AttachNamespaceRequest{Name: "nsb-batch-missing", Ref: byName("nsb-test-no-such")}, codes.NotFound},
		{&nsbrokerv1.AttachNamespaceRequest{Name: "nsb-batch-noref"}, codes.InvalidArgument},
		{&nsbrokerv1.AttachNamespaceRequest{Name: e.names["A"], Ref: byName(fresh[1])}, codes.AlreadyExists},
		{&nsbrokerv1.AttachNamespaceRequest{Name: "nsb-batch-again", Ref: byName(e.names["B"])}, codes.AlreadyExists},
		{&nsbrokerv1.AttachNamespaceRequest{Ref: byName(fresh[2])}, codes.OK},
		{&nsbrokerv1.AttachNamespaceRequest{Ref: byName(fresh[3])}, codes.OK},
		{&nsbrokerv1.AttachNamespaceRequest{Name: "nsb-batch-4", Ref: byName(fresh[4])}, codes.OK},
	}
	req := &nsbrokerv1.AttachNamespacesRequest{}
	for _, en := range entries {
		req.Namespaces = append(req.Namespaces, en.req)
	}
	r, err := admin.AttachNamespaces(ctx, req)
	if err != nil {
		t.Fatalf("AttachNamespaces: %v", err)
	}
	if len(r.Results) != len(entries) {
		t.Fatalf("AttachNamespaces: %d results for %d entries", len(r.Results), len(entries))
	}
	for i, en := range entries {
		res := r.Results[i]
		if got := codes.Code(res.Code); got != en.code {
			t.Errorf("entry %d (%v): code %v %q, want %v", i, en.req, got, res.Message, en.code)
			continue
		}
		name := en.req.Name
		if name == "" {
			name = en.req.GetRef().GetName()
		}
		if en.code != codes.OK {
			if res.Message == "" || res.Namespace != nil {
				t.Errorf("entry %d: failed without a message, or with a namespace: %v", i, res)
			}
			// The same request alone fails the same way.
			_, err := admin.AttachNamespace(ctx, en.req)
			if st := status.Convert(err); st.Code() != en.code || st.Message() != res.Message {
				t.Errorf("entry %d: AttachNamespace alone says %v %q, the batch said %v %q",
					i, st.Code(), st.Message(), codes.Code(res.Code), res.Message)
			}
			continue
		}
		in, err := e.b.Get(name)
		if err != nil || res.Namespace.GetName() != name || res.Namespace.GetInode() != uint64(in.Inode) {
			t.Errorf("entry %d: result %v, broker has %v (%v)", i, res.Namespace, in, err)
		}
	}
	if n := len(e.b.List()); n != 2+4 {
		t.Errorf("%d namespaces attached after the batch, want 6 (A, B and four of the batch)", n)
	}
}

// TestIntegrationAttachNamespacesTooMany refuses a request over the limit
// as a whole: nothing of it is attached.
func TestIntegrationAttachNamespacesTooMany(t *testing.T) {
	e := newEnv(t, nil)
	name, _ := newNamed(t)
	req := &nsbrokerv1.AttachNamespacesRequest{}
	req.Namespaces = append(req.Namespaces, &nsbrokerv1.AttachNamespaceRequest{Ref: byName(name)})
	for i := range MaxAttachMany {
		req.Namespaces = append(req.Namespaces, &nsbrokerv1.AttachNamespaceRequest{Ref: byName(fmt.Sprintf("nsb-none-%d", i))})
	}
	_, err := e.adminClient().AttachNamespaces(testContext(t), req)
	wantStatus(t, "AttachNamespaces over the limit", err, codes.InvalidArgument, "at most 10000")
	if _, err := e.b.Get(name); err == nil {
		t.Errorf("a refused AttachNamespaces attached %s", name)
	}
}
