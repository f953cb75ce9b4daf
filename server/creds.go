package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
)

// TenantMap says which tenant a verified client certificate belongs to and
// which namespaces (attach names) that tenant may reach.
type TenantMap interface {
	Lookup(cert *x509.Certificate) (tenant string, namespaces []string, ok bool)
}

// transportCreds establishes the Identity of every connection.
type transportCreds struct {
	tls     credentials.TransportCredentials // nil: no TLS configured
	tenants func() TenantMap
}

// Credentials returns the transport credentials of the one gRPC server
// behind every listener. Connections from AdminListener and TenantListener
// carry their Identity already and need no handshake. Any other connection
// (TCP) must complete mutual TLS with tlsConfig, whose ClientCAs verify the
// client certificate (client certificates are required whatever
// tlsConfig.ClientAuth says), and the certificate must map to a tenant in
// tenants(); otherwise the handshake fails and the connection is closed.
// tenants is called at every handshake, so a reloaded map applies to new
// connections. A nil tlsConfig refuses every untagged connection.
func Credentials(tlsConfig *tls.Config, tenants func() TenantMap) credentials.TransportCredentials {
	c := &transportCreds{tenants: tenants}
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		c.tls = credentials.NewTLS(cfg)
	}
	return c
}

// errServerOnly: these credentials accept connections; they do not dial.
var errServerOnly = errors.New("nsbroker credentials are for the server side only")

func (c *transportCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errServerOnly
}

// ServerHandshake returns the Identity a listener tagged the connection
// with, or establishes one with mutual TLS.
func (c *transportCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if tc, ok := raw.(*taggedConn); ok {
		// Unix sockets never leave the host: private and intact.
		return tc, AuthInfo{
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
			Identity:       tc.id,
		}, nil
	}
	if c.tls == nil {
		return nil, nil, fmt.Errorf("connection from %v refused: TLS is not configured", raw.RemoteAddr())
	}
	conn, info, err := c.tls.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	id, err := c.tlsIdentity(raw.RemoteAddr(), info)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Identity:       id,
	}, nil
}

// tlsIdentity maps the verified client certificate of a TLS connection to
// its tenant.
func (c *transportCreds) tlsIdentity(remote net.Addr, info credentials.AuthInfo) (Identity, error) {
	ti, ok := info.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return Identity{}, fmt.Errorf("connection from %v refused: no verified client certificate", remote)
	}
	leaf := ti.State.VerifiedChains[0][0]
	var tm TenantMap
	if c.tenants != nil {
		tm = c.tenants()
	}
	if tm == nil {
		return Identity{}, fmt.Errorf("connection from %v refused: no tenants configured", remote)
	}
	tenant, namespaces, ok := tm.Lookup(leaf)
	if !ok {
		return Identity{}, fmt.Errorf("connection from %v refused: certificate %q names no tenant", remote, leaf.Subject.CommonName)
	}
	return Identity{
		Role:       RoleTenant,
		Tenant:     tenant,
		Namespaces: append([]string(nil), namespaces...),
		Peer:       fmt.Sprintf("tenant %s %v cn=%q", tenant, remote, leaf.Subject.CommonName),
	}, nil
}

// Info names the security protocol: the nsbroker identity, established
// over TLS or by a unix socket listener.
func (c *transportCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

func (c *transportCreds) Clone() credentials.TransportCredentials {
	cc := *c
	if c.tls != nil {
		cc.tls = c.tls.Clone()
	}
	return &cc
}

// OverrideServerName is a client-side setting; it has no effect here.
func (c *transportCreds) OverrideServerName(string) error { return nil }
