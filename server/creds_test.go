package server

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/credentials"
)

// handshake runs creds' server side of a handshake against a TLS client
// presenting cert (none if nil), and returns the Identity established.
func handshake(t *testing.T, p *pki, creds credentials.TransportCredentials, cert *tls.Certificate) (Identity, error) {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cli.Close()
		cfg := &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		tc := tls.Client(cli, cfg)
		if tc.Handshake() == nil {
			io.Copy(io.Discard, tc) // until the server closes or refuses
		}
	}()
	defer func() {
		srv.Close()
		<-done
	}()
	conn, info, err := creds.ServerHandshake(srv)
	if err != nil {
		return Identity{}, err
	}
	conn.Close()
	return info.(AuthInfo).Identity, nil
}

// nameMap maps client names to tenants of the same names as the keys'
// fields.
type nameMap map[ClientName][]string

func (m nameMap) Lookup(name ClientName) (string, []string, bool) {
	ns, ok := m[name]
	return name.URI + name.CommonName, ns, ok
}

func uris(t *testing.T, ss ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, s := range ss {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}

var oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}

// TestCredentialsClientName checks which name a client certificate is
// known by: its one SAN URI, else its one common name; certificates with
// two common names (in separate RDNs or in one), two SAN URIs or no name
// are refused, whatever the tenant map holds.
func TestCredentialsClientName(t *testing.T) {
	p := newPKI(t)
	const red, nobody = "spiffe://example.org/tenant/red", "spiffe://example.org/tenant/nobody"
	tm := nameMap{
		{CommonName: "red"}:     {"ns-red"},
		{CommonName: "mallory"}: {"ns-mallory"},
		{CommonName: "blue"}:    {"ns-blue"},
		{URI: red}:              {"ns-red-uri"},
	}
	creds := Credentials(p.serverTLS(), func() TenantMap { return tm })
	for _, tc := range []struct {
		name    string
		edit    func(*x509.Certificate)
		tenant  string // "" when refused
		wantErr string
	}{
		{name: "one common name", edit: func(c *x509.Certificate) { c.Subject.CommonName = "red" }, tenant: "red"},
		{name: "two common names", edit: func(c *x509.Certificate) {
			c.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidCN, Value: "mallory"}, {Type: oidCN, Value: "red"}}
		}, wantErr: `certificate subject has 2 common names ["mallory" "red"]; a client certificate may have one at most`},
		{name: "two common names in one RDN", edit: func(c *x509.Certificate) {
			raw, err := asn1.Marshal(pkix.RDNSequence{{{Type: oidCN, Value: "mallory"}, {Type: oidCN, Value: "red"}}})
			if err != nil {
				t.Fatal(err)
			}
			c.RawSubject = raw
		}, wantErr: "certificate subject has 2 common names"},
		{name: "one SAN URI", edit: func(c *x509.Certificate) { c.URIs = uris(t, red) }, tenant: red},
		{name: "SAN URI before common name", edit: func(c *x509.Certificate) {
			c.Subject.CommonName, c.URIs = "blue", uris(t, red)
		}, tenant: red},
		{name: "unmapped SAN URI, mapped common name", edit: func(c *x509.Certificate) {
			c.Subject.CommonName, c.URIs = "blue", uris(t, nobody)
		}, wantErr: `certificate uri="` + nobody + `" names no tenant`},
		{name: "two SAN URIs", edit: func(c *x509.Certificate) { c.URIs = uris(t, red, nobody) },
			wantErr: `certificate has 2 SAN URIs ["` + red + `" "` + nobody + `"]; a client certificate may have one at most`},
		{name: "SAN URI and two common names", edit: func(c *x509.Certificate) {
			c.URIs = uris(t, red)
			c.Subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: oidCN, Value: "mallory"}, {Type: oidCN, Value: "red"}}
		}, wantErr: "certificate subject has 2 common names"},
		{name: "no name", edit: func(*x509.Certificate) {}, wantErr: "certificate has neither a SAN URI nor a subject common name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := handshake(t, p, creds, p.clientEdited(tc.edit))
			if tc.tenant == "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want the handshake refused with an error containing %q, got identity %+v, error %v", tc.wantErr, id, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("want tenant %q, got error %v", tc.tenant, err)
			}
			if id.Role != RoleTenant || id.Tenant != tc.tenant {
				t.Errorf("want tenant %q, got %+v", tc.tenant, id)
			}
		})
	}
}

// TestCredentialsRequireClientCertificateFromGetConfigForClient checks
// that the configuration GetConfigForClient returns also requires a
// client certificate, whatever its ClientAuth says, and is the one the
// handshake uses.
func TestCredentialsRequireClientCertificateFromGetConfigForClient(t *testing.T) {
	p := newPKI(t)
	perClient := p.serverTLS()
	perClient.ClientAuth = tls.NoClientCert
	cfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return perClient, nil }}
	creds := Credentials(cfg, func() TenantMap { return cnMap{"acme": {"A"}} })

	_, err := handshake(t, p, creds, nil)
	if want := "client didn't provide a certificate"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("without a client certificate: want the TLS handshake to fail with %q, got %v", want, err)
	}
	id, err := handshake(t, p, creds, p.client("acme"))
	if err != nil || id.Tenant != "acme" {
		t.Errorf("with acme's certificate: want tenant acme, got %+v, %v", id, err)
	}
}
