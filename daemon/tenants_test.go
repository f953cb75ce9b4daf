package daemon

import (
	"slices"
	"testing"

	"github.com/nsbroker/nsbroker/server"
)

// TestTenantTableLookup checks that a SAN URI maps to the tenant
// configured with that uri, and that common names map only to the
// tenants without one: a common name equal to a uri tenant's name or URI
// matches nothing.
func TestTenantTableLookup(t *testing.T) {
	const redURI = "spiffe://example.org/tenant/red"
	table := newTenantTable([]Tenant{
		{Name: "red", URI: redURI, Namespaces: []string{"ns-red"}},
		{Name: "blue", Namespaces: []string{"ns-blue"}},
		{Name: "green", CommonName: "green.example", Namespaces: []string{"ns-green"}},
	})
	for _, tc := range []struct {
		name       server.ClientName
		tenant     string // "" for none
		namespaces []string
	}{
		{name: server.ClientName{URI: redURI}, tenant: "red", namespaces: []string{"ns-red"}},
		{name: server.ClientName{CommonName: "red"}},
		{name: server.ClientName{CommonName: redURI}},
		{name: server.ClientName{CommonName: "blue"}, tenant: "blue", namespaces: []string{"ns-blue"}},
		{name: server.ClientName{URI: "blue"}},
		{name: server.ClientName{CommonName: "green.example"}, tenant: "green", namespaces: []string{"ns-green"}},
		{name: server.ClientName{CommonName: "green"}},
		{name: server.ClientName{}},
	} {
		tenant, namespaces, ok := table.Lookup(tc.name)
		if tenant != tc.tenant || ok != (tc.tenant != "") || !slices.Equal(namespaces, tc.namespaces) {
			t.Errorf("Lookup(%v): want %q %q %v, got %q %q %v", tc.name, tc.tenant, tc.namespaces, tc.tenant != "", tenant, namespaces, ok)
		}
	}
}
