package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// principal is one way of connecting to the server.
type principal struct {
	name   string
	client nsbrokerv1.BrokerClient
	home   string   // label an empty namespace field means
	sees   []string // labels ListNamespaces returns
	admin  bool
}

// Codes, short for the table.
const (
	ok      = codes.OK
	nfound  = codes.NotFound
	denied  = codes.PermissionDenied
	invalid = codes.InvalidArgument
	unavail = codes.Unavailable
)

// Cells are "Rpc(target)": target is a namespace label, "" for an empty
// namespace field, C for a namespace made for the cell; rpcs without a
// namespace have no parentheses.
var (
	adminCells = map[string]codes.Code{
		"ListNamespaces": ok, "WatchNamespaces": ok,
		"Stats()": ok, "Stats(A)": ok, "Stats(B)": ok,
		"GetNamespace()": invalid, "GetNamespace(A)": ok, "GetNamespace(B)": ok,
		"Echo()": invalid, "Echo(A)": ok, "Echo(B)": ok,
		"Publish()": invalid, "Publish(A)": ok, "Publish(B)": ok,
		"PublishStream()": invalid, "PublishStream(A)": ok, "PublishStream(B)": ok,
		"Subscribe()": invalid, "Subscribe(A)": ok, "Subscribe(B)": ok,
		"AttachNamespace(C)": ok, "AttachNamespaces(C)": ok, "DetachNamespace(C)": ok,
		"ReleaseModule": ok, "ResumeModule": ok,
	}
	tenantACells = map[string]codes.Code{
		"ListNamespaces": ok, "WatchNamespaces": ok,
		"Stats()": ok, "Stats(A)": ok, "Stats(B)": nfound,
		"GetNamespace()": ok, "GetNamespace(A)": ok, "GetNamespace(B)": nfound,
		"Echo()": ok, "Echo(A)": ok, "Echo(B)": nfound,
		"Publish()": ok, "Publish(A)": ok, "Publish(B)": nfound,
		"PublishStream()": ok, "PublishStream(A)": ok, "PublishStream(B)": nfound,
		"Subscribe()": ok, "Subscribe(A)": ok, "Subscribe(B)": nfound,
		"AttachNamespace(C)": denied, "AttachNamespaces(C)": denied,
		"DetachNamespace(C)": denied, "DetachNamespace(A)": denied,
		"ReleaseModule": denied, "ResumeModule": denied,
	}
	tenantBCells = map[string]codes.Code{
		"ListNamespaces": ok, "WatchNamespaces": ok,
		"Stats()": ok, "Stats(A)": nfound, "Stats(B)": ok,
		"GetNamespace()": ok, "GetNamespace(A)": nfound, "GetNamespace(B)": ok,
		"Echo()": ok, "Echo(A)": nfound, "Echo(B)": ok,
		"Publish()": ok, "Publish(A)": nfound, "Publish(B)": ok,
		"PublishStream()": ok, "PublishStream(A)": nfound, "PublishStream(B)": ok,
		"Subscribe()": ok, "Subscribe(A)": nfound, "Subscribe(B)": ok,
		"AttachNamespace(C)": denied, "AttachNamespaces(C)": denied,
		"DetachNamespace(C)": denied, "DetachNamespace(A)": denied,
		"ReleaseModule": denied, "ResumeModule": denied,
	}
)

// refused is the row of a connection the server refuses: every rpc fails
// to reach it.
func refused() map[string]codes.Code {
	m := map[string]codes.Code{}
	for cell := range tenantACells {
		m[cell] = unavail
	}
	return m
}

// TestIntegrationAuthorizationMatrix calls every rpc as every principal on
// every namespace and checks the status code, and for the calls that
// succeed, that the right namespace answered.
func TestIntegrationAuthorizationMatrix(t *testing.T) {
	e := newEnv(t, nil)
	rows := []struct {
		p     principal
		cells map[string]codes.Code
	}{
		{principal{name: "admin", client: e.adminClient(), sees: []string{"A", "B"}, admin: true}, adminCells},
		{principal{name: "tenantA", client: e.localClient("A"), home: "A", sees: []string{"A"}}, tenantACells},
		{principal{name: "tenantB", client: e.localClient("B"), home: "B", sees: []string{"B"}}, tenantBCells},
		// A certificate tenant mapped to A has tenant A's rights.
		{principal{name: "tlsA", client: e.tlsClient(e.pki.client("acme")), home: "A", sees: []string{"A"}}, tenantACells},
		{principal{name: "noCert", client: e.tlsClient(nil)}, refused()},
		{principal{name: "otherCA", client: e.tlsClient(e.pki.foreignClient("acme"))}, refused()},
		{principal{name: "unmapped", client: e.tlsClient(e.pki.client("stranger"))}, refused()},
		{principal{name: "plainTCP", client: e.plainTCPClient()}, refused()},
	}
	for _, row := range rows {
		cells := make([]string, 0, len(row.cells))
		for cell := range row.cells {
			cells = append(cells, cell)
		}
		slices.Sort(cells)
		for _, cell := range cells {
			want := row.cells[cell]
			t.Run(row.p.name+"/"+cell, func(t *testing.T) {
				rpc, target := parseCell(cell)
				run, ok := runners[rpc]
				if !ok {
					t.Fatalf("no runner for %s", rpc)
				}
				err := run(t, e, row.p, target)
				if got := status.Code(err); got != want {
					t.Fatalf("%s as %s: got %v (%v), want %v", cell, row.p.name, got, err, want)
				}
			})
		}
	}
}

func parseCell(cell string) (rpc, target string) {
	rpc, target, _ = strings.Cut(cell, "(")
	return rpc, strings.TrimSuffix(target, ")")
}

// runner calls one rpc as p on the namespace labelled target; when the
// call succeeds it checks the answer came from the right namespace, and
// it checks that a refused call had no effect. It returns the call's error.
type runner func(t *testing.T, e *env, p principal, target string) error

var runners = map[string]runner{
	"ListNamespaces":   runList,
	"WatchNamespaces":  runWatch,
	"Stats":            runStats,
	"GetNamespace":     runGet,
	"Echo":             runEcho,
	"Publish":          runPublish,
	"PublishStream":    runPublishStream,
	"Subscribe":        runSubscribe,
	"AttachNamespace":  runAttach,
	"AttachNamespaces": runAttachMany,
	"DetachNamespace":  runDetach,
	"ReleaseModule":    runRelease,
	"ResumeModule":     runResume,
}

// nsField is what the request's namespace field says for target.
func nsField(e *env, target string) string {
	if target == "" {
		return ""
	}
	return e.names[target]
}

// answering is the label of the namespace that must answer a call on
// target.
func answering(p principal, target string) string {
	if target == "" {
		return p.home
	}
	return target
}

func (e *env) labels(names []string) []string {
	var out []string
	for _, n := range names {
		found := false
		for label, name := range e.names {
			if name == n {
				out, found = append(out, label), true
			}
		}
		if !found {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func runList(t *testing.T, e *env, p principal, _ string) error {
	r, err := p.client.ListNamespaces(testContext(t), &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		return err
	}
	var names []string
	for _, ns := range r.Namespaces {
		names = append(names, ns.Name)
		if label := e.labels([]string{ns.Name})[0]; e.ns[label] != nil && ns.Inode != uint64(e.inode(label)) {
			t.Errorf("namespace %s: inode got %d, want %d", label, ns.Inode, e.inode(label))
		}
	}
	if got := e.labels(names); !slices.Equal(got, p.sees) {
		t.Errorf("ListNamespaces: got %v, want %v", got, p.sees)
	}
	return nil
}

func runWatch(t *testing.T, e *env, p principal, _ string) error {
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream, err := p.client.WatchNamespaces(ctx, &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	// The first event means the watch is in place: now a namespace comes
	// and goes, and every namespace loses and regains its connection.
	name, _ := newNamed(t)
	if _, err := e.b.Attach(ctx, name, nsmgr.Ref{Name: name}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Detach(name); err != nil {
		t.Fatal(err)
	}
	e.b.Release()
	e.b.Resume()
	defer e.waitReady()

	got := []string{describe(e, first)}
	ready := map[string]bool{}
	for len(ready) < len(p.sees) {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch ended early after %v: %v", got, err)
		}
		got = append(got, describe(e, ev))
		if ev.Kind == nsbrokerv1.NamespaceEvent_KIND_READY {
			ready[ev.Namespace.Name] = true
		}
	}
	var want []string
	for _, label := range p.sees {
		want = append(want, "ATTACHED "+label, "UNAVAILABLE "+label, "READY "+label)
	}
	if p.admin {
		want = append(want, "ATTACHED new", "DETACHED new")
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("watch events: got %v, want %v", got, want)
	}
	return nil
}

// describe is "KIND label" for a watch event, "new" for a namespace that
// is not one of e's; it checks the inode of e's namespaces.
func describe(e *env, ev *nsbrokerv1.NamespaceEvent) string {
	label := e.labels([]string{ev.Namespace.Name})[0]
	if e.ns[label] == nil {
		label = "new"
	} else if ev.Namespace.Inode != uint64(e.inode(label)) {
		return fmt.Sprintf("%s with inode %d, want %d", label, ev.Namespace.Inode, e.inode(label))
	}
	return strings.TrimPrefix(ev.Kind.String(), "KIND_") + " " + label
}

func runStats(t *testing.T, e *env, p principal, target string) error {
	r, err := p.client.Stats(testContext(t), &nsbrokerv1.StatsRequest{Namespace: nsField(e, target)})
	if err != nil {
		return err
	}
	want := p.sees
	if target != "" {
		want = []string{target}
	}
	var names []string
	for _, ns := range r.Namespaces {
		names = append(names, ns.Namespace)
		if ns.Kernel == nil || ns.Daemon == nil {
			t.Errorf("stats of %s: kernel %v daemon %v, want both", ns.Namespace, ns.Kernel, ns.Daemon)
		}
	}
	if got := e.labels(names); !slices.Equal(got, want) {
		t.Errorf("Stats namespaces: got %v, want %v", got, want)
	}
	// Module-wide instances are for the admin only.
	if p.admin && r.ModuleInstances < 2 || !p.admin && r.ModuleInstances != 0 {
		t.Errorf("module_instances got %d, want %s", r.ModuleInstances, map[bool]string{true: ">= 2", false: "0"}[p.admin])
	}
	return nil
}

func runGet(t *testing.T, e *env, p principal, target string) error {
	r, err := p.client.GetNamespace(testContext(t), &nsbrokerv1.GetNamespaceRequest{Namespace: nsField(e, target)})
	if err != nil {
		return err
	}
	want := answering(p, target)
	if r.Name != e.names[want] || r.Inode != uint64(e.inode(want)) {
		t.Errorf("GetNamespace: got %s inode %d, want %s inode %d", r.Name, r.Inode, e.names[want], e.inode(want))
	}
	return nil
}

func runEcho(t *testing.T, e *env, p principal, target string) error {
	payload := []byte("echo " + p.name + " " + target)
	r, err := p.client.Echo(testContext(t), &nsbrokerv1.EchoRequest{Namespace: nsField(e, target), Payload: payload})
	if err != nil {
		return err
	}
	want := answering(p, target)
	if r.NetnsInode != uint64(e.inode(want)) || string(r.Payload) != string(payload) {
		t.Errorf("Echo: got inode %d payload %q, want inode %d (%s) payload %q", r.NetnsInode, r.Payload, e.inode(want), want, payload)
	}
	return nil
}

// matrixGroup is the group the publish cells use.
const matrixGroup = 7

// publishProbe subscribes to matrixGroup in A and B directly on the
// broker, runs publish, then publishes a probe in both straight into the
// fake kernel: each subscription must see the payloads of the publishes
// that succeeded in its namespace, then its probe, and nothing else.
func publishProbe(t *testing.T, e *env, publish func() (target string, payloads []string, err error)) error {
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	subs := map[string]<-chan broker.Event{}
	for _, label := range []string{"A", "B"} {
		ch, err := e.subscribe(ctx, e.names[label], []uint32{matrixGroup})
		if err != nil {
			t.Fatal(err)
		}
		subs[label] = ch
	}
	target, payloads, err := publish()
	for _, label := range []string{"A", "B"} {
		e.k.Publish(e.inode(label), matrixGroup, []byte("probe"))
		var want []string
		if err == nil && label == target {
			want = payloads
		}
		want = append(want, "probe")
		for _, w := range want {
			select {
			case ev := <-subs[label]:
				if ev.Kind != broker.KindMessage || string(ev.Message.Payload) != w || ev.Message.NetnsInum != e.inode(label) {
					t.Fatalf("namespace %s: got %v %q inode %d, want message %q inode %d",
						label, ev.Kind, ev.Message.Payload, ev.Message.NetnsInum, w, e.inode(label))
				}
			case <-ctx.Done():
				t.Fatalf("namespace %s: no event %q", label, w)
			}
		}
	}
	return err
}

func runPublish(t *testing.T, e *env, p principal, target string) error {
	return publishProbe(t, e, func() (string, []string, error) {
		payload := "publish " + p.name + " " + target
		r, err := p.client.Publish(testContext(t), &nsbrokerv1.PublishRequest{
			Namespace: nsField(e, target), Group: matrixGroup, Payload: []byte(payload)})
		if err == nil && (r.Group != matrixGroup || r.Seq == 0) {
			t.Errorf("Publish: got group %d seq %d, want group %d seq > 0", r.Group, r.Seq, matrixGroup)
		}
		return answering(p, target), []string{payload}, err
	})
}

func runPublishStream(t *testing.T, e *env, p principal, target string) error {
	return publishProbe(t, e, func() (string, []string, error) {
		stream, err := p.client.PublishStream(testContext(t))
		if err != nil {
			return "", nil, err
		}
		payloads := []string{"stream 1 " + p.name, "stream 2 " + p.name}
		for _, pl := range payloads {
			// A send fails once the server has ended the stream; the
			// status comes from CloseAndRecv.
			if stream.Send(&nsbrokerv1.PublishRequest{Namespace: nsField(e, target), Group: matrixGroup, Payload: []byte(pl)}) != nil {
				break
			}
		}
		r, err := stream.CloseAndRecv()
		if err == nil && (r.Published != 2 || r.LastSeq[matrixGroup] == 0) {
			t.Errorf("PublishStream: got published %d last_seq %v, want 2 and a seq for group %d", r.Published, r.LastSeq, matrixGroup)
		}
		return answering(p, target), payloads, err
	})
}

func runSubscribe(t *testing.T, e *env, p principal, target string) error {
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream, err := p.client.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: nsField(e, target), Groups: []uint32{matrixGroup}})
	if err != nil {
		return err
	}
	// Headers come once the subscription is in place (or the stream failed).
	if _, err := stream.Header(); err != nil {
		return err
	}
	want := answering(p, target)
	// An event in every namespace, the one that must answer last: the
	// first event received must be that one.
	var seq uint64
	for _, label := range []string{"A", "B"} {
		if label != want {
			e.k.Publish(e.inode(label), matrixGroup, []byte("elsewhere"))
		}
	}
	if want != "" {
		seq = e.k.Publish(e.inode(want), matrixGroup, []byte("here"))
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			return err
		}
		ev := r.GetEvent()
		// The daemon keeps a group joined once subscribed (for resuming
		// subscribers), so an event published to the target before this
		// subscription, by an earlier case, may still be on its way to
		// it: the target's own, and older.
		if ev != nil && ev.NetnsInode == uint64(e.inode(want)) && ev.Namespace == e.names[want] && ev.Seq < seq && string(ev.Payload) == "elsewhere" {
			continue
		}
		if ev == nil || ev.NetnsInode != uint64(e.inode(want)) || ev.Namespace != e.names[want] || ev.Seq != seq || string(ev.Payload) != "here" {
			t.Errorf("Subscribe: got %v, want event %q seq %d from %s inode %d", r, "here", seq, e.names[want], e.inode(want))
		}
		return nil
	}
}

func runAttach(t *testing.T, e *env, p principal, _ string) error {
	name, ns := newNamed(t)
	r, err := p.client.AttachNamespace(testContext(t), &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: byName(name)})
	return checkAttached(t, e, "AttachNamespace", name, ns, r, err)
}

func runAttachMany(t *testing.T, e *env, p principal, _ string) error {
	name, ns := newNamed(t)
	r, err := p.client.AttachNamespaces(testContext(t), &nsbrokerv1.AttachNamespacesRequest{
		Namespaces: []*nsbrokerv1.AttachNamespaceRequest{{Name: name, Ref: byName(name)}}})
	var got *nsbrokerv1.Namespace
	if err == nil {
		if len(r.Results) != 1 {
			t.Fatalf("AttachNamespaces of one namespace: %d results", len(r.Results))
		}
		got = r.Results[0].Namespace
		if c := r.Results[0].Code; c != 0 {
			err = status.Error(codes.Code(c), r.Results[0].Message)
		}
	}
	return checkAttached(t, e, "AttachNamespaces", name, ns, got, err)
}

// checkAttached checks the outcome of an rpc that attached ns under name:
// refused, the broker must not have it; otherwise the answer and the
// broker must both name it. It returns the rpc's error.
func checkAttached(t *testing.T, e *env, rpc, name string, ns *nsmgr.Namespace, got *nsbrokerv1.Namespace, err error) error {
	in, getErr := e.b.Get(name)
	if err != nil {
		if getErr == nil {
			t.Errorf("refused %s attached %s all the same", rpc, name)
		}
		return err
	}
	defer e.b.Detach(name)
	if got.GetName() != name || got.GetInode() != uint64(ns.Inode()) || getErr != nil || in.Inode != ns.Inode() {
		t.Errorf("%s: got %s inode %d, broker has inode %d (%v), want %s inode %d",
			rpc, got.GetName(), got.GetInode(), in.Inode, getErr, name, ns.Inode())
	}
	return nil
}

func runDetach(t *testing.T, e *env, p principal, target string) error {
	name := e.names[target]
	if target == "C" {
		name, _ = newNamed(t)
		if _, err := e.b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
			t.Fatal(err)
		}
		defer e.b.Detach(name)
	}
	_, err := p.client.DetachNamespace(testContext(t), &nsbrokerv1.DetachNamespaceRequest{Namespace: name})
	_, getErr := e.b.Get(name)
	if err == nil && getErr == nil {
		t.Errorf("DetachNamespace(%s) succeeded but it is still attached", name)
	}
	if err != nil && getErr != nil {
		t.Errorf("refused DetachNamespace(%s) detached it all the same", name)
	}
	return err
}

// states is "label STATE epoch N" for each of e's namespaces, as the
// broker has them.
func (e *env) states(t *testing.T) []string {
	var out []string
	for _, label := range []string{"A", "B"} {
		in, err := e.b.Get(e.names[label])
		if err != nil {
			t.Fatalf("namespace %s: %v", label, err)
		}
		out = append(out, fmt.Sprintf("%s %v epoch %d", label, in.State, in.Epoch))
	}
	return out
}

// protoStates is states for the namespaces of an rpc's answer.
func (e *env) protoStates(nss []*nsbrokerv1.Namespace) []string {
	var out []string
	for _, ns := range nss {
		state := map[nsbrokerv1.NamespaceState]broker.State{
			nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY:       broker.StateReady,
			nsbrokerv1.NamespaceState_NAMESPACE_STATE_UNAVAILABLE: broker.StateUnavailable,
		}[ns.State]
		out = append(out, fmt.Sprintf("%s %v epoch %d", e.labels([]string{ns.Name})[0], state, ns.Epoch))
	}
	return out
}

// withState is states with every namespace in state and its epoch grown
// by grow.
func withState(t *testing.T, states []string, state broker.State, grow uint64) []string {
	var out []string
	for _, s := range states {
		var label, old string
		var epoch uint64
		if _, err := fmt.Sscanf(s, "%s %s epoch %d", &label, &old, &epoch); err != nil {
			t.Fatalf("parsing %q: %v", s, err)
		}
		out = append(out, fmt.Sprintf("%s %v epoch %d", label, state, epoch+grow))
	}
	return out
}

func runRelease(t *testing.T, e *env, p principal, _ string) error {
	before := e.states(t)
	defer e.waitReady()
	defer e.b.Resume()
	r, err := p.client.ReleaseModule(testContext(t), &nsbrokerv1.ReleaseModuleRequest{})
	want := withState(t, before, broker.StateUnavailable, 0)
	if err != nil {
		want = before
	}
	// Held by the release, the broker does not re-dial until Resume.
	if got := e.states(t); !slices.Equal(got, want) {
		t.Errorf("after ReleaseModule (%v): broker has %v, want %v", err, got, want)
	}
	if err == nil {
		if got := e.protoStates(r.Namespaces); !slices.Equal(got, want) {
			t.Errorf("ReleaseModule answered %v, want %v", got, want)
		}
	}
	return err
}

func runResume(t *testing.T, e *env, p principal, _ string) error {
	before := e.states(t)
	e.b.Release()
	defer e.waitReady()
	defer e.b.Resume()
	r, err := p.client.ResumeModule(testContext(t), &nsbrokerv1.ResumeModuleRequest{Wait: true})
	if err != nil {
		// Still held: a refused resume must not have ended the release.
		want := withState(t, before, broker.StateUnavailable, 0)
		if got := e.states(t); !slices.Equal(got, want) {
			t.Errorf("after a refused ResumeModule: broker has %v, want %v", got, want)
		}
		return err
	}
	want := withState(t, before, broker.StateReady, 1)
	if got := e.protoStates(r.Namespaces); !slices.Equal(got, want) {
		t.Errorf("ResumeModule with wait answered %v, want %v", got, want)
	}
	return nil
}

// TestMatrixCoversEveryRPC fails when an rpc of the service is missing
// from the access table, the runners or the matrix's rows.
func TestMatrixCoversEveryRPC(t *testing.T) {
	var rpcs []string
	for _, m := range nsbrokerv1.Broker_ServiceDesc.Methods {
		rpcs = append(rpcs, m.MethodName)
	}
	for _, s := range nsbrokerv1.Broker_ServiceDesc.Streams {
		rpcs = append(rpcs, s.StreamName)
	}
	for _, rpc := range rpcs {
		if _, ok := access[rpc]; !ok {
			t.Errorf("%s: no entry in access", rpc)
		}
		if _, ok := runners[rpc]; !ok {
			t.Errorf("%s: no runner", rpc)
		}
		for _, cells := range []map[string]codes.Code{adminCells, tenantACells, tenantBCells} {
			found := false
			for cell := range cells {
				if r, _ := parseCell(cell); r == rpc {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no cell in a row of the matrix", rpc)
			}
		}
	}
}
