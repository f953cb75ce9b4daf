package daemontest

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// ListenerPID returns the pid of the process listening on the unix socket
// at path: a connected socket's SO_PEERCRED names the process that called
// listen.
func ListenerPID(t testing.TB, path string) int {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		t.Fatal(err)
	}
	if credErr != nil {
		t.Fatalf("SO_PEERCRED of %s: %v", path, credErr)
	}
	return int(cred.Pid)
}

// WaitServing waits until the daemon's health service says the namespace
// name is SERVING on conn, for at most timeout.
func WaitServing(t testing.TB, conn *grpc.ClientConn, name string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	service := "nsbroker.v1.Broker/" + name
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health watch %s: %v", service, err)
	}
	last := healthpb.HealthCheckResponse_UNKNOWN
	for last != healthpb.HealthCheckResponse_SERVING {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("health %s: last status %v, then %v", service, last, err)
		}
		last = resp.GetStatus()
	}
}

// Dial makes a gRPC client of nsbrokerd that reaches it through dialer
// (the admin socket, or @nsbroker inside a namespace), closed when the
// test ends.
func Dial(t testing.TB, dialer func(context.Context) (net.Conn, error), opts ...grpc.DialOption) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///nsbroker", append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dialer(ctx) }),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return nsbrokerv1.NewBrokerClient(conn), conn
}
