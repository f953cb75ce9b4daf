package daemon

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// runFakeMain is the child mode "fake-main": Main's arguments in argsEnv,
// run on the fake kernel (the host has no module), until SIGTERM.
func runFakeMain() int {
	cfg, _, err := parseArgs(strings.Split(os.Getenv(argsEnv), "\n"), os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitUsage
	}
	k := brokertest.NewKernel()
	cfg.BrokerConfig = &broker.Config{Unit: family.DefaultUnit, ModuleIdentity: k.Identity, Dial: k.Dial,
		RetryInterval: 10 * time.Millisecond}
	cfg.Logger = newLogger(cfg, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		cfg.Logger.Error("nsbrokerd failed", "err", err)
		return exitError
	}
	return exitOK
}

// TestIntegrationFDStoreRestart: a daemon under a service manager with an
// fd store (the test plays it: $NOTIFY_SOCKET and $FDSTORE as systemd 254
// sets them) hands it every listening socket by name. Killed with
// SIGKILL, and started again with what the store holds (LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID set to the new process), it serves the same
// sockets: the admin and filesystem sockets are the same inodes, and
// @nsbroker answers as the namespace, while a goroutine binds @nsbroker
// inside the namespace in a loop throughout and never succeeds. Once the
// namespace is detached, its sockets leave the store (FDSTOREREMOVE=1).
func TestIntegrationFDStoreRestart(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	admin := filepath.Join(dir, "nsbroker.sock")
	args := []string{"--admin-socket", admin, "--state-file", filepath.Join(dir, "attachments.json"),
		"--attach", name, "--log-format", "json", "--log-level", "debug"}
	env := append(childEnviron(), childEnv+"=fake-main", argsEnv+"="+strings.Join(args, "\n"))
	m := daemontest.NewServiceManager(t)

	a := m.Start(t, waitTimeout, env, exe)
	waitServing(t, dialUnix(t, admin), name)
	filePath := FileSocketPath(filepath.Join(dir, "ns"), name)
	adminIno, fileIno := inode(t, admin), inode(t, filePath)
	abstractName, fileName := fdNames(ns.ID())
	wantStored := []string{fdAdmin, fdHandover, abstractName, fileName}
	slices.Sort(wantStored)
	stored := func() []string {
		names := m.Names()
		slices.Sort(names)
		return names
	}
	if got := stored(); !slices.Equal(got, wantStored) {
		t.Fatalf("the fd store holds %q, want %q", got, wantStored)
	}

	sq := startLoopSquatter(t, ns, "@nsbroker")
	for sq.tries.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	a.Kill(t, waitTimeout)
	n := sq.tries.Load()
	b := m.Start(t, waitTimeout, env, exe)
	t.Logf("squatter: %d tries between the kill and READY=1 of the new daemon", sq.tries.Load()-n)
	n = sq.tries.Load()
	for sq.tries.Load() < n+100 {
		time.Sleep(time.Millisecond)
	}
	sq.halt()
	t.Logf("squatter: %d tries, %d wins", sq.tries.Load(), sq.wins.Load())
	if w := sq.wins.Load(); w != 0 {
		t.Errorf("the squatter bound @nsbroker %d times", w)
	}

	inherited := false
	for _, line := range strings.Split(b.Log.String(), "\n") {
		if strings.Contains(line, `"msg":"inherited listening sockets"`) {
			inherited = strings.Contains(line, `"from":"service manager"`) && strings.Contains(line, `"count":4`)
			if !inherited {
				t.Errorf("want 4 sockets (admin, handover, @nsbroker, filesystem) from the service manager, got %s", line)
			}
		}
	}
	if !inherited && !t.Failed() {
		t.Errorf("the new daemon did not log the sockets it inherited")
	}
	if got := inode(t, admin); got != adminIno {
		t.Errorf("admin socket: inode %d, want the first daemon's %d", got, adminIno)
	}
	if got := inode(t, filePath); got != fileIno {
		t.Errorf("filesystem socket: inode %d, want the first daemon's %d", got, fileIno)
	}
	for _, via := range []string{"@nsbroker", filePath} {
		cc, err := dialInNamespace(ns, via)
		if err != nil {
			t.Fatalf("%s: %v", via, err)
		}
		own, err := nsbrokerv1.NewBrokerClient(cc).GetNamespace(ctxTimeout(t), &nsbrokerv1.GetNamespaceRequest{})
		cc.Close()
		if err != nil || own.GetName() != name || own.GetInode() != uint64(ns.Inode()) {
			t.Errorf("through %s on the new daemon: want %s inode %d, got %v, %v", via, name, ns.Inode(), own, err)
		}
	}

	// Detached, the namespace's sockets leave the store.
	if _, err := nsbrokerv1.NewBrokerClient(dialUnix(t, admin)).DetachNamespace(ctxTimeout(t),
		&nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
		t.Fatal(err)
	}
	want := []string{fdAdmin, fdHandover}
	slices.Sort(want)
	deadline := time.Now().Add(waitTimeout)
	for got := stored(); !slices.Equal(got, want); got = stored() {
		if time.Now().After(deadline) {
			t.Fatalf("after the detach the fd store holds %q, want %q", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Stop(t, waitTimeout)
}
