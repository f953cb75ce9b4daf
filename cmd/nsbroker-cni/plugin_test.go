package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/nsbroker/nsbroker/attacher/attachertest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The tests run their own binary as the plugin: with CNI_COMMAND set it
// is nsbroker-cni.
func TestMain(m *testing.M) {
	if os.Getenv("CNI_COMMAND") != "" {
		main()
		os.Exit(0)
	}
	// The race detector's runtime sleeps a second before a process exits;
	// not in the plugin runs, of which there are many.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(m.Run())
}

const timeout = 30 * time.Second

// A previous result as a plugin may write it: odd spacing, and a key this
// library does not know, which a decode and re-encode would drop.
const prevResult = `{"cniVersion":"1.0.0",  "interfaces":[{"name":"eth0","mac":"0a:58:0a:58:00:02","sandbox":"/run/netns/x"}],` +
	`"ips":[{"address":"10.88.0.2/16","gateway":"10.88.0.1","interface":0}],"x-vendor":{"kept":true}}`

// plugin runs the test binary as the plugin.
type plugin struct {
	t      *testing.T
	path   string
	socket string
}

func newPlugin(t *testing.T, socket string) *plugin {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &plugin{t: t, path: self, socket: socket}
}

// conf is a network configuration of version v for the plugin, with prev
// as its prevResult unless empty.
func (p *plugin) conf(v, prev string) []byte {
	c := fmt.Sprintf(`{"cniVersion": %q, "name": "nsb-test", "type": "nsbroker-cni", "socket": %q, "timeout": "20s"`, v, p.socket)
	if prev != "" {
		c += `, "prevResult": ` + prev
	}
	return []byte(c + "}")
}

// run runs command with conf on stdin and returns stdout, or the CNI
// error the plugin printed.
func (p *plugin) run(command, containerID, netns, ifname string, conf []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := &invoke.Args{Command: command, ContainerID: containerID, NetNS: netns, IfName: ifname, Path: filepath.Dir(p.path)}
	return (&invoke.RawExec{Stderr: os.Stderr}).ExecPlugin(ctx, p.path, conf, args.AsEnv())
}

// wantCNIError checks that err is a CNI error result with code whose
// message contains msg.
func wantCNIError(t *testing.T, what string, err error, code uint, msg string) {
	t.Helper()
	var cerr *types.Error
	if !errors.As(err, &cerr) || cerr.Code != code || !strings.Contains(cerr.Msg, msg) {
		t.Errorf("%s:\ngot  %#v\nwant a CNI error with code %d and a message containing %q", what, err, code, msg)
	}
}

// ipNetns makes a namespace with ip netns add, deleted when the test
// ends, and returns its name and identity.
func ipNetns(t *testing.T) (string, nsmgr.ID) {
	t.Helper()
	name := testenv.NetnsName()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	return name, ns.ID()
}

func TestIntegrationAddCheckDel(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	p := newPlugin(t, d.Socket)
	name, id := ipNetns(t)
	netns := "/run/netns/" + name
	ctr := "f00dcafe" + strings.Repeat("0", 56)
	attachName := "cni-" + ctr

	out, err := p.run("ADD", ctr, netns, "eth0", p.conf("1.0.0", prevResult))
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if string(out) != prevResult {
		t.Errorf("ADD result is not prevResult untouched:\ngot  %s\nwant %s", out, prevResult)
	}
	ns := d.Get(t, attachName)
	if ns == nil {
		t.Fatalf("after ADD the daemon lists %q, want %q", d.Names(t), attachName)
	}
	if ns.GetInode() != id.Ino || ns.GetDev() != id.Dev || ns.GetRef().GetPath() != netns ||
		ns.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY {
		t.Errorf("attached: inode %d dev %d ref %v state %v; want %d %d path %s READY",
			ns.GetInode(), ns.GetDev(), ns.GetRef(), ns.GetState(), id.Ino, id.Dev, netns)
	}

	if _, err := p.run("CHECK", ctr, netns, "eth0", p.conf("1.0.0", prevResult)); err != nil {
		t.Errorf("CHECK after ADD: %v", err)
	}
	// A retried ADD finds the attachment and succeeds.
	if out, err := p.run("ADD", ctr, netns, "eth0", p.conf("1.0.0", prevResult)); err != nil || string(out) != prevResult {
		t.Errorf("second ADD = %s, %v; want prevResult, nil", out, err)
	}

	if _, err := p.run("DEL", ctr, netns, "eth0", p.conf("1.0.0", prevResult)); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := d.Names(t); len(got) != 0 {
		t.Errorf("after DEL the daemon lists %q, want nothing", got)
	}
	if _, err := p.run("DEL", ctr, netns, "eth0", p.conf("1.0.0", prevResult)); err != nil {
		t.Errorf("second DEL: %v, want success", err)
	}
	_, err = p.run("CHECK", ctr, netns, "eth0", p.conf("1.0.0", prevResult))
	wantCNIError(t, "CHECK after DEL", err, codeNotAttached, fmt.Sprintf("path:%s (net:[%d]): namespace not attached", netns, id.Ino))
}

// Each network of a pod runs the plugin for the same namespace, with
// another interface name: one attachment serves them all.
func TestIntegrationSecondInterface(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	p := newPlugin(t, d.Socket)
	name, _ := ipNetns(t)
	for _, ifname := range []string{"eth0", "net1"} {
		if _, err := p.run("ADD", "ctr1", "/run/netns/"+name, ifname, p.conf("1.1.0", "")); err != nil {
			t.Fatalf("ADD %s: %v", ifname, err)
		}
	}
	if got := d.Names(t); !slices.Equal(got, []string{"cni-ctr1"}) {
		t.Errorf("attached after two ADDs: %q, want [cni-ctr1]", got)
	}
	// A name that belongs to another namespace is refused.
	other, _ := ipNetns(t)
	_, err := p.run("ADD", "ctr1", "/run/netns/"+other, "eth0", p.conf("1.1.0", ""))
	wantCNIError(t, "ADD of another namespace under a taken name", err, codeNameTaken, `name attached to another namespace: "cni-ctr1"`)
}

// DEL succeeds once the namespace is gone, and ADD of a namespace that
// does not exist says so.
func TestIntegrationNamespaceGone(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	p := newPlugin(t, d.Socket)
	name, _ := ipNetns(t)
	netns := "/run/netns/" + name
	if _, err := p.run("ADD", "ctr1", netns, "eth0", p.conf("1.0.0", "")); err != nil {
		t.Fatalf("ADD: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	watch, err := d.Client.WatchNamespaces(ctx, &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := watch.Recv(); err != nil || ev.GetKind() != nsbrokerv1.NamespaceEvent_KIND_ATTACHED {
		t.Fatalf("first watch event %v, %v; want ATTACHED", ev, err)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	if ev, err := watch.Recv(); err != nil || ev.GetKind() != nsbrokerv1.NamespaceEvent_KIND_GONE || ev.GetNamespace().GetName() != "cni-ctr1" {
		t.Fatalf("watch event after ip netns del: %v, %v; want GONE cni-ctr1", ev, err)
	}

	if _, err := p.run("DEL", "ctr1", netns, "eth0", p.conf("1.0.0", "")); err != nil {
		t.Errorf("DEL after the namespace is gone: %v, want success", err)
	}
	if _, err := p.run("DEL", "ctr1", "", "eth0", p.conf("1.0.0", "")); err != nil {
		t.Errorf("DEL without CNI_NETNS: %v, want success", err)
	}
	_, err = p.run("ADD", "ctr1", netns, "eth0", p.conf("1.0.0", ""))
	wantCNIError(t, "ADD of a missing namespace", err, types.ErrInvalidNetNS, "cannot open the network namespace")
}

func TestIntegrationDaemonDown(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	p := newPlugin(t, d.Socket)
	name, _ := ipNetns(t)
	netns := "/run/netns/" + name
	if _, err := p.run("STATUS", "", "", "", p.conf("1.1.0", "")); err != nil {
		t.Errorf("STATUS with the daemon serving: %v", err)
	}
	d.Stop(t)

	_, err := p.run("ADD", "ctr1", netns, "eth0", p.conf("1.0.0", prevResult))
	wantCNIError(t, "ADD with the daemon stopped", err, types.ErrTryAgainLater,
		"nsbroker-cni: ADD: nsbrokerd is not running: "+d.Socket+": connect: ")
	_, err = p.run("CHECK", "ctr1", netns, "eth0", p.conf("1.0.0", prevResult))
	wantCNIError(t, "CHECK with the daemon stopped", err, types.ErrTryAgainLater, "nsbrokerd is not running")
	_, err = p.run("STATUS", "", "", "", p.conf("1.1.0", ""))
	wantCNIError(t, "STATUS with the daemon stopped", err, codeNotAvailable, "nsbrokerd is not running")
	if _, err := p.run("DEL", "ctr1", netns, "eth0", p.conf("1.0.0", prevResult)); err != nil {
		t.Errorf("DEL with the daemon stopped: %v, want success", err)
	}

	// Nobody ever ran a daemon here.
	p.socket = filepath.Join(t.TempDir(), "nsbroker.sock")
	_, err = p.run("ADD", "ctr1", netns, "eth0", p.conf("1.0.0", prevResult))
	wantCNIError(t, "ADD without a daemon", err, types.ErrTryAgainLater,
		"nsbroker-cni: ADD: nsbrokerd is not running: "+p.socket+": connect: no such file or directory")
}

func TestIntegrationVersion(t *testing.T) {
	p := newPlugin(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	info, err := invoke.GetVersionInfo(ctx, p.path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
	if got := info.SupportedVersions(); !slices.Equal(got, want) {
		t.Errorf("VERSION: got %q, want %q", got, want)
	}
	// A version without chaining is refused before anything happens.
	_, err = p.run("ADD", "ctr1", "/run/netns/x", "eth0", []byte(`{"cniVersion": "0.2.0", "name": "n"}`))
	wantCNIError(t, "ADD with cniVersion 0.2.0", err, types.ErrIncompatibleCNIVersion, "incompatible CNI versions")
}
