package e2e

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// endedByDaemon is how nsbrokerctl subscribe reports a stream the daemon
// ended: ABORTED (the namespace went away) or UNAVAILABLE (its
// connection was cut, or the daemon stopped).
var endedByDaemon = regexp.MustCompile(`^nsbrokerctl: subscribe: (aborted|unavailable): .+\n$`)

// TestIntegrationNetnsDel: `ip netns del` ends the subscriptions to that
// namespace, the tenant's inside it and the admin's, within 2 s, while
// the other namespaces go on working.
func TestIntegrationNetnsDel(t *testing.T) {
	d := startDaemon(t)
	admin, _ := d.client(t)
	const k = 10
	nss := []attached{attachNetns(t, d), attachNetns(t, d), attachNetns(t, d)}
	gone, kept := nss[2], nss[:2]

	count := strconv.Itoa(k)
	subs := map[string][]*bgCtl{}
	for _, ns := range nss {
		subs[ns.name] = []*bgCtl{
			startCtl(t, ns.name, "", "--local", "subscribe", "--group", "2", "--json", "--count", count),
			startCtl(t, "", "", "--socket", d.admin, "subscribe", "--namespace", ns.name, "--group", "2", "--json", "--count", count),
		}
	}
	for _, ns := range nss {
		waitSubscribers(t, admin, ns.name, 2)
	}

	// The tenant's nsbrokerctl keeps the namespace itself alive: only
	// its name goes, and the daemon must notice that.
	start := time.Now()
	if out, err := exec.Command("ip", "netns", "del", gone.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", gone.name, err, out)
	}
	for i, who := range []string{"tenant", "admin"} {
		b := subs[gone.name][i]
		r := b.wait()
		took := b.exitedAt.Sub(start)
		t.Logf("%s subscriber of %s exited %v after ip netns del: %s", who, gone.name, took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
		if took > 2*time.Second {
			t.Errorf("%s subscriber of %s exited %v after ip netns del, want within 2s", who, gone.name, took)
		}
		if r.code != 1 || r.stdout != "" || !endedByDaemon.MatchString(r.stderr) {
			t.Errorf("%s subscriber of deleted %s: got %v, want exit 1, no events, and %v", who, gone.name, r, endedByDaemon)
		}
	}
	_, err := admin.GetNamespace(context.Background(), &nsbrokerv1.GetNamespaceRequest{Namespace: gone.name})
	wantCode(t, "GetNamespace of the deleted namespace", err, codes.NotFound)

	// The others still work, from inside and for the admin.
	for _, ns := range kept {
		stdin := strings.Join(payloadsFor(ns.name, k), "\n")
		if r := runCtl(t, ns.name, stdin, "--local", "publish", "--group", "2"); r.code != 0 {
			t.Errorf("publish in %s after deleting %s: %v", ns.name, gone.name, r)
		}
	}
	for _, ns := range kept {
		for i, who := range []string{"tenant", "admin"} {
			r := subs[ns.name][i].wait()
			if r.code != 0 {
				t.Errorf("%s subscriber of %s: %v", who, ns.name, r)
			}
			checkEvents(t, who+" of "+ns.name, r.stdout, ns.name, ns.inode, 2, payloadsFor(ns.name, k))
		}
	}
	d.stop(t)
}

// TestIntegrationShutdown: SIGTERM ends every subscription with
// UNAVAILABLE, the daemon exits 0, and nothing of it holds the module any
// more, so it can be unloaded.
func TestIntegrationShutdown(t *testing.T) {
	d := startDaemon(t)
	admin, _ := d.client(t)
	ns := attachNetns(t, d)
	tenantSub := startCtl(t, ns.name, "", "--local", "subscribe", "--group", "3")
	adminSub := startCtl(t, "", "", "--socket", d.admin, "subscribe", "--namespace", ns.name, "--group", "3")
	// A Go subscriber too, for the exact status.
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	goSub, err := admin.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: ns.name, Groups: []uint32{3}})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, admin, ns.name, 3)

	d.stop(t)
	_, err = goSub.Recv()
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "shutting down") {
		t.Errorf("Go subscription at shutdown: got %v, want UNAVAILABLE saying the server is shutting down", err)
	}
	for who, b := range map[string]*bgCtl{"tenant": tenantSub, "admin": adminSub} {
		r := b.wait()
		t.Logf("%s subscriber at shutdown: %s", who, strings.TrimSpace(r.stderr))
		if r.code != 1 || !endedByDaemon.MatchString(r.stderr) {
			t.Errorf("%s subscriber at shutdown: got %v, want exit 1 and %v", who, r, endedByDaemon)
		}
	}
	// The daemon's netlink sockets held references on the module; they
	// are gone with it.
	if ref, err := os.ReadFile("/sys/module/nsbroker/refcnt"); err != nil || strings.TrimSpace(string(ref)) != "0" {
		t.Errorf("module refcnt after the daemon exited: got %q (%v), want 0", ref, err)
	}
}
