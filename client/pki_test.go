package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// pki is a throwaway authority that signs a server certificate for
// 127.0.0.1 and client certificates.
type pki struct {
	t     *testing.T
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	n     int64
}

func newPKI(t *testing.T) *pki {
	p := &pki{t: t}
	tmpl := p.template("nsb-test CA")
	tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	p.caKey = p.key()
	p.ca = p.sign(tmpl, &p.caKey.PublicKey, tmpl, p.caKey)
	return p
}

func (p *pki) template(cn string) *x509.Certificate {
	p.n++
	return &x509.Certificate{SerialNumber: big.NewInt(p.n), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
}

func (p *pki) key() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	return k
}

func (p *pki) sign(tmpl *x509.Certificate, pub any, parent *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// issue makes a certificate for cn.
func (p *pki) issue(cn string, usage x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	tmpl := p.template(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	k := p.key()
	return p.sign(tmpl, &k.PublicKey, p.ca, p.caKey), k
}

// serverConfig is the daemon's side: its certificate, client
// certificates required and checked against the authority.
func (p *pki) serverConfig() *tls.Config {
	c, k := p.issue("127.0.0.1", x509.ExtKeyUsageServerAuth)
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{c.Raw}, PrivateKey: k}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	}
}

// clientFiles writes a client certificate for cn, its key and the
// authority to PEM files.
func (p *pki) clientFiles(cn string) (cert, key, ca string) {
	dir := p.t.TempDir()
	c, k := p.issue(cn, x509.ExtKeyUsageClientAuth)
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, key, ca = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"), filepath.Join(dir, "ca.pem")
	p.write(cert, "CERTIFICATE", c.Raw)
	p.write(key, "EC PRIVATE KEY", der)
	p.write(ca, "CERTIFICATE", p.ca.Raw)
	return cert, key, ca
}

func (p *pki) write(path, kind string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
}
