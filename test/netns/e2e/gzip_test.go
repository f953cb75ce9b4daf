package e2e

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding/gzip"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationGzip: nsbrokerd serves a client that compresses its
// requests with gzip, as grpc-health-probe -gzip does. (The daemon runs
// as its own process: a compressor registered in this test binary says
// nothing about the daemon's.)
func TestIntegrationGzip(t *testing.T) {
	d := startDaemon(t)
	a := attachNetns(t, d)
	tenant, _ := tenantClient(t, a.name)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	echo, err := tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("zipped")}, grpc.UseCompressor(gzip.Name))
	if err != nil || string(echo.GetPayload()) != "zipped" || echo.GetNetnsInode() != uint64(a.inode) {
		t.Fatalf("Echo compressed with gzip: got %v, %v; want payload \"zipped\" from inode %d", echo, err, a.inode)
	}
}
