package fault

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationRememberAttachments: namespaces attached only through the
// admin API, by name and by pid, survive nsbrokerd killed with SIGKILL
// right after the attach answered: the daemon started again with the same
// state file serves them from the first request, under the same names,
// and each answers Echo from its own namespace, through the admin socket
// and through its tenant's @nsbroker. A namespace whose name was given to
// another namespace while no daemon ran is not attached again.
func TestIntegrationRememberAttachments(t *testing.T) {
	requireDaemon(t)
	stateFile := filepath.Join(t.TempDir(), "attachments.json")
	byName := newNetns(t)
	forPID := newNetns(t)
	replaced := newNetns(t)
	sleeper := exec.Command("ip", "netns", "exec", forPID.name, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pid := sleeper.Process.Pid
	eventually(t, waitTimeout, "the sleeper inside "+forPID.name, func() (bool, string) {
		ns, err := nsmgr.Open(nsmgr.Ref{PID: pid})
		if err != nil {
			return false, err.Error()
		}
		defer ns.Close()
		return ns.Inode() == forPID.inode, fmt.Sprintf("pid %d in net:[%d]", pid, ns.Inode())
	})

	// No --attach, no --discover: only the API attaches.
	d := startDaemon(t, filepath.Join(t.TempDir(), "nsbroker.sock"), "--state-file", stateFile)
	admin, _ := d.client(t)
	type attached struct {
		name  string
		inode uint32
		ref   *nsbrokerv1.NamespaceRef
	}
	want := []attached{
		{byName.name, byName.inode, &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: byName.name}}},
		{"by-pid", forPID.inode, &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(pid)}}},
	}
	cookies := map[string]uint64{}
	for _, a := range append(want, attached{replaced.name, replaced.inode,
		&nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: replaced.name}}}) {
		ns, err := admin.AttachNamespace(rpcContext(t), &nsbrokerv1.AttachNamespaceRequest{Name: a.name, Ref: a.ref})
		if err != nil {
			t.Fatalf("attach %s: %v", a.name, err)
		}
		if ns.GetInode() != uint64(a.inode) {
			t.Fatalf("attach %s: inode %d, want %d", a.name, ns.GetInode(), a.inode)
		}
		cookies[a.name] = ns.GetCookie()
	}

	// At once: the attach answered, so the state file has it.
	d.kill(t)
	// While no daemon runs, the name goes to another namespace.
	delNetns(t, replaced.name)
	if out, err := exec.Command("ip", "netns", "add", replaced.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", replaced.name, err, out)
	}
	d = d.restart(t)
	admin, adminConn := d.client(t)

	// READY=1 means serving: the first requests find every namespace.
	for _, a := range want {
		ns, err := admin.GetNamespace(rpcContext(t), &nsbrokerv1.GetNamespaceRequest{Namespace: a.name})
		if err != nil {
			t.Errorf("right after the restart: GetNamespace %s: %v (%v), want it attached", a.name, status.Code(err), err)
			continue
		}
		if ns.GetInode() != uint64(a.inode) || ns.GetCookie() != cookies[a.name] {
			t.Errorf("%s after the restart: inode %d cookie %d, want inode %d cookie %d",
				a.name, ns.GetInode(), ns.GetCookie(), a.inode, cookies[a.name])
		}
	}
	list, err := admin.ListNamespaces(rpcContext(t), &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got, wantNames []string
	for _, ns := range list.GetNamespaces() {
		got = append(got, fmt.Sprintf("%s inode %d", ns.GetName(), ns.GetInode()))
	}
	for _, a := range want {
		wantNames = append(wantNames, fmt.Sprintf("%s inode %d", a.name, a.inode))
	}
	slices.Sort(wantNames)
	if !slices.Equal(got, wantNames) {
		t.Errorf("namespaces after the restart: got %q, want %q (%s, whose name now names another namespace, dropped)", got, wantNames, replaced.name)
	}
	if log := d.Log.String(); !strings.Contains(log, `"msg":"recorded attachment dropped"`) || !strings.Contains(log, replaced.name) {
		t.Errorf("no log line dropping %s", replaced.name)
	}

	// Each serves Echo from its own namespace: asked by name through the
	// admin socket, and by its tenant through @nsbroker inside it.
	tenants := map[string]nsmgr.Ref{byName.name: {Name: byName.name}, "by-pid": {PID: pid}}
	for _, a := range want {
		waitServing(t, adminConn, a.name)
		payload := []byte("after the restart: " + a.name)
		r, err := admin.Echo(rpcContext(t), &nsbrokerv1.EchoRequest{Namespace: a.name, Payload: payload})
		if err != nil {
			t.Errorf("admin Echo %s: %v", a.name, err)
		} else if r.GetNetnsInode() != uint64(a.inode) || !bytes.Equal(r.GetPayload(), payload) {
			t.Errorf("admin Echo %s: answered from net:[%d] with %q, want net:[%d] with %q", a.name, r.GetNetnsInode(), r.GetPayload(), a.inode, payload)
		}
		tn := newTenantIn(t, tenants[a.name])
		r, err = tn.Echo(rpcContext(t), &nsbrokerv1.EchoRequest{Payload: payload})
		if err != nil {
			t.Errorf("tenant Echo in %s: %v", a.name, err)
		} else if r.GetNetnsInode() != uint64(a.inode) {
			t.Errorf("tenant Echo in %s: answered from net:[%d], want net:[%d]", a.name, r.GetNetnsInode(), a.inode)
		}
		tn.close()
	}
	d.Stop(t, waitTimeout)
}
