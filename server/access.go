package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// The rpcs, by method name.
const (
	rpcListNamespaces  = "ListNamespaces"
	rpcGetNamespace    = "GetNamespace"
	rpcAttachNamespace = "AttachNamespace"
	rpcAttachMany      = "AttachNamespaces"
	rpcDetachNamespace = "DetachNamespace"
	rpcWatchNamespaces = "WatchNamespaces"
	rpcEcho            = "Echo"
	rpcPublish         = "Publish"
	rpcPublishStream   = "PublishStream"
	rpcSubscribe       = "Subscribe"
	rpcStats           = "Stats"
	rpcReleaseModule   = "ReleaseModule"
	rpcResumeModule    = "ResumeModule"
)

// everyone may call an rpc, each on the namespaces it may reach.
var (
	everyone  = []Role{RoleAdmin, RoleTenant}
	adminOnly = []Role{RoleAdmin}
)

// access says which roles may call each rpc. Every handler asks
// Server.authorize, which refuses an rpc missing here.
var access = map[string][]Role{
	rpcListNamespaces:  everyone,
	rpcGetNamespace:    everyone,
	rpcAttachNamespace: adminOnly,
	rpcAttachMany:      adminOnly,
	rpcDetachNamespace: adminOnly,
	rpcWatchNamespaces: everyone,
	rpcEcho:            everyone,
	rpcPublish:         everyone,
	rpcPublishStream:   everyone,
	rpcSubscribe:       everyone,
	rpcStats:           everyone,
	rpcReleaseModule:   adminOnly,
	rpcResumeModule:    adminOnly,
}

// authorize returns the caller's Identity if its role may call rpc.
func (s *Server) authorize(ctx context.Context, rpc string) (Identity, error) {
	id, ok := IdentityFromContext(ctx)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "the connection has no nsbroker identity")
	}
	for _, r := range access[rpc] {
		if r == id.Role {
			return id, nil
		}
	}
	return Identity{}, status.Errorf(codes.PermissionDenied, "%s is not permitted for %s", rpc, id.Role)
}

// authorizeNamespace authorizes rpc and resolves the namespace it names.
// The context it returns is ctx pinned to what was resolved (pinned): the
// handler passes it to the broker.
func (s *Server) authorizeNamespace(ctx context.Context, rpc, name string) (context.Context, Identity, string, error) {
	id, err := s.authorize(ctx, rpc)
	if err != nil {
		return ctx, Identity{}, "", err
	}
	name, err = s.resolve(id, name)
	return pinned(ctx, id), id, name, err
}

// pinned returns ctx pinned (broker.WithNamespaceID) to the namespace a
// tenant of a namespace-local socket lives in, the one resolve checked
// the name against: the broker then acts on the name only while it is
// attached to that namespace, whatever was detached and attached since.
// Other callers reach namespaces by name, and ctx is returned as it is.
func pinned(ctx context.Context, id Identity) context.Context {
	if id.netns == (nsmgr.ID{}) {
		return ctx
	}
	return broker.WithNamespaceID(ctx, id.netns)
}

// resolve returns the attach name a request's namespace field means for
// id: the tenant's only namespace when empty. A name longer than
// broker.MaxNameLen is InvalidArgument, whoever asks, before any lookup.
// A namespace id may not reach gets the same NotFound as one that is not
// attached.
func (s *Server) resolve(id Identity, name string) (string, error) {
	if err := broker.CheckName(name); err != nil {
		return "", ToStatus(err)
	}
	if name = requested(id, name); name == "" {
		return "", status.Error(codes.InvalidArgument, "namespace is required")
	}
	if !id.may(name) {
		return "", notFound(name)
	}
	if id.netns != (nsmgr.ID{}) {
		in, err := s.b.Get(name)
		if err != nil {
			return "", ToStatus(err)
		}
		if in.ID != id.netns {
			return "", notFound(name)
		}
	}
	return name, nil
}

// requested is the attach name a request's namespace field means for id:
// the field itself, or for a tenant of exactly one namespace an empty
// field's meaning; "" when there is none.
func requested(id Identity, field string) string {
	if field == "" && id.Role == RoleTenant && len(id.Namespaces) == 1 {
		return id.Namespaces[0]
	}
	return field
}

// RequestedNamespace is the attach name a request's namespace field means
// for the caller of ctx, as every rpc resolves it: the field itself, or a
// tenant's only namespace for an empty one; "" when there is none. It
// says nothing of whether the caller may reach it (Reaches does).
func RequestedNamespace(ctx context.Context, field string) string {
	id, _ := IdentityFromContext(ctx)
	return requested(id, field)
}

// Reaches reports whether the caller of ctx may reach the namespace
// attached under name, by the rule every rpc follows: for a tenant of a
// namespace-local socket, only while the name is attached to the
// namespace its connection lives in. For services outside this Server
// that speak of namespaces, such as health.
func (s *Server) Reaches(ctx context.Context, name string) bool {
	id, ok := IdentityFromContext(ctx)
	if !ok || name == "" {
		return false
	}
	_, err := s.resolve(id, name)
	return err == nil
}

// visible reports whether id may see the attached namespace in.
func visible(id Identity, in broker.Info) bool {
	return id.may(in.Name) && (id.netns == (nsmgr.ID{}) || id.netns == in.ID)
}
