package ctl

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// moduleBroker answers ReleaseModule and ResumeModule as the daemon does
// for the admin, over fakeBroker's namespaces, and records the requests.
type moduleBroker struct {
	fakeBroker
	deny      bool // refuse both, as for a tenant
	blockWait bool // a waiting ResumeModule never sees the namespaces ready

	mu       sync.Mutex
	requests []proto.Message // guarded by mu
}

func (m *moduleBroker) recorded() []proto.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]proto.Message(nil), m.requests...)
}

// answer returns fakeBroker's namespaces in state with reason.
func (m *moduleBroker) answer(req proto.Message, state nsbrokerv1.NamespaceState, reason string, epoch uint64) ([]*nsbrokerv1.Namespace, error) {
	m.mu.Lock()
	m.requests = append(m.requests, req)
	m.mu.Unlock()
	if m.deny {
		return nil, status.Errorf(codes.PermissionDenied, "%T is not permitted for tenant", req)
	}
	var out []*nsbrokerv1.Namespace
	for _, name := range []string{"blue", "red"} {
		ns := proto.Clone(namespaces[name]).(*nsbrokerv1.Namespace)
		ns.State, ns.Reason, ns.Epoch = state, reason, epoch
		out = append(out, ns)
	}
	return out, nil
}

func (m *moduleBroker) ReleaseModule(_ context.Context, req *nsbrokerv1.ReleaseModuleRequest) (*nsbrokerv1.ReleaseModuleResponse, error) {
	nss, err := m.answer(req, nsbrokerv1.NamespaceState_NAMESPACE_STATE_UNAVAILABLE, "released", 2)
	if err != nil {
		return nil, err
	}
	return &nsbrokerv1.ReleaseModuleResponse{Namespaces: nss}, nil
}

func (m *moduleBroker) ResumeModule(ctx context.Context, req *nsbrokerv1.ResumeModuleRequest) (*nsbrokerv1.ResumeModuleResponse, error) {
	nss, err := m.answer(req, nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY, "", 3)
	if err != nil {
		return nil, err
	}
	if req.GetWait() && m.blockWait {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &nsbrokerv1.ResumeModuleResponse{Namespaces: nss}, nil
}

func TestModuleRelease(t *testing.T) {
	m := &moduleBroker{}
	sock := serve(t, m)
	ctl(t, "", "--socket", sock, "module", "release").want(t, ExitOK, `NAME  STATE        EPOCH  REASON
blue  unavailable  2      released
red   unavailable  2      released
`, "")
	r := ctl(t, "", "--socket", sock, "module", "release", "--json")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, `{"namespaces":[{"name":"blue","ref":"name:blue",`) ||
		!strings.Contains(r.stdout, `"state":"unavailable","reason":"released"`) || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("module release --json: got %v, want one JSON line listing blue and red as unavailable", r)
	}
	want := []proto.Message{&nsbrokerv1.ReleaseModuleRequest{}, &nsbrokerv1.ReleaseModuleRequest{}}
	if diff := cmp.Diff(want, m.recorded(), protocmp.Transform()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestModuleResume(t *testing.T) {
	m := &moduleBroker{}
	sock := serve(t, m)
	// tabwriter pads the empty reason column.
	const ready = "NAME  STATE  EPOCH  REASON\n" +
		"blue  ready  3      \n" +
		"red   ready  3      \n"
	ctl(t, "", "--socket", sock, "module", "resume").want(t, ExitOK, ready, "")
	ctl(t, "", "--socket", sock, "module", "resume", "--wait").want(t, ExitOK, ready, "")
	want := []proto.Message{&nsbrokerv1.ResumeModuleRequest{}, &nsbrokerv1.ResumeModuleRequest{Wait: true}}
	if diff := cmp.Diff(want, m.recorded(), protocmp.Transform()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestModuleResumeTimeout: --timeout bounds a --wait that never ends.
func TestModuleResumeTimeout(t *testing.T) {
	sock := serve(t, &moduleBroker{blockWait: true})
	r := ctl(t, "", "--socket", sock, "--timeout", "200ms", "module", "resume", "--wait")
	// The detail after the code depends on which side noticed first.
	const want = "nsbrokerctl: module resume: deadline exceeded: "
	if r.code != ExitFailed || r.stdout != "" || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("got %v, want exit %d and stderr %q...", r, ExitFailed, want)
	}
}

func TestModuleDenied(t *testing.T) {
	sock := serve(t, &moduleBroker{deny: true})
	ctl(t, "", "--socket", sock, "module", "release").want(t, ExitFailed, "",
		"nsbrokerctl: module release: permission denied: *nsbrokerv1.ReleaseModuleRequest is not permitted for tenant\n")
	ctl(t, "", "--socket", sock, "module", "resume").want(t, ExitFailed, "",
		"nsbrokerctl: module resume: permission denied: *nsbrokerv1.ResumeModuleRequest is not permitted for tenant\n")
}

func TestModuleUsage(t *testing.T) {
	// Nothing listens there: a command that got as far as connecting would
	// exit 3, not 2.
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"module"}, "nsbrokerctl: module: module needs a subcommand: release or resume"},
		{[]string{"module", "unload"}, `nsbrokerctl: unknown command "module unload"`},
		{[]string{"module", "release", "now"}, `nsbrokerctl: module release: unexpected argument "now"`},
		{[]string{"module", "resume", "--wait=maybe"}, `nsbrokerctl: module resume: invalid boolean value "maybe" for -wait: parse error`},
	} {
		r := ctl(t, "", append([]string{"--socket", sock}, tt.args...)...)
		first, _, _ := strings.Cut(r.stderr, "\n")
		if r.code != ExitUsage || r.stdout != "" || first != tt.msg {
			t.Errorf("%q: got %v, want exit %d and %q", tt.args, r, ExitUsage, tt.msg)
		}
	}
}
