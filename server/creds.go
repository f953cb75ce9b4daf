package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
)

// TenantMap says which tenant a verified client certificate belongs to,
// by the certificate's ClientName, and which namespaces (attach names)
// that tenant may reach.
type TenantMap interface {
	Lookup(name ClientName) (tenant string, namespaces []string, ok bool)
}

// ClientName is the one name a verified client certificate is known by.
// Exactly one field is set: URI when the certificate has a SAN URI (such
// as a SPIFFE ID), whatever its subject says; otherwise CommonName, its
// subject common name. A certificate with more than one SAN URI, more
// than one common name, or neither is refused before any lookup, so no
// certificate can be read as two names.
type ClientName struct {
	// URI is the certificate's one SAN URI, as url.URL.String writes it.
	URI string
	// CommonName is the certificate's one subject common name, when it
	// has no SAN URI.
	CommonName string
}

// String shows the name for logs and errors: uri="…" or cn="…".
func (n ClientName) String() string {
	if n.URI != "" {
		return fmt.Sprintf("uri=%q", n.URI)
	}
	return fmt.Sprintf("cn=%q", n.CommonName)
}

// oidCommonName is the X.520 commonName attribute, 2.5.4.3.
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// clientName returns the name cert is known by, or why it has none. Go's
// Subject.CommonName keeps the last CN of a subject that has several,
// while OpenSSL and many CAs show the first, so every CN attribute of
// the subject is counted, in every RDN.
func clientName(cert *x509.Certificate) (ClientName, error) {
	var cns []string
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			cns = append(cns, fmt.Sprint(atv.Value))
		}
	}
	if len(cns) > 1 {
		return ClientName{}, fmt.Errorf("certificate subject has %d common names %q; a client certificate may have one at most", len(cns), cns)
	}
	switch {
	case len(cert.URIs) > 1:
		uris := make([]string, len(cert.URIs))
		for i, u := range cert.URIs {
			uris[i] = u.String()
		}
		return ClientName{}, fmt.Errorf("certificate has %d SAN URIs %q; a client certificate may have one at most", len(uris), uris)
	case len(cert.URIs) == 1:
		return ClientName{URI: cert.URIs[0].String()}, nil
	case len(cns) == 1 && cns[0] != "":
		return ClientName{CommonName: cns[0]}, nil
	}
	return ClientName{}, errors.New("certificate has neither a SAN URI nor a subject common name")
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
// tlsConfig.ClientAuth, or that of the configuration its
// GetConfigForClient returns, says), and the certificate's ClientName must
// map to a tenant in tenants(); otherwise the handshake fails and the
// connection is closed. tenants is called at every handshake, so a
// reloaded map applies to new connections; so does a new CA pool that
// GetConfigForClient returns. A nil tlsConfig refuses every untagged
// connection.
func Credentials(tlsConfig *tls.Config, tenants func() TenantMap) credentials.TransportCredentials {
	c := &transportCreds{tenants: tenants}
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		if get := cfg.GetConfigForClient; get != nil {
			cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				hc, err := get(hello)
				if err != nil || hc == nil {
					return hc, err
				}
				hc = hc.Clone()
				hc.ClientAuth = tls.RequireAndVerifyClientCert
				return hc, nil
			}
		}
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
	name, err := clientName(leaf)
	if err != nil {
		return Identity{}, fmt.Errorf("connection from %v refused: %w", remote, err)
	}
	tenant, namespaces, ok := tm.Lookup(name)
	if !ok {
		return Identity{}, fmt.Errorf("connection from %v refused: certificate %v names no tenant", remote, name)
	}
	return Identity{
		Role:       RoleTenant,
		Tenant:     tenant,
		Namespaces: append([]string(nil), namespaces...),
		Peer:       fmt.Sprintf("tenant %s %v %v", tenant, remote, name),
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
