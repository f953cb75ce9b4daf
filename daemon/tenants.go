package daemon

import (
	"maps"
	"slices"
	"sync/atomic"

	"github.com/nsbroker/nsbroker/server"
)

// tenantTable maps the names of client certificates to tenants: SAN URIs
// to the tenants configured with a uri, common names to the others. It
// is immutable; a reload swaps in a new one.
type tenantTable struct {
	byURI map[string]Tenant
	byCN  map[string]Tenant
}

// newTenantTable builds the table of tenants that validateTenants
// accepted: no URI and no common name is claimed twice.
func newTenantTable(tenants []Tenant) *tenantTable {
	t := &tenantTable{byURI: make(map[string]Tenant), byCN: make(map[string]Tenant)}
	for _, tn := range tenants {
		tn.Namespaces = slices.Clone(tn.Namespaces)
		if tn.URI != "" {
			t.byURI[tn.URI] = tn
		} else {
			t.byCN[tn.commonName()] = tn
		}
	}
	return t
}

// Lookup implements server.TenantMap: a certificate (already verified
// against the client CA) named by a SAN URI maps to the tenant with that
// uri only, one named by its common name to the tenant with that
// common_name only. A common name equal to a uri tenant's name or URI
// matches nothing.
func (t *tenantTable) Lookup(name server.ClientName) (string, []string, bool) {
	var tn Tenant
	var ok bool
	switch {
	case name.URI != "":
		tn, ok = t.byURI[name.URI]
	case name.CommonName != "":
		tn, ok = t.byCN[name.CommonName]
	}
	if !ok {
		return "", nil, false
	}
	return tn.Name, slices.Clone(tn.Namespaces), true
}

// equal reports whether both tables grant the same rights.
func (t *tenantTable) equal(o *tenantTable) bool {
	same := func(a, b Tenant) bool {
		return a.Name == b.Name && slices.Equal(sorted(a.Namespaces), sorted(b.Namespaces))
	}
	return maps.EqualFunc(t.byURI, o.byURI, same) && maps.EqualFunc(t.byCN, o.byCN, same)
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
