package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// tlsSetup holds the TCP listener's TLS configuration; the certificate
// can be swapped by a reload.
type tlsSetup struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
	config            *tls.Config
}

func newTLSSetup(certFile, keyFile, caFile string) (*tlsSetup, error) {
	t := &tlsSetup{certFile: certFile, keyFile: keyFile}
	cert, err := t.loadCert()
	if err != nil {
		return nil, err
	}
	t.cert.Store(cert)
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls_client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls_client_ca: %s holds no PEM certificate", caFile)
	}
	t.config = &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
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
