package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and client
// certificates by common name.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "nsbroker test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.caKey, p.serial = key, 1
	p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes a certificate and key for cn with the given SAN URIs;
// server certificates are for 127.0.0.1.
func (p *testPKI) issue(t *testing.T, cn string, server bool, uris ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("%d", p.serial)
	return p.write(t, base+".pem", "CERTIFICATE", der), p.write(t, base+"-key.pem", "EC PRIVATE KEY", keyDER)
}

// dialTLS connects to the TCP listener with the client certificate of cn.
func (p *testPKI) dialTLS(t *testing.T, addr net.Addr, cn string) *grpc.ClientConn {
	t.Helper()
	return p.dial(t, addr, p.ca, cn)
}

// dial connects to the TCP listener, whose certificate serverCA issued,
// with a client certificate from p for cn and uris.
func (p *testPKI) dial(t *testing.T, addr net.Addr, serverCA *x509.Certificate, cn string, uris ...string) *grpc.ClientConn {
	t.Helper()
	certFile, keyFile := p.issue(t, cn, false, uris...)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverCA)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "127.0.0.1"})
	cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestIntegrationReload checks that SIGHUP applies the tenants of the
// configuration file: a TCP tenant moved to another namespace reaches the
// new one and not the old, and its connection made under the old map is
// cut. A broken file changes nothing.
func TestIntegrationReload(t *testing.T) {
	testenv.RequireRoot(t)
	red, redName := newNamespace(t)
	blue, blueName := newNamespace(t)
	pki := newTestPKI(t)
	certFile, keyFile := pki.issue(t, "server", true)
	file := filepath.Join(t.TempDir(), "nsbrokerd.yaml")
	writeTenants := func(ns string) {
		t.Helper()
		content := fmt.Sprintf("tenants:\n  - name: acme\n    common_name: acme.example\n    namespaces: [%s]\n", ns)
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeTenants(redName)
	d := startDaemon(t, func(c *Config) {
		if err := loadFile(file, c); err != nil {
			t.Fatal(err)
		}
		c.ConfigFile = file
		c.TCPListen = "127.0.0.1:0"
		c.TLSCert, c.TLSKey, c.TLSClientCA = certFile, keyFile, filepath.Join(pki.dir, "ca.pem")
		c.Attach = []string{redName, blueName}
	})
	ctx := ctxTimeout(t)
	echo := func(cc *grpc.ClientConn, ns string) (*nsbrokerv1.EchoResponse, error) {
		return nsbrokerv1.NewBrokerClient(cc).Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: ns, Payload: []byte("tls")})
	}

	before := pki.dialTLS(t, d.addrs.TCP, "acme.example")
	if resp, err := echo(before, redName); err != nil || resp.NetnsInode != uint64(red.Inode()) {
		t.Fatalf("acme before the reload, Echo %s: want inode %d, got %v, %v", redName, red.Inode(), resp, err)
	}
	_, err := echo(before, blueName)
	wantCode(t, "acme before the reload, Echo "+blueName, err, codes.NotFound)

	writeTenants(blueName)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e := d.logs.waitCount(msgIs("reloaded"), 1)
	if e.attrs["changed"] != "true" || e.attrs["client_ca_changed"] != "false" || e.attrs["tcp_connections_cut"] != "1" || e.attrs["tenants"] != "1" {
		t.Errorf("reload: want changed=true client_ca_changed=false tcp_connections_cut=1 tenants=1, got %v", e)
	}
	// The connection made under the old map was cut.
	for st := before.GetState(); st == connectivity.Ready; st = before.GetState() {
		if !before.WaitForStateChange(ctx, st) {
			t.Fatalf("the connection made before the reload is still %v", st)
		}
	}

	after := pki.dialTLS(t, d.addrs.TCP, "acme.example")
	if resp, err := echo(after, blueName); err != nil || resp.NetnsInode != uint64(blue.Inode()) {
		t.Errorf("acme after the reload, Echo %s: want inode %d, got %v, %v", blueName, blue.Inode(), resp, err)
	}
	_, err = echo(after, redName)
	wantCode(t, "acme after the reload, Echo "+redName, err, codes.NotFound)

	// A broken file is refused as a whole.
	if err := os.WriteFile(file, []byte("tenants: [{name: acme, namespaces: [x], color: red}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	failed := d.logs.waitCount(msgIs("reload failed; keeping the current tenants and TLS files"), 1)
	if want := "field color not found"; !strings.Contains(failed.attrs["err"], want) {
		t.Errorf("failed reload: want an error containing %q, got %q", want, failed.attrs["err"])
	}
	if resp, err := echo(after, blueName); err != nil || resp.NetnsInode != uint64(blue.Inode()) {
		t.Errorf("acme after a failed reload, Echo %s: want inode %d, got %v, %v", blueName, blue.Inode(), resp, err)
	}
}

// TestReloadClientCA checks that SIGHUP reloads the client CA bundle: new
// handshakes verify client certificates against the new bundle only, and
// the connections verified under the old one are cut. A bundle that does
// not load fails the whole reload: the CA and the tenants stay as they
// were, and the daemon keeps serving.
func TestReloadClientCA(t *testing.T) {
	oldCA, newCA := newTestPKI(t), newTestPKI(t)
	certFile, keyFile := oldCA.issue(t, "server", true)
	dir := t.TempDir()
	caFile, file := filepath.Join(dir, "clients-ca.pem"), filepath.Join(dir, "nsbrokerd.yaml")
	write := func(path string, content []byte) {
		t.Helper()
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	readCA := func(p *testPKI) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(p.dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	writeTenant := func(cn string) {
		t.Helper()
		write(file, fmt.Appendf(nil, "tenants:\n  - name: acme\n    common_name: %s\n    namespaces: [red]\n", cn))
	}
	write(caFile, readCA(oldCA))
	writeTenant("acme.example")
	d := startDaemon(t, func(c *Config) {
		if err := loadFile(file, c); err != nil {
			t.Fatal(err)
		}
		c.ConfigFile = file
		c.TCPListen = "127.0.0.1:0"
		c.TLSCert, c.TLSKey, c.TLSClientCA = certFile, keyFile, caFile
	})
	ctx := ctxTimeout(t)
	// Each dial makes a new connection, hence a new handshake.
	check := func(from *testPKI) error {
		cc := from.dial(t, d.addrs.TCP, oldCA.ca, "acme.example")
		// Closed at once: a refused client would dial again in the
		// background, and the reload would count that connection too.
		defer cc.Close()
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	accepted := func(what string, from *testPKI) {
		t.Helper()
		if err := check(from); err != nil {
			t.Errorf("%s: want the connection accepted, got %v", what, err)
		}
	}
	// Both authorities issue the same name, acme.example, so the CA alone
	// decides. (Under TLS 1.3 the client may see the server's alert or
	// only the connection closing, hence no message to compare.)
	refused := func(what string, from *testPKI) {
		t.Helper()
		wantCode(t, what, check(from), codes.Unavailable)
	}
	hangUp := func() {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	before := oldCA.dial(t, d.addrs.TCP, oldCA.ca, "acme.example")
	if _, err := healthpb.NewHealthClient(before).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("old CA's client before the reload: %v", err)
	}
	refused("new CA's client before the reload", newCA)

	write(caFile, readCA(newCA))
	hangUp()
	e := d.logs.waitCount(msgIs("reloaded"), 1)
	// The connection before; the refused client's may not be closed yet
	// on the daemon's side, and then counts too.
	if cut := e.attrs["tcp_connections_cut"]; e.attrs["client_ca_changed"] != "true" || e.attrs["changed"] != "false" || (cut != "1" && cut != "2") {
		t.Errorf("reload: want client_ca_changed=true changed=false tcp_connections_cut=1 (or 2), got %v", e)
	}
	for st := before.GetState(); st == connectivity.Ready; st = before.GetState() {
		if !before.WaitForStateChange(ctx, st) {
			t.Fatalf("the connection verified under the old CA is still %v", st)
		}
	}
	accepted("new CA's client after the reload", newCA)
	refused("old CA's client after the reload", oldCA)

	// A bundle that does not load fails the reload as a whole.
	write(caFile, []byte("not a certificate\n"))
	writeTenant("other.example")
	hangUp()
	failed := d.logs.waitCount(msgIs("reload failed; keeping the current tenants and TLS files"), 1)
	if want := "tls_client_ca: " + caFile + " holds no PEM certificate"; failed.attrs["err"] != want {
		t.Errorf("failed reload: want the error %q, got %q", want, failed.attrs["err"])
	}
	accepted("new CA's client for acme.example after the failed reload", newCA)
	refused("old CA's client after the failed reload", oldCA)
}
