package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
	"github.com/nsbroker/nsbroker/server"
)

// tenants maps a client certificate's SAN URI (a SPIFFE ID) to a tenant.
type tenants map[string]struct {
	name       string
	namespaces []string
}

func (m tenants) Lookup(cn server.ClientName) (string, []string, bool) {
	t, ok := m[cn.URI]
	return t.name, t.namespaces, ok && cn.URI != ""
}

// One gRPC server for the admin socket, a namespace's local socket and
// TCP with mutual TLS.
func Example() {
	b := broker.New(nil)
	defer b.Close()
	ns, err := nsmgr.Open(nsmgr.Ref{Name: "red"})
	if err != nil {
		return
	}
	defer ns.Close()
	if _, err := b.Attach(context.Background(), "red", ns.Ref()); err != nil {
		return
	}

	var tlsConfig *tls.Config // server certificate and ClientCAs
	acme := tenants{"spiffe://example.org/tenant/acme": {"acme", []string{"red"}}}
	// Each tenant may publish 100 times a second; the other limits are
	// the defaults.
	budget := server.NewBudget(&server.Limits{PublishRate: 100}, nil)
	srv := server.New(b, &server.Config{Budget: budget})
	g := grpc.NewServer(budget.GRPCOptions(server.Credentials(tlsConfig, func() server.TenantMap { return acme }))...)
	srv.Register(g)

	admin, err := net.Listen("unix", "/run/nsbroker/nsbroker.sock")
	if err != nil {
		return
	}
	const adminGID = 990
	go g.Serve(server.AdminListener(admin, func(cred *unix.Ucred) error {
		if cred.Uid != 0 && cred.Gid != adminGID {
			return fmt.Errorf("uid %d gid %d is not an administrator", cred.Uid, cred.Gid)
		}
		return nil
	}))

	// The local socket belongs to the namespace of the thread that opens it.
	var local net.Listener
	ns.Do(func() error {
		local, err = net.Listen("unix", "@nsbroker")
		return err
	})
	go g.Serve(server.TenantListener(local, "red"))

	tcp, err := net.Listen("tcp", ":7443")
	if err != nil {
		return
	}
	g.Serve(tcp)
}
