package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// pki is a throwaway certificate authority with a server certificate for
// 127.0.0.1, and a second, unrelated authority.
type pki struct {
	t      *testing.T
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	roots  *x509.CertPool
	server tls.Certificate
	other  *x509.Certificate // an authority the server does not trust
	oKey   *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *pki {
	p := &pki{t: t}
	p.ca, p.caKey = p.authority("nsb-test CA")
	p.other, p.oKey = p.authority("nsb-test other CA")
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.ca)
	p.server = p.issue(p.ca, p.caKey, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	return p
}

var serial int64

func (p *pki) template(cn string) *x509.Certificate {
	serial++
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
}

func (p *pki) key() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	return k
}

func (p *pki) authority(cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	tmpl := p.template(cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign
	key := p.key()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		p.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert, key
}

// issue makes a certificate for cn signed by ca.
func (p *pki) issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	return p.issueEdited(ca, caKey, cn, usage, nil)
}

// issueEdited makes a certificate for cn signed by ca, its template
// changed by edit first if edit is not nil.
func (p *pki) issueEdited(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage, edit func(*x509.Certificate)) tls.Certificate {
	tmpl := p.template(cn)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if edit != nil {
		edit(tmpl)
	}
	key := p.key()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// client returns a client certificate for cn from the trusted authority.
func (p *pki) client(cn string) *tls.Certificate {
	c := p.issue(p.ca, p.caKey, cn, x509.ExtKeyUsageClientAuth)
	return &c
}

// clientEdited returns a client certificate from the trusted authority
// whose template edit changed, for subjects and SANs beyond one CN.
func (p *pki) clientEdited(edit func(*x509.Certificate)) *tls.Certificate {
	c := p.issueEdited(p.ca, p.caKey, "", x509.ExtKeyUsageClientAuth, edit)
	return &c
}

// foreignClient returns a client certificate for cn from the other
// authority.
func (p *pki) foreignClient(cn string) *tls.Certificate {
	c := p.issue(p.other, p.oKey, cn, x509.ExtKeyUsageClientAuth)
	return &c
}

// serverTLS is the server's TLS configuration; ClientAuth is left at its
// zero value on purpose: Credentials must require client certificates.
func (p *pki) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.roots, MinVersion: tls.VersionTLS12}
}
