package isolation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/daemon"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// The listener probes open a socket as nobody by running the test binary
// again; TestMain does the child's part then.
func TestMain(m *testing.M) {
	if child, err := runChild(); child {
		if err != nil {
			fmt.Fprintf(os.Stderr, "child: %v\n", err)
			os.Exit(ExitError)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startDaemon runs nsbrokerd in-process on a private admin socket and
// local socket name. Without the module (on a host) it runs on the fake
// kernel of brokertest.
func startDaemon(t *testing.T, withModule bool) HostConfig {
	t.Helper()
	cfg := daemon.Defaults()
	cfg.AdminSocket = filepath.Join(t.TempDir(), "run", "nsbroker.sock")
	cfg.LocalSocket = fmt.Sprintf("@nsb-isolation-test-%d", os.Getpid())
	cfg.StateFile = ""
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if !withModule {
		k := brokertest.NewKernel()
		cfg.BrokerConfig = &broker.Config{Unit: family.DefaultUnit, ModuleIdentity: k.Identity, Dial: k.Dial,
			RetryInterval: 10 * time.Millisecond}
	}
	ready := make(chan daemon.Addrs, 1)
	cfg.Ready = func(a daemon.Addrs) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the daemon stopped with %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("the daemon did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not start within 30s")
	}
	return HostConfig{AdminSocket: cfg.AdminSocket, LocalSocket: cfg.LocalSocket, Timeout: 30 * time.Second}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestIntegrationCheck runs a whole check against the real daemon and
// HostEnv: in the VM with the module and the listener probes, on a host
// (as root) with the fake kernel and without them.
func TestIntegrationCheck(t *testing.T) {
	testenv.RequireRoot(t)
	_, err := testenv.ModuleUnit()
	withModule := err == nil
	if testenv.InVM() && !withModule {
		t.Fatalf("inside the test VM but the module is not loaded: %v", err)
	}
	host := startDaemon(t, withModule)
	env, err := NewHostEnv(context.Background(), &host)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	if (env.Kernel() != nil) != withModule {
		t.Fatalf("Kernel() = %v with the module loaded: %v", env.Kernel(), withModule)
	}
	prefix := testenv.NetnsName() + "-"
	cfg := &Config{Namespaces: 3, Messages: 5, Prefix: prefix, SkipListenerProbes: !withModule, Timeout: 30 * time.Second}
	r, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var text strings.Builder
	r.WriteText(&text)
	t.Log(text.String())
	if !r.Passed {
		t.Errorf("verdict %q, want a pass", r.Verdict)
	}
	for _, ns := range r.Namespaces {
		if ns.EchoInode != ns.Inode {
			t.Errorf("%s: tenant echo answered by inode %d, want %d", ns.Name, ns.EchoInode, ns.Inode)
		}
	}
	want := map[string]Status{probeNoNsid: StatusNotRun, probeUnpriv: StatusNotRun, probePrivNsid: StatusNotRun}
	if withModule {
		want = map[string]Status{probeNoNsid: StatusHeld, probeUnpriv: StatusHeld, probePrivNsid: StatusDocumented}
	}
	got := probeStatus(r)
	for name, w := range want {
		if got[name] != w {
			t.Errorf("probe %q: %s, want %s", name, got[name], w)
		}
	}
	// The namespaces are gone again.
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("%s%d", prefix, i)
		if _, err := nsmgr.Open(nsmgr.Ref{Name: name}); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the check: %v, want it gone", name, err)
		}
	}
}

// TestIntegrationMain runs the command against the real daemon and reads
// its JSON report.
func TestIntegrationMain(t *testing.T) {
	testenv.RequireRoot(t)
	_, err := testenv.ModuleUnit()
	withModule := err == nil
	host := startDaemon(t, withModule)
	args := []string{"--socket", host.AdminSocket, "--local-socket", host.LocalSocket,
		"--namespaces", "2", "--messages", "3", "--groups", "4", "--json", "--quiet"}
	if !withModule {
		args = append(args, "--no-listener-probes")
	}
	var stdout, stderr strings.Builder
	if code := Main(args, &stdout, &stderr); code != ExitHeld {
		t.Fatalf("exit status %d, want %d; stderr:\n%s\nstdout:\n%s", code, ExitHeld, stderr.String(), stdout.String())
	}
	var r Report
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
		t.Fatalf("the report is not JSON: %v\n%s", err, stdout.String())
	}
	if !r.Passed || len(r.Namespaces) != 2 || len(r.Subscriptions) != 2 || !slices.Equal(r.Groups, []uint32{4}) {
		t.Errorf("report: passed %v, %d namespaces, %d subscriptions, groups %v; want true, 2, 2, [4]",
			r.Passed, len(r.Namespaces), len(r.Subscriptions), r.Groups)
	}
	for _, s := range r.Subscriptions {
		var seqs []uint64
		for _, it := range s.Items {
			seqs = append(seqs, it.Seq)
		}
		if !slices.Equal(seqs, []uint64{1, 2, 3, 4}) {
			t.Errorf("%s group %d received seq %v, want [1 2 3 4]", s.Namespace, s.Group, seqs)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr with --quiet: %q", stderr.String())
	}
}

// TestIntegrationNsid: reading and assigning nsids with RTM_GETNSID and
// RTM_NEWNSID, which needs root but not the module.
func TestIntegrationNsid(t *testing.T) {
	testenv.RequireRoot(t)
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	t.Cleanup(func() { nsmgr.DeleteNamed(name) })
	if id, ok, err := nsidOf(name); err != nil || ok {
		t.Fatalf("a new namespace's nsid: %d, assigned %v, %v; want none", id, ok, err)
	}
	var k hostKernel
	id, err := k.AssignNsid(name)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := nsidOf(name); err != nil || !ok || got != id {
		t.Errorf("nsid after assigning %d: %d, assigned %v, %v", id, got, ok, err)
	}
}

// TestIntegrationListeners: the kernel side of the listener probes,
// straight against the module: a namespace's publish reaches a privileged
// NETLINK_LISTEN_ALL_NSID socket only once it has an nsid, tagged with it,
// and never one an unprivileged user opened.
func TestIntegrationListeners(t *testing.T) {
	unit := testenv.RequireModule(t)
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	t.Cleanup(func() { nsmgr.DeleteNamed(name) })
	pub, err := family.Dial(&family.Config{Unit: unit, NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	k, err := newHostKernel()
	if err != nil {
		t.Fatal(err)
	}
	const group = 31
	priv, err := k.Listen(group, false)
	if err != nil {
		t.Fatal(err)
	}
	defer priv.Close()
	unpriv, err := k.Listen(group, true)
	if err != nil {
		t.Fatal(err)
	}
	defer unpriv.Close()

	// next returns what l receives until the fence published here.
	next := func(l Listener, fence string) []ListenedEvent {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var got []ListenedEvent
		for {
			ev, err := l.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v", fence, err)
			}
			if ev.Payload == fence && ev.Inode == k.Inode() {
				return got
			}
			got = append(got, ev)
		}
	}
	round := func(payload, fence string) (uint64, []ListenedEvent, []ListenedEvent) {
		t.Helper()
		r, err := pub.Publish(group, []byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Publish(group, []byte(fence)); err != nil {
			t.Fatal(err)
		}
		return r.Seq, next(priv, fence), next(unpriv, fence)
	}

	if _, p, u := round("before", "fence 1"); len(p)+len(u) != 0 {
		t.Errorf("without an nsid: privileged listener got %+v, unprivileged %+v; want nothing", p, u)
	}
	nsid, err := k.AssignNsid(name)
	if err != nil {
		t.Fatal(err)
	}
	seq, p, u := round("after", "fence 2")
	want := ListenedEvent{Group: group, Seq: seq, Inode: uint64(ns.Inode()), Payload: "after", Nsid: nsid, HasNsid: true}
	if len(p) != 1 || p[0] != want {
		t.Errorf("with nsid %d: privileged listener got %+v, want [%+v]", nsid, p, want)
	}
	if len(u) != 0 {
		t.Errorf("with nsid %d: unprivileged listener got %+v, want nothing", nsid, u)
	}
}
