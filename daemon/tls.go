package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// tlsSetup holds the TCP listener's TLS configuration. A reload swaps the
// certificate and the client CA pool; each handshake uses the ones that
// are current when it begins, and connections already made keep theirs.
type tlsSetup struct {
	certFile, keyFile, caFile string
	cert                      atomic.Pointer[tls.Certificate]
	// handshake is the configuration of each new handshake, holding the
	// current client CA pool.
	handshake atomic.Pointer[tls.Config]
	// config is the listener's; it hands each handshake the current
	// handshake configuration.
	config *tls.Config
}

func newTLSSetup(certFile, keyFile, caFile string) (*tlsSetup, error) {
	t := &tlsSetup{certFile: certFile, keyFile: keyFile, caFile: caFile}
	cert, err := t.loadCert()
	if err != nil {
		return nil, err
	}
	pool, err := t.loadClientCAs()
	if err != nil {
		return nil, err
	}
	t.cert.Store(cert)
	t.setClientCAs(pool)
	t.config = &tls.Config{
		MinVersion:             tls.VersionTLS12,
		ClientAuth:             tls.RequireAndVerifyClientCert,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.handshake.Load(), nil
		},
	}
	return t, nil
}

func (t *tlsSetup) loadCert() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls_cert/tls_key: %w", err)
	}
	return &cert, nil
}

func (t *tlsSetup) loadClientCAs() (*x509.CertPool, error) {
	pem, err := os.ReadFile(t.caFile)
	if err != nil {
		return nil, fmt.Errorf("tls_client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls_client_ca: %s holds no PEM certificate", t.caFile)
	}
	return pool, nil
}

// clientCAs is the pool new handshakes verify client certificates with.
func (t *tlsSetup) clientCAs() *x509.CertPool { return t.handshake.Load().ClientCAs }

// setClientCAs makes new handshakes verify client certificates with pool.
func (t *tlsSetup) setClientCAs(pool *x509.CertPool) {
	t.handshake.Store(&tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		// No session resumption: every connection's client certificate
		// is verified against the pool current at its own handshake,
		// never carried over from a session made under an earlier one.
		SessionTicketsDisabled: true,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
		},
	})
}
