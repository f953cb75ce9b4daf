package isolation

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// A small world: red and green each published seq 1..3 to group 1.
var (
	testNamespaces = []Namespace{{Name: "red", Inode: 1001}, {Name: "green", Inode: 1002}}
	testPubs       = func() []Publication {
		var pubs []Publication
		for _, ns := range []string{"red", "green"} {
			for seq := uint64(1); seq <= 3; seq++ {
				pubs = append(pubs, Publication{Namespace: ns, Group: 1, Seq: seq, Payload: fmt.Sprintf("%s/1/%d", ns, seq)})
			}
		}
		return pubs
	}()
)

// ev is the event the fake world delivers for ns's publish seq.
func ev(ns string, seq uint64) Item {
	inode := map[string]uint64{"red": 1001, "green": 1002}[ns]
	return Item{Namespace: ns, Group: 1, Seq: seq, Inode: inode, Payload: fmt.Sprintf("%s/1/%d", ns, seq)}
}

func own(ns string, seqs ...uint64) []Item {
	var items []Item
	for _, s := range seqs {
		items = append(items, ev(ns, s))
	}
	return items
}

func TestJudge(t *testing.T) {
	gap := Item{Gap: true, Namespace: "red", Group: 1, From: 2, To: 2, Reason: "LOSS_REASON_QUEUE_FULL"}
	tests := []struct {
		name string
		red  []Item // what red's subscriber received; green's is always correct
		err  string
		want []Problem
	}{
		{name: "exactly its own", red: own("red", 1, 2, 3)},
		{
			name: "leak",
			red:  append(own("red", 1, 2), ev("green", 1), ev("green", 2), ev("red", 3)),
			want: []Problem{{ProblemLeak, "red", 1, "received 2 event(s) published in green (inode 1002) to group 1: seq 1-2"}},
		},
		{
			name: "leak relabelled as the receiver's own",
			red: append(own("red", 1, 2, 3),
				Item{Namespace: "red", Group: 1, Seq: 4, Inode: 1001, Payload: "green/1/3"}),
			want: []Problem{{ProblemLeak, "red", 1, "received 1 event(s) published in green (inode 1002) to group 1: seq 4"}},
		},
		{
			name: "gap reported",
			red:  []Item{ev("red", 1), gap, ev("red", 3)},
			want: []Problem{{ProblemGap, "red", 1, "the daemon reported seq 2 lost (LOSS_REASON_QUEUE_FULL)"}},
		},
		{
			name: "silent gap",
			red:  own("red", 1, 3),
			want: []Problem{{ProblemMissing, "red", 1, "never received seq 2, and no gap was reported"}},
		},
		{
			name: "reorder",
			red:  own("red", 1, 3, 2),
			want: []Problem{{ProblemReorder, "red", 1, "1 event(s) out of order: seq 2 after seq 3"}},
		},
		{
			name: "duplicate",
			red:  own("red", 1, 2, 2, 3),
			want: []Problem{{ProblemDuplicate, "red", 1, "received seq 2 more than once"}},
		},
		{
			name: "foreign",
			red:  append(own("red", 1, 2, 3), Item{Namespace: "red", Group: 1, Seq: 4, Inode: 1001, Payload: "spoof"}),
			want: []Problem{{ProblemForeign, "red", 1, `received 1 event(s) nobody published in this check; the first: seq 4, namespace "red", inode 1001, payload "spoof"`}},
		},
		{
			name: "wrong inode",
			red:  []Item{ev("red", 1), {Namespace: "red", Group: 1, Seq: 2, Inode: 1002, Payload: "red/1/2"}, ev("red", 3)},
			want: []Problem{{ProblemMislabelled, "red", 1, `1 own event(s) mislabelled; the first: payload "red/1/2" came as seq 2, namespace "red", inode 1002, group 1; want seq 2, namespace "red", inode 1001, group 1`}},
		},
		{
			name: "stream ended early",
			red:  own("red", 1),
			err:  `ABORTED "namespace detached"`,
			want: []Problem{
				{ProblemMissing, "red", 1, "never received seq 2-3, and no gap was reported"},
				{ProblemStream, "red", 1, `the subscription ended early: ABORTED "namespace detached"`},
			},
		},
		{
			name: "stream cut with an open gap",
			red:  []Item{ev("red", 1), {Gap: true, Namespace: "red", Group: 1, From: 2, Reason: "LOSS_REASON_RELEASED"}},
			want: []Problem{{ProblemGap, "red", 1, "the daemon reported seq 2 and everything after it lost (LOSS_REASON_RELEASED)"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subs := []Subscription{
				{Namespace: "red", Group: 1, Items: tt.red, Err: tt.err},
				{Namespace: "green", Group: 1, Items: own("green", 1, 2, 3)},
			}
			j := Judge(testNamespaces, testPubs, subs)
			if diff := cmp.Diff(tt.want, j.Problems, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if j.Held() != (len(tt.want) == 0) {
				t.Errorf("Held() = %v with %d problems", j.Held(), len(j.Problems))
			}
		})
	}
}

func TestJudgeWrongGroup(t *testing.T) {
	pubs := append(slices.Clone(testPubs), Publication{Namespace: "red", Group: 2, Seq: 1, Payload: "red/2/1"})
	subs := []Subscription{
		{Namespace: "red", Group: 1, Items: append(own("red", 1, 2, 3), Item{Namespace: "red", Group: 2, Seq: 1, Inode: 1001, Payload: "red/2/1"})},
		{Namespace: "red", Group: 2, Items: []Item{{Namespace: "red", Group: 2, Seq: 1, Inode: 1001, Payload: "red/2/1"}}},
		{Namespace: "green", Group: 1, Items: own("green", 1, 2, 3)},
	}
	j := Judge(testNamespaces, pubs, subs)
	want := []Problem{{ProblemWrongGroup, "red", 1, "received seq 1 published to group 2"}}
	if diff := cmp.Diff(want, j.Problems); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestJudgeMatrix(t *testing.T) {
	subs := []Subscription{
		{Namespace: "red", Group: 1, Items: append(own("red", 1, 2, 3), ev("green", 2))},
		{Namespace: "green", Group: 1, Items: own("green", 1, 2, 3)},
	}
	j := Judge(testNamespaces, testPubs, subs)
	want := []Row{
		{Publisher: "red", Inode: 1001, Group: 1, Published: []uint64{1, 2, 3}, Received: []Cell{
			{Subscriber: "red", Seqs: []uint64{1, 2, 3}, Groups: []uint32{1}},
			{Subscriber: "green", Seqs: []uint64{}},
		}},
		{Publisher: "green", Inode: 1002, Group: 1, Published: []uint64{1, 2, 3}, Received: []Cell{
			{Subscriber: "red", Seqs: []uint64{2}, Groups: []uint32{1}},
			{Subscriber: "green", Seqs: []uint64{1, 2, 3}, Groups: []uint32{1}},
		}},
	}
	if diff := cmp.Diff(want, j.Matrix); diff != "" {
		t.Errorf("matrix (-want +got):\n%s", diff)
	}
}

func TestReportText(t *testing.T) {
	subs := []Subscription{
		{Namespace: "red", Group: 1, Items: append(own("red", 1, 2, 3), ev("green", 2))},
		{Namespace: "green", Group: 1, Items: own("green", 1, 2, 3)},
	}
	r := &Report{Run: "r1", Messages: 3, Groups: []uint32{1}, Namespaces: testNamespaces,
		Judgement: Judge(testNamespaces, testPubs, subs),
		Probes:    []Probe{{Name: "p", Status: StatusHeld, Expected: "e", Observed: "o", Evidence: []string{"ev"}}}}
	r.finish()
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, line := range []string{
		"  publisher  inode  group  published  |  red   green",
		"                                      |  1001  1002",
		"  red        1001   1      1-3        |  1-3   .",
		"  green      1002   1      1-3        |  2 !   1-3",
		"  leak: red group 1: received 1 event(s) published in green (inode 1002) to group 1: seq 2",
		"  HELD                   p",
		"verdict: FAIL: 2 namespaces, group(s) 1, 3 messages each: 1 subscriber(s) did not receive exactly their own messages (leak 1)",
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("the report lacks the line\n%s\ngot:\n%s", line, text)
		}
	}
	if !strings.HasSuffix(text, r.Verdict+"\n") {
		t.Errorf("the verdict is not the last line:\n%s", text)
	}
}

func TestCellText(t *testing.T) {
	for _, tt := range []struct {
		seqs []uint64
		end  uint64
		want string
	}{
		{[]uint64{1, 2, 3, 4}, 4, "1-3+end"},
		{[]uint64{1, 2, 3}, 4, "1-3"},
		{[]uint64{4}, 4, "end"},
		{[]uint64{1, 2}, 0, "1-2"},
	} {
		if got := cellText(tt.seqs, tt.end); got != tt.want {
			t.Errorf("cellText(%v, %d) = %q, want %q", tt.seqs, tt.end, got, tt.want)
		}
	}
}

func TestSeqList(t *testing.T) {
	for _, tt := range []struct {
		in   []uint64
		want string
	}{
		{nil, "-"},
		{[]uint64{1, 2, 3}, "1-3"},
		{[]uint64{1, 3, 2}, "1,3,2"},
		{[]uint64{1, 2, 4, 5, 7}, "1-2,4-5,7"},
		{[]uint64{2, 2}, "2,2"},
	} {
		if got := seqList(tt.in); got != tt.want {
			t.Errorf("seqList(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
