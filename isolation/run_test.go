package isolation

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func testConfig() *Config {
	return &Config{Namespaces: 4, Messages: 5, Groups: []uint32{1, 2}, Prefix: "t-", Timeout: 5 * time.Second}
}

func run(t *testing.T, e *fakeEnv, cfg *Config) *Report {
	t.Helper()
	r, err := Run(context.Background(), cfg, e)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return r
}

func probeStatus(r *Report) map[string]Status {
	m := map[string]Status{}
	for _, p := range r.Probes {
		m[p.Name] = p.Status
	}
	return m
}

func problemKinds(r *Report) []ProblemKind {
	var kinds []ProblemKind
	for _, p := range r.Judgement.Problems {
		if !slices.Contains(kinds, p.Kind) {
			kinds = append(kinds, p.Kind)
		}
	}
	return kinds
}

func TestRunHeld(t *testing.T) {
	e := newFakeEnv(t, faults{})
	r := run(t, e, testConfig())
	if !r.Passed || !strings.HasPrefix(r.Verdict, "PASS: 4 namespaces, group(s) 1,2, 5 messages each") {
		t.Errorf("Passed = %v, verdict %q; want a pass", r.Passed, r.Verdict)
	}
	if len(r.Judgement.Problems) != 0 {
		t.Errorf("problems: %v", r.Judgement.Problems)
	}
	want := map[Status]int{StatusHeld: 8 + 2, StatusDocumented: 1}
	got := map[Status]int{}
	for _, p := range r.Probes {
		got[p.Status]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("probe outcomes %v, want %v; probes: %+v", got, want, r.Probes)
	}
	// Every namespace received its own 5 messages and end marker, seq
	// 1..6, on the diagonal, and nothing elsewhere.
	if len(r.Judgement.Matrix) != 8 {
		t.Fatalf("%d matrix rows, want 8", len(r.Judgement.Matrix))
	}
	for _, row := range r.Judgement.Matrix {
		for _, c := range row.Received {
			want := "-"
			if c.Subscriber == row.Publisher {
				want = "1-6"
			}
			if got := seqList(c.Seqs); got != want || seqList(row.Published) != "1-6" || row.EndSeq != 6 {
				t.Errorf("%s group %d -> %s: received %s of published %s (end marker %d), want %s of 1-6 (end marker 6)",
					row.Publisher, row.Group, c.Subscriber, got, seqList(row.Published), row.EndSeq, want)
			}
		}
	}
	for _, ns := range r.Namespaces {
		if ns.EchoInode != ns.Inode || ns.Inode == 0 {
			t.Errorf("%s: echo inode %d, inode %d", ns.Name, ns.EchoInode, ns.Inode)
		}
	}
	// Everything created is gone again.
	if len(e.d.inodes) != 0 || len(e.d.attached) != 0 {
		t.Errorf("left behind: namespaces %v, attached %v", e.d.inodes, e.d.attached)
	}
	if len(r.Notes) != 0 {
		t.Errorf("notes: %q", r.Notes)
	}
}

const (
	probeConnect  = "each tenant socket reaches its own namespace"
	probeNameEcho = "a tenant names another tenant's namespace: Echo"
	probeNamePub  = "a tenant names another tenant's namespace: Publish"
	probeDetach   = "a tenant detaches another tenant's namespace"
	probeNoNsid   = "a privileged NETLINK_LISTEN_ALL_NSID listener, tenant namespace without an nsid"
	probeUnpriv   = "a NETLINK_LISTEN_ALL_NSID listener opened by an unprivileged user, tenant namespace with an nsid"
	probePrivNsid = "a privileged NETLINK_LISTEN_ALL_NSID listener, tenant namespace with an nsid"
	firstNsInode  = 4026532001
	secondNsInode = 4026532002
)

// TestRunDetects: each fault turns the verdict to failing, through the
// problem or probe that names it.
func TestRunDetects(t *testing.T) {
	tests := []struct {
		name     string
		f        faults
		noKernel bool
		kinds    []ProblemKind     // problem kinds, in order of first appearance
		detail   string            // one problem's exact text
		probes   map[string]Status // probes with these outcomes
	}{
		{
			name:   "leak",
			f:      faults{leakFrom: "t-1", leakTo: "t-2"},
			kinds:  []ProblemKind{ProblemLeak},
			detail: fmt.Sprintf("leak: t-2 group 1: received 6 event(s) published in t-1 (inode %d) to group 1: seq 1-6", firstNsInode),
		},
		{
			name:   "silent gap",
			f:      faults{dropSeq: 3},
			kinds:  []ProblemKind{ProblemMissing},
			detail: "missing: t-1 group 1: never received seq 3, and no gap was reported",
		},
		{
			name:   "reported gap",
			f:      faults{dropSeq: 3, dropWithGap: true},
			kinds:  []ProblemKind{ProblemGap},
			detail: "gap: t-1 group 1: the daemon reported seq 3 lost (LOSS_REASON_QUEUE_FULL)",
		},
		{
			name:   "reorder",
			f:      faults{swapSeq: 2},
			kinds:  []ProblemKind{ProblemReorder},
			detail: "reorder: t-1 group 1: 1 event(s) out of order: seq 2 after seq 3",
		},
		{
			name:   "duplicate",
			f:      faults{dupSeq: 2},
			kinds:  []ProblemKind{ProblemDuplicate},
			detail: "duplicate: t-1 group 1: received seq 2 more than once",
		},
		{
			name:  "wrong inode",
			f:     faults{wrongInode: true},
			kinds: []ProblemKind{ProblemMislabelled},
			detail: fmt.Sprintf(`mislabelled: t-1 group 1: 6 own event(s) mislabelled; the first: payload "nsbroker-isolation run=RUN ns=t-1 group=1 n=1" came as seq 1, namespace "t-1", inode %d, group 1; want seq 1, namespace "t-1", inode %d, group 1`,
				secondNsInode, firstNsInode),
		},
		{
			name:   "stream ends",
			f:      faults{endStream: true},
			kinds:  []ProblemKind{ProblemMissing, ProblemStream},
			detail: `stream: t-1 group 1: the subscription ended early: INTERNAL "fault: stream ended"`,
		},
		{
			name:   "tenant reaches another namespace",
			f:      faults{tenantCrossName: true},
			kinds:  []ProblemKind{ProblemForeign},
			probes: map[string]Status{probeConnect: StatusBroken, probeNameEcho: StatusBroken, probeNamePub: StatusBroken},
		},
		{
			name:   "refusal tells existing namespaces apart",
			f:      faults{revealExisting: true},
			probes: map[string]Status{probeNameEcho: StatusBroken, probeNamePub: StatusBroken, probeDetach: StatusHeld},
		},
		{
			name:   "tenant detaches",
			f:      faults{tenantDetach: true},
			probes: map[string]Status{probeDetach: StatusBroken},
		},
		{
			name:   "echo answered elsewhere",
			f:      faults{echoOtherInode: true},
			probes: map[string]Status{probeConnect: StatusBroken},
		},
		{
			name:   "kernel crosses without an nsid",
			f:      faults{kernelNoNsidCross: true},
			probes: map[string]Status{probeNoNsid: StatusBroken, probeUnpriv: StatusHeld, probePrivNsid: StatusDocumented},
		},
		{
			name:   "kernel crosses for unprivileged openers",
			f:      faults{kernelUnprivCross: true},
			probes: map[string]Status{probeNoNsid: StatusHeld, probeUnpriv: StatusBroken, probePrivNsid: StatusDocumented},
		},
		{
			name:   "documented crossing missing",
			f:      faults{kernelNoDocumented: true},
			probes: map[string]Status{probeNoNsid: StatusHeld, probeUnpriv: StatusHeld, probePrivNsid: StatusInconclusive},
		},
		{
			name:     "no module here",
			noKernel: true,
			probes:   map[string]Status{probeNoNsid: StatusInconclusive, probeUnpriv: StatusInconclusive, probePrivNsid: StatusInconclusive},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t, tt.f)
			e.kernel = !tt.noKernel
			r := run(t, e, testConfig())
			if r.Passed || !strings.HasPrefix(r.Verdict, "FAIL: ") {
				t.Errorf("Passed = %v, verdict %q; want a failure", r.Passed, r.Verdict)
			}
			if got := problemKinds(r); !slices.Equal(got, tt.kinds) {
				t.Errorf("problem kinds %v, want %v; problems:\n%s", got, tt.kinds, problemLines(r))
			}
			if tt.detail != "" {
				want := strings.ReplaceAll(tt.detail, "RUN", r.Run)
				if !slices.Contains(strings.Split(problemLines(r), "\n"), want) {
					t.Errorf("no problem\n%s\namong\n%s", want, problemLines(r))
				}
			}
			got := probeStatus(r)
			for name, want := range tt.probes {
				if got[name] != want {
					t.Errorf("probe %q: %s, want %s", name, got[name], want)
				}
			}
		})
	}
}

func problemLines(r *Report) string {
	var lines []string
	for _, p := range r.Judgement.Problems {
		lines = append(lines, p.String())
	}
	return strings.Join(lines, "\n")
}

func TestRunSkipListenerProbes(t *testing.T) {
	cfg := testConfig()
	cfg.SkipListenerProbes = true
	r := run(t, newFakeEnv(t, faults{}), cfg)
	got := probeStatus(r)
	for _, name := range []string{probeNoNsid, probeUnpriv, probePrivNsid} {
		if got[name] != StatusNotRun {
			t.Errorf("probe %q: %s, want %s", name, got[name], StatusNotRun)
		}
	}
	if !r.Passed || !strings.HasSuffix(r.Verdict, "3 not run") {
		t.Errorf("Passed = %v, verdict %q; want a pass naming 3 probes not run", r.Passed, r.Verdict)
	}
}

// TestRunAttached uses namespaces someone else attached and leaves them.
func TestRunAttached(t *testing.T) {
	e := newFakeEnv(t, faults{})
	for _, name := range []string{"red", "green", "blue"} {
		if err := e.CreateNamespace(name); err != nil {
			t.Fatal(err)
		}
		if _, err := (&server{d: e.d}).AttachNamespace(context.Background(), attachRequest(name)); err != nil {
			t.Fatal(err)
		}
	}
	r := run(t, e, &Config{Names: []string{"red", "green", "blue"}, Attached: true, Messages: 3, Groups: []uint32{1}, SkipListenerProbes: true})
	if !r.Passed {
		t.Errorf("verdict %q, want a pass", r.Verdict)
	}
	if len(e.d.inodes) != 3 || len(e.d.attached) != 3 {
		t.Errorf("namespaces %v, attached %v after the check; want red, green, blue left alone", e.d.inodes, e.d.attached)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Namespaces: 1}, "need at least 2 namespaces, not 1"},
		{Config{Attached: true}, "attached needs the names of the namespaces"},
		{Config{Names: []string{"a", "a"}}, `namespace names must be non-empty and distinct: ["a" "a"]`},
		{Config{Groups: []uint32{33}}, "group 33 is outside 1..32"},
		{Config{Groups: []uint32{1, 1}}, "group 1 is named twice"},
		{Config{Groups: []uint32{32}}, "the probe group 32 must not be one of the checked groups [32]"},
		{Config{Messages: -1}, "messages must be positive, not -1"},
	} {
		_, err := tt.cfg.withDefaults()
		if err == nil || err.Error() != tt.want {
			t.Errorf("%+v: error %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

func TestMainUsage(t *testing.T) {
	for _, args := range [][]string{{"--groups", "x"}, {"--namespaces", "1"}, {"--probe-group", "40"}, {"extra"}, {"--bogus"}} {
		var out, errOut strings.Builder
		if got := Main(args, &out, &errOut); got != ExitUsage {
			t.Errorf("Main(%q) = %d, want %d; stderr %q", args, got, ExitUsage, errOut.String())
		}
	}
	var out, errOut strings.Builder
	if got := Main([]string{"--socket", "/nonexistent/nsbroker.sock", "--timeout", "2s"}, &out, &errOut); got != ExitError ||
		!strings.Contains(errOut.String(), "nsbrokerd does not answer on /nonexistent/nsbroker.sock") {
		t.Errorf("Main without a daemon = %d, stderr %q; want %d and the socket named", got, errOut.String(), ExitError)
	}
}
