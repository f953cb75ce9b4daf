package attacher

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

var (
	// ErrNoNamespace means the namespace to attach or check cannot be
	// opened here: the path is missing, is no network namespace, or the
	// process has exited.
	ErrNoNamespace = errors.New("cannot open the network namespace")
	// ErrNotAttached means Check found the namespace not attached.
	ErrNotAttached = errors.New("namespace not attached")
	// ErrNameTaken means the name is attached to another namespace.
	ErrNameTaken = errors.New("name attached to another namespace")
)

// Attach attaches the namespace ref names under name and returns the
// attachment. When that namespace is attached already, under name or
// under another one (a daemon following /run/netns by itself, a second
// interface of the same pod), Attach returns that attachment. When name
// is attached to another namespace the error matches ErrNameTaken.
func (c *Client) Attach(ctx context.Context, name string, ref nsmgr.Ref) (*nsbrokerv1.Namespace, error) {
	id, err := identify(ref)
	if err != nil {
		return nil, err
	}
	ns, err := c.api.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: refToProto(ref)})
	if err == nil {
		return ns, nil
	}
	if status.Code(err) != codes.AlreadyExists {
		return nil, fmt.Errorf("attach %s as %q: %w", ref, name, rpcErr(err))
	}
	ns, ferr := c.find(ctx, name, id)
	switch {
	case ferr != nil:
		return nil, ferr
	case ns == nil: // detached again since
		return nil, fmt.Errorf("attach %s as %q: %w", ref, name, rpcErr(err))
	}
	return ns, nil
}

// Check returns the attachment of the namespace ref names, under any
// name. The error matches ErrNotAttached when it is not attached, and
// ErrNameTaken when name is attached to another namespace instead.
func (c *Client) Check(ctx context.Context, name string, ref nsmgr.Ref) (*nsbrokerv1.Namespace, error) {
	id, err := identify(ref)
	if err != nil {
		return nil, err
	}
	ns, err := c.find(ctx, name, id)
	if err != nil {
		return nil, err
	}
	if ns == nil {
		return nil, fmt.Errorf("%s (net:[%d]): %w", ref, id.Ino, ErrNotAttached)
	}
	return ns, nil
}

// find returns the attachment of the namespace id, nil if there is none,
// or an ErrNameTaken error if name is attached to another namespace.
func (c *Client) find(ctx context.Context, name string, id nsmgr.ID) (*nsbrokerv1.Namespace, error) {
	resp, err := c.api.ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", rpcErr(err))
	}
	var named *nsbrokerv1.Namespace
	for _, ns := range resp.GetNamespaces() {
		if ns.GetDev() == id.Dev && ns.GetInode() == id.Ino {
			return ns, nil
		}
		if ns.GetName() == name {
			named = ns
		}
	}
	if named != nil {
		return nil, fmt.Errorf("%w: %q is net:[%d], not net:[%d]", ErrNameTaken, name, named.GetInode(), id.Ino)
	}
	return nil, nil
}

// identify returns the identity of the namespace ref names.
func identify(ref nsmgr.Ref) (nsmgr.ID, error) {
	ns, err := nsmgr.Open(ref)
	if err != nil {
		return nsmgr.ID{}, fmt.Errorf("%w: %w", ErrNoNamespace, err)
	}
	defer ns.Close()
	return ns.ID(), nil
}

func refToProto(ref nsmgr.Ref) *nsbrokerv1.NamespaceRef {
	switch {
	case ref.Name != "":
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: ref.Name}}
	case ref.PID != 0:
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(ref.PID)}}
	}
	return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Path{Path: ref.Path}}
}
