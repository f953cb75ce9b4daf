package server

import (
	"context"
	"slices"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/nsbroker/nsbroker/nsmgr"
)

// Role is what a caller may do.
type Role int

const (
	// RoleAdmin may call every rpc on every namespace.
	RoleAdmin Role = iota + 1
	// RoleTenant may reach only its own namespaces, and may not attach or
	// detach.
	RoleTenant
)

func (r Role) String() string {
	switch r {
	case RoleAdmin:
		return "admin"
	case RoleTenant:
		return "tenant"
	}
	return "none"
}

// Identity is who is at the other end of a connection.
type Identity struct {
	Role Role
	// Tenant is the tenant's name, "" for admin. The tenant of a
	// namespace-local socket is named after its namespace.
	Tenant string
	// Namespaces are the attach names a tenant may reach.
	Namespaces []string
	// Peer describes the connection, for logs.
	Peer string

	// netns is the network namespace a namespace-local tenant's
	// connection lives in. The tenant reaches its namespace only while the
	// name is still attached to that very namespace, so a name detached
	// and attached again to another namespace is out of its reach. Zero
	// for other identities.
	netns nsmgr.ID
}

// may reports whether the identity may reach the namespace attached under
// name. It does not look at what the name is attached to; see Server.resolve.
func (id Identity) may(name string) bool {
	return id.Role == RoleAdmin || slices.Contains(id.Namespaces, name)
}

// AuthInfo carries a connection's Identity through gRPC; handlers read it
// back with IdentityFromContext.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Identity Identity

	// refusal is set on a connection over a limit of its tenant: it is
	// kept only to tell its rpcs so.
	refusal *limitError
	// guard counts the refusals of a tenant connection (nil for the
	// admin's).
	guard *connGuard
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return authType }

const authType = "nsbroker"

// IdentityFromContext returns the Identity of the connection an rpc
// arrived on, if that connection was set up by Credentials.
func IdentityFromContext(ctx context.Context) (Identity, bool) {
	ai, ok := peerAuth(ctx)
	return ai.Identity, ok
}

// peerAuth returns the AuthInfo of the connection an rpc arrived on.
func peerAuth(ctx context.Context) (AuthInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return AuthInfo{}, false
	}
	switch ai := p.AuthInfo.(type) {
	case AuthInfo:
		return ai, true
	case *AuthInfo:
		if ai != nil {
			return *ai, true
		}
	}
	return AuthInfo{}, false
}
