package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// namespaceOut is what nsbrokerctl ns get/attach --json print.
type namespaceOut struct {
	Name        string `json:"name"`
	Ref         string `json:"ref"`
	Inode       uint64 `json:"inode"`
	State       string `json:"state"`
	Subscribers uint32 `json:"subscribers"`
}

// attached is one namespace the test attached.
type attached struct {
	name  string
	inode uint32
}

// attachNetns creates a namespace, attaches it through nsbrokerctl on the
// admin socket and waits until its local socket is open.
func attachNetns(t *testing.T, d *daemon) attached {
	t.Helper()
	name, inode := newNetns(t)
	var ns namespaceOut
	mustJSON(t, d.ctl(t, "ns", "attach", "--json", "--name", name, "name:"+name), &ns)
	got := fmt.Sprintf("name=%s ref=%s inode=%d state=%s", ns.Name, ns.Ref, ns.Inode, ns.State)
	want := fmt.Sprintf("name=%s ref=name:%s inode=%d state=ready", name, name, inode)
	if got != want {
		t.Fatalf("ns attach %s:\n got %s\nwant %s", name, got, want)
	}
	_, conn := d.client(t)
	waitServing(t, conn, name)
	return attached{name, inode}
}

// TestIntegrationCtlIsolation: three tenants subscribe and publish at
// once, each inside its own namespace through its local socket, while
// the admin subscribes to every namespace; each sees exactly its own
// namespace's events.
func TestIntegrationCtlIsolation(t *testing.T) {
	d := startDaemon(t)
	admin, _ := d.client(t)
	const k = 20
	var nss []attached
	for range 3 {
		nss = append(nss, attachNetns(t, d))
	}

	var list struct{ Namespaces []namespaceOut }
	mustJSON(t, d.ctl(t, "ns", "list", "--json"), &list)
	var got, want []string
	for _, ns := range list.Namespaces {
		got = append(got, fmt.Sprintf("%s/%d", ns.Name, ns.Inode))
	}
	for _, ns := range nss {
		want = append(want, fmt.Sprintf("%s/%d", ns.name, ns.inode))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("admin ns list: got %v, want %v", got, want)
	}

	count := strconv.Itoa(k)
	tenantSubs := make([]*bgCtl, len(nss))
	adminSubs := make([]*bgCtl, len(nss))
	for i, ns := range nss {
		tenantSubs[i] = startCtl(t, ns.name, "", "--local", "subscribe", "--group", "1", "--json", "--count", count)
		adminSubs[i] = startCtl(t, "", "", "--socket", d.admin, "subscribe", "--namespace", ns.name,
			"--group", "1", "--json", "--count", count)
	}
	for _, ns := range nss {
		waitSubscribers(t, admin, ns.name, 2)
	}

	// Every tenant publishes from inside its namespace at the same time,
	// one message per line of stdin.
	pubs := make([]*bgCtl, len(nss))
	for i, ns := range nss {
		stdin := strings.Join(payloadsFor(ns.name, k), "\n") + "\n"
		pubs[i] = startCtl(t, ns.name, stdin, "--local", "publish", "--group", "1", "--json")
	}
	wantPub := fmt.Sprintf(`{"published":%d,"last_seq":{"1":%d}}`+"\n", k, k)
	for i, ns := range nss {
		if r := pubs[i].wait(); r.code != 0 || r.stdout != wantPub {
			t.Errorf("publish in %s: got %v, want exit 0 and %q", ns.name, r, wantPub)
		}
	}
	for i, ns := range nss {
		r := tenantSubs[i].wait()
		if r.code != 0 || r.stderr != "" {
			t.Errorf("tenant subscriber in %s: %v", ns.name, r)
		}
		checkEvents(t, "tenant of "+ns.name, r.stdout, ns.name, ns.inode, 1, payloadsFor(ns.name, k))
		r = adminSubs[i].wait()
		if r.code != 0 || r.stderr != "" {
			t.Errorf("admin subscriber to %s: %v", ns.name, r)
		}
		checkEvents(t, "admin on "+ns.name, r.stdout, ns.name, ns.inode, 1, payloadsFor(ns.name, k))
	}
	d.stop(t)
}

// TestIntegrationCtlTenantView: inside its namespace a tenant sees only
// that namespace, and naming another one (existing or not) fails with
// NOT_FOUND and exit status 1, the same way for both.
func TestIntegrationCtlTenantView(t *testing.T) {
	d := startDaemon(t)
	a, b := attachNetns(t, d), attachNetns(t, d)
	local := func(args ...string) result {
		return runCtl(t, a.name, "", append([]string{"--local"}, args...)...)
	}

	var echo struct {
		Payload    []byte `json:"payload"`
		NetnsInode uint64 `json:"netns_inode"`
	}
	mustJSON(t, local("echo", "--json", "hello"), &echo)
	if string(echo.Payload) != "hello" || echo.NetnsInode != uint64(a.inode) {
		t.Errorf("tenant echo: got payload %q inode %d, want \"hello\" %d", echo.Payload, echo.NetnsInode, a.inode)
	}
	// The admin reaches any namespace by name.
	mustJSON(t, d.ctl(t, "echo", "--json", "--namespace", b.name, "hi"), &echo)
	if echo.NetnsInode != uint64(b.inode) {
		t.Errorf("admin echo in %s: answered by inode %d, want %d", b.name, echo.NetnsInode, b.inode)
	}

	var ns namespaceOut
	mustJSON(t, local("ns", "get", "--json"), &ns)
	if ns.Name != a.name || ns.Inode != uint64(a.inode) {
		t.Errorf("tenant ns get: got %s/%d, want %s/%d", ns.Name, ns.Inode, a.name, a.inode)
	}
	var list struct{ Namespaces []namespaceOut }
	mustJSON(t, local("ns", "list", "--json"), &list)
	if len(list.Namespaces) != 1 || list.Namespaces[0].Name != a.name {
		t.Errorf("tenant ns list: got %+v, want only %s", list.Namespaces, a.name)
	}
	var stats struct {
		Namespaces []struct {
			Namespace string `json:"namespace"`
		} `json:"namespaces"`
		ModuleInstances uint32 `json:"module_instances"`
	}
	mustJSON(t, local("stats", "--json"), &stats)
	if len(stats.Namespaces) != 1 || stats.Namespaces[0].Namespace != a.name || stats.ModuleInstances != 0 {
		t.Errorf("tenant stats: got %+v, want only %s and module_instances 0", stats, a.name)
	}
	mustJSON(t, d.ctl(t, "stats", "--json"), &stats)
	// The module lives in every namespace: the initial one and ours.
	if len(stats.Namespaces) != 2 || stats.ModuleInstances < 3 {
		t.Errorf("admin stats: got %+v, want both namespaces and at least 3 module instances", stats)
	}

	// Naming another namespace: exit 1, NOT_FOUND, and the message a
	// namespace that does not exist gets, so a tenant cannot tell them apart.
	none := "nsb-test-none"
	for _, tt := range []struct {
		cmd  string
		args []string // "%s": the namespace named
	}{
		{"echo", []string{"echo", "--namespace", "%s", "x"}},
		{"publish", []string{"publish", "--namespace", "%s", "--group", "1", "x"}},
		{"subscribe", []string{"subscribe", "--namespace", "%s", "--group", "1"}},
		{"ns get", []string{"ns", "get", "%s"}},
		{"stats", []string{"stats", "--namespace", "%s"}},
	} {
		with := func(name string) []string {
			out := slices.Clone(tt.args)
			out[slices.Index(out, "%s")] = name
			return out
		}
		other, missing := local(with(b.name)...), local(with(none)...)
		prefix := "nsbrokerctl: " + tt.cmd + ": not found: "
		if other.code != 1 || !strings.HasPrefix(other.stderr, prefix) || other.stdout != "" {
			t.Errorf("%s naming %s: got %v, want exit 1 and %q...", tt.cmd, b.name, other, prefix)
		}
		if missing.code != 1 || strings.ReplaceAll(other.stderr, b.name, none) != missing.stderr {
			t.Errorf("%s: another namespace and a missing one differ:\n%s: %v\n%s: %v", tt.cmd, b.name, other, none, missing)
		}
	}

	// Tenants cannot attach or detach, not even their own namespace.
	for _, args := range [][]string{{"ns", "attach", b.name}, {"ns", "detach", a.name}} {
		r := local(args...)
		prefix := "nsbrokerctl: " + args[0] + " " + args[1] + ": permission denied: "
		if r.code != 1 || !strings.HasPrefix(r.stderr, prefix) {
			t.Errorf("tenant %s: got %v, want exit 1 and %q...", strings.Join(args, " "), r, prefix)
		}
	}

	// A namespace that is not attached has no local socket.
	c, _ := newNetns(t)
	r := runCtl(t, c, "", "--local", "echo", "x")
	if want := "nsbrokerctl: cannot connect to @nsbroker: connect: connection refused\n"; r.code != 3 || r.stderr != want {
		t.Errorf("echo in an unattached namespace: got %v, want exit 3 and %q", r, want)
	}
	d.stop(t)
}

// TestIntegrationAttachByName: `ns attach NAME`, with no --name, attaches
// the namespace under NAME itself (the API derives "path:P" and "pid:N"
// only for the other kinds of reference), and its tenant is served there.
func TestIntegrationAttachByName(t *testing.T) {
	d := startDaemon(t)
	name, inode := newNetns(t)
	var ns namespaceOut
	mustJSON(t, d.ctl(t, "ns", "attach", "--json", name), &ns)
	got := fmt.Sprintf("name=%s ref=%s inode=%d", ns.Name, ns.Ref, ns.Inode)
	want := fmt.Sprintf("name=%s ref=name:%s inode=%d", name, name, inode)
	if got != want {
		t.Fatalf("ns attach %s:\n got %s\nwant %s", name, got, want)
	}
	_, conn := d.client(t)
	waitServing(t, conn, name)
	var echo struct {
		NetnsInode uint64 `json:"netns_inode"`
	}
	mustJSON(t, runCtl(t, name, "", "--local", "echo", "--json", "x"), &echo)
	if echo.NetnsInode != uint64(inode) {
		t.Errorf("tenant echo in %s: answered by inode %d, want %d", name, echo.NetnsInode, inode)
	}
	if r := d.ctl(t, "ns", "detach", name); r.code != 0 {
		t.Errorf("ns detach %s: %v", name, r)
	}
	d.stop(t)
}

// TestIntegrationAttachMany: `ns attach` with several REFs attaches them
// in one AttachNamespaces call against the real module: every namespace
// that exists is attached and served in its own namespace, the missing
// one is reported in its place, and the command exits 1 for it.
func TestIntegrationAttachMany(t *testing.T) {
	d := startDaemon(t)
	var names []string
	inodes := map[string]uint32{}
	for range 4 {
		name, inode := newNetns(t)
		names = append(names, name)
		inodes[name] = inode
	}
	const missing = "nsb-e2e-no-such"
	args := append([]string{"ns", "attach", "--json"}, names[:2]...)
	args = append(append(args, missing), names[2:]...)
	r := d.ctl(t, args...)
	if r.code != 1 || r.stderr != "nsbrokerctl: ns attach: 1 of 5 namespaces not attached\n" {
		t.Fatalf("ns attach of 4 namespaces and a missing one: %v, want exit 1 and one failure", r)
	}
	var out struct {
		Results []struct {
			Ref       string
			Namespace *namespaceOut
			Error     string
		}
	}
	mustJSON(t, result{stdout: r.stdout}, &out)
	want := append(append(append([]string(nil), names[:2]...), missing), names[2:]...)
	if len(out.Results) != len(want) {
		t.Fatalf("%d results, want %d: %s", len(out.Results), len(want), r.stdout)
	}
	for i, res := range out.Results {
		if res.Ref != want[i] {
			t.Errorf("result %d is for %q, want %q", i, res.Ref, want[i])
		}
		if want[i] == missing {
			if res.Namespace != nil || !strings.HasPrefix(res.Error, "not found: ") {
				t.Errorf("the missing namespace: %+v, want a not-found error", res)
			}
			continue
		}
		ns := res.Namespace
		if ns == nil || ns.Name != want[i] || ns.Inode != uint64(inodes[want[i]]) || ns.State != "ready" || res.Error != "" {
			t.Errorf("result %d: %+v, want %s ready with inode %d", i, res, want[i], inodes[want[i]])
		}
	}
	_, conn := d.client(t)
	for _, name := range names {
		waitServing(t, conn, name)
		var echo struct {
			NetnsInode uint64 `json:"netns_inode"`
		}
		mustJSON(t, runCtl(t, name, "", "--local", "echo", "--json", "x"), &echo)
		if echo.NetnsInode != uint64(inodes[name]) {
			t.Errorf("tenant echo in %s: answered by inode %d, want %d", name, echo.NetnsInode, inodes[name])
		}
	}
	d.stop(t)
}
