package daemon

import (
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationTLSTenantByURI checks that a client certificate's SAN
// URI selects the tenant configured with that uri, whatever its common
// name, and that a certificate without the URI is refused even when its
// common name is the tenant's name or URI.
func TestIntegrationTLSTenantByURI(t *testing.T) {
	testenv.RequireRoot(t)
	red, redName := newNamespace(t)
	pki := newTestPKI(t)
	certFile, keyFile := pki.issue(t, "server", true)
	const redURI = "spiffe://example.org/tenant/red"
	d := startDaemon(t, func(c *Config) {
		c.TCPListen = "127.0.0.1:0"
		c.TLSCert, c.TLSKey, c.TLSClientCA = certFile, keyFile, filepath.Join(pki.dir, "ca.pem")
		c.Tenants = []Tenant{{Name: "red", URI: redURI, Namespaces: []string{redName}}}
		c.Attach = []string{redName}
	})
	ctx := ctxTimeout(t)
	echo := func(cc *grpc.ClientConn) (*nsbrokerv1.EchoResponse, error) {
		return nsbrokerv1.NewBrokerClient(cc).Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: redName, Payload: []byte("uri")})
	}

	resp, err := echo(pki.dial(t, d.addrs.TCP, pki.ca, "someone-else", redURI))
	if err != nil || resp.NetnsInode != uint64(red.Inode()) {
		t.Errorf("certificate with SAN URI %s: Echo %s: want inode %d, got %v, %v", redURI, redName, red.Inode(), resp, err)
	}
	_, err = echo(pki.dial(t, d.addrs.TCP, pki.ca, "red"))
	wantCode(t, "certificate CN=red without SAN URI", err, codes.Unavailable)
	_, err = echo(pki.dial(t, d.addrs.TCP, pki.ca, redURI))
	wantCode(t, "certificate CN="+redURI+" without SAN URI", err, codes.Unavailable)
}
