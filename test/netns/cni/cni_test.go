package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Bounds on waiting; generous because the VM emulates its CPUs.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	rpcTimeout   = 30 * time.Second
)

// The previous plugin's result, which ADD must pass on byte for byte.
const prevResult = `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/run/netns/x"}],` +
	`"ips":[{"address":"10.88.0.2/16","interface":0}],"x-kept":1}`

// requireCommands fails (in the VM) or skips unless the module is loaded
// and the commands are on PATH; it returns the plugin's path.
func requireCommands(t *testing.T) string {
	t.Helper()
	testenv.RequireModule(t)
	var plugin string
	for _, name := range []string{"nsbrokerd", "nsbroker-cni", "ip"} {
		p, err := exec.LookPath(name)
		if err != nil {
			if testenv.InVM() {
				t.Fatalf("inside the test VM but %s is not on PATH (VM_BINS): %v", name, err)
			}
			t.Skipf("%s is not on PATH: %v", name, err)
		}
		if name == "nsbroker-cni" {
			plugin = p
		}
	}
	return plugin
}

// daemon is a running nsbrokerd.
type daemon struct {
	*daemontest.Daemon
	admin string // its admin socket
}

// startDaemon starts nsbrokerd and waits until it is ready.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	d := daemontest.Start(t, startTimeout)
	return &daemon{d, d.Admin}
}

// stop stops the daemon with SIGTERM and checks it exits 0.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.Stop(t, stopTimeout)
}

// dial makes a gRPC client connection through dialer.
func dial(t *testing.T, dialer func(context.Context) (net.Conn, error)) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///nsbrokerd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dialer(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// cni runs the plugin the way a runtime does.
type cni struct {
	path   string
	socket string
}

func (c *cni) run(command, containerID, netns string) ([]byte, error) {
	conf := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "nsb-vm", "type": "nsbroker-cni", "socket": %q, "timeout": "30s", "prevResult": %s}`,
		c.socket, prevResult)
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	args := &invoke.Args{Command: command, ContainerID: containerID, NetNS: netns, IfName: "eth0", Path: filepath.Dir(c.path)}
	return (&invoke.RawExec{Stderr: os.Stderr}).ExecPlugin(ctx, c.path, []byte(conf), args.AsEnv())
}

func wantCNIError(t *testing.T, what string, err error, code uint, msg string) {
	t.Helper()
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != code || !strings.Contains(cerr.Msg, msg) {
		t.Errorf("%s:\ngot  %#v\nwant a CNI error with code %d and a message containing %q", what, err, code, msg)
	}
}

func TestIntegrationCNI(t *testing.T) {
	plugin := requireCommands(t)
	d := startDaemon(t)
	admin := dial(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.admin)
	})
	api := nsbrokerv1.NewBrokerClient(admin)
	c := &cni{path: plugin, socket: d.admin}

	name := testenv.NetnsName()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	netnsPath := "/run/netns/" + name
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ctr := "0123456789abcdef" + strings.Repeat("e", 48)
	attachName := "cni-" + ctr

	out, err := c.run("ADD", ctr, netnsPath)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if string(out) != prevResult {
		t.Errorf("ADD result is not prevResult untouched:\ngot  %s\nwant %s", out, prevResult)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	got, err := api.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: attachName})
	if err != nil {
		t.Fatalf("GetNamespace %s after ADD: %v", attachName, err)
	}
	if got.GetInode() != uint64(ns.Inode()) || got.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY {
		t.Errorf("after ADD: net:[%d] %v, want net:[%d] READY", got.GetInode(), got.GetState(), ns.Inode())
	}

	// The namespace is SERVING once its local socket is open; then a
	// client in the namespace is its tenant, and the module answers from
	// the namespace.
	waitServing(t, admin, attachName)
	tenant := nsbrokerv1.NewBrokerClient(dial(t, func(ctx context.Context) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() error {
			var err error
			conn, err = (&net.Dialer{}).DialContext(ctx, "unix", "@nsbroker")
			return err
		})
		return conn, err
	}))
	echo, err := tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("hello from " + name)})
	if err != nil {
		t.Fatalf("Echo from inside the namespace: %v", err)
	}
	if string(echo.GetPayload()) != "hello from "+name || echo.GetNetnsInode() != uint64(ns.Inode()) {
		t.Errorf("Echo = %q from net:[%d], want %q from net:[%d]", echo.GetPayload(), echo.GetNetnsInode(), "hello from "+name, ns.Inode())
	}

	if _, err := c.run("CHECK", ctr, netnsPath); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}
	if _, err := c.run("DEL", ctr, netnsPath); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	list, err := api.ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	if err != nil || len(list.GetNamespaces()) != 0 {
		t.Errorf("after DEL: %v, %v; want no namespace", list.GetNamespaces(), err)
	}
	if _, err := c.run("DEL", ctr, netnsPath); err != nil {
		t.Errorf("second DEL: %v, want success", err)
	}
	_, err = c.run("CHECK", ctr, netnsPath)
	wantCNIError(t, "CHECK after DEL", err, 101, "namespace not attached")

	d.stop(t)
	_, err = c.run("ADD", ctr, netnsPath)
	wantCNIError(t, "ADD with the daemon stopped", err, types.ErrTryAgainLater, "nsbrokerd is not running: "+d.admin)
	if _, err := c.run("DEL", ctr, netnsPath); err != nil {
		t.Errorf("DEL with the daemon stopped: %v, want success", err)
	}
}

// waitServing waits until the daemon's health service reports the
// namespace SERVING.
func waitServing(t *testing.T, conn *grpc.ClientConn, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	service := nsbrokerv1.Broker_ServiceDesc.ServiceName + "/" + name
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health watch %s: %v", service, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("health %s: %v", service, err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}
