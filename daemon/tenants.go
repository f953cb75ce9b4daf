package daemon

import (
	"crypto/x509"
	"slices"
	"sync/atomic"

	"github.com/nsbroker/nsbroker/server"
)

// tenantTable maps client certificate common names to tenants. It is
// immutable; a reload swaps in a new one.
type tenantTable struct {
	byCN map[string]Tenant
}

func newTenantTable(tenants []Tenant) *tenantTable {
	t := &tenantTable{byCN: make(map[string]Tenant, len(tenants))}
	for _, tn := range tenants {
		tn.Namespaces = slices.Clone(tn.Namespaces)
		t.byCN[tn.commonName()] = tn
	}
	return t
}

// Lookup implements server.TenantMap: the certificate (already verified
// against the client CA) names its tenant by its subject common name.
func (t *tenantTable) Lookup(cert *x509.Certificate) (string, []string, bool) {
	if cert == nil {
		return "", nil, false
	}
	tn, ok := t.byCN[cert.Subject.CommonName]
	if !ok {
		return "", nil, false
	}
	return tn.Name, slices.Clone(tn.Namespaces), true
}

// equal reports whether both tables grant the same rights.
func (t *tenantTable) equal(o *tenantTable) bool {
	if len(t.byCN) != len(o.byCN) {
		return false
	}
	for cn, a := range t.byCN {
		b, ok := o.byCN[cn]
		if !ok || a.Name != b.Name || !slices.Equal(sorted(a.Namespaces), sorted(b.Namespaces)) {
			return false
		}
	}
	return true
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// tenants holds the current table for the handshakes.
type tenants struct {
	cur atomic.Pointer[tenantTable]
}

func (ts *tenants) current() server.TenantMap { return ts.cur.Load() }
