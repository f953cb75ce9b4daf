package isolation

import (
	"fmt"
	"slices"
	"strings"
)

// Namespace is one namespace under test, as the kernel identifies it.
type Namespace struct {
	// Name is the name the daemon attached it under.
	Name string `json:"name"`
	// Inode is the namespace's inode, read by the checker from the
	// namespace itself (not from the daemon).
	Inode uint64 `json:"inode"`
	// Cookie is the namespace's cookie as the daemon reported it.
	Cookie uint64 `json:"cookie,omitempty"`
	// EchoInode is the inode the module reported when the namespace's
	// tenant sent an echo through its local socket.
	EchoInode uint64 `json:"echo_inode,omitempty"`
}

// Publication is one publish the daemon acknowledged.
type Publication struct {
	Namespace string `json:"namespace"`
	Group     uint32 `json:"group"`
	// Seq is the sequence number the publish reply carried.
	Seq     uint64 `json:"seq"`
	Payload string `json:"payload"`
	// End marks the namespace's last publish to the group, which tells
	// its subscribers that everything published before has arrived.
	End bool `json:"end,omitempty"`
}

// Item is one thing a subscription delivered: an event, or a gap.
type Item struct {
	// Gap is true for a gap marker (From, To, Reason); false for an event.
	Gap bool `json:"gap,omitempty"`
	// Namespace and Group as the daemon labelled the item.
	Namespace string `json:"namespace"`
	Group     uint32 `json:"group"`
	// Seq, Inode (NSB_A_NETNS_INUM, from the kernel) and Payload of an
	// event.
	Seq     uint64 `json:"seq,omitempty"`
	Inode   uint64 `json:"inode,omitempty"`
	Payload string `json:"payload,omitempty"`
	// From, To and Reason of a gap.
	From   uint64 `json:"from,omitempty"`
	To     uint64 `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Subscription is everything one subscriber received, in order.
type Subscription struct {
	// Namespace is where the subscriber is a tenant; Group what it
	// subscribed to.
	Namespace string `json:"namespace"`
	Group     uint32 `json:"group"`
	Items     []Item `json:"items"`
	// Err is how the stream ended if it ended before the checker ended it.
	Err string `json:"error,omitempty"`
}

// ProblemKind classifies what went wrong for a subscriber.
type ProblemKind string

// The kinds of problems Judge finds.
const (
	// ProblemLeak: an event published in another namespace.
	ProblemLeak ProblemKind = "leak"
	// ProblemForeign: an event nobody published in this check.
	ProblemForeign ProblemKind = "foreign"
	// ProblemWrongGroup: an own-namespace event of another group.
	ProblemWrongGroup ProblemKind = "wrong-group"
	// ProblemGap: the daemon reported lost events.
	ProblemGap ProblemKind = "gap"
	// ProblemMissing: published events that never arrived, without a gap
	// marker.
	ProblemMissing ProblemKind = "missing"
	// ProblemDuplicate: an event received twice.
	ProblemDuplicate ProblemKind = "duplicate"
	// ProblemReorder: an event received after a later one.
	ProblemReorder ProblemKind = "reorder"
	// ProblemMislabelled: an own event whose sequence number, namespace or
	// inode is not what the publish and the kernel said.
	ProblemMislabelled ProblemKind = "mislabelled"
	// ProblemStream: the subscription ended before the checker ended it.
	ProblemStream ProblemKind = "stream"
)

// Problem is one finding against one subscriber, with its evidence.
type Problem struct {
	Kind      ProblemKind `json:"kind"`
	Namespace string      `json:"namespace"`
	Group     uint32      `json:"group"`
	Detail    string      `json:"detail"`
}

// String returns the problem as one line: kind, subscriber, detail.
func (p Problem) String() string {
	return fmt.Sprintf("%s: %s group %d: %s", p.Kind, p.Namespace, p.Group, p.Detail)
}

// Cell is what the subscribers of one namespace received of one row's
// publications.
type Cell struct {
	Subscriber string `json:"subscriber"`
	// Seqs are the sequence numbers received, in arrival order.
	Seqs []uint64 `json:"seqs"`
	// Groups are the groups of the subscriptions that received them.
	Groups []uint32 `json:"groups,omitempty"`
}

// Row is one namespace's publications to one group and where they went.
type Row struct {
	Publisher string `json:"publisher"`
	Inode     uint64 `json:"inode"`
	Group     uint32 `json:"group"`
	// Published are the sequence numbers the publish replies carried.
	Published []uint64 `json:"published"`
	// EndSeq is the sequence number of the end marker (0: none).
	EndSeq uint64 `json:"end_seq,omitempty"`
	// Received has one cell per namespace under test, in order.
	Received []Cell `json:"received"`
}

// Judgement is the outcome of Judge.
type Judgement struct {
	Matrix   []Row     `json:"matrix"`
	Problems []Problem `json:"problems"`
}

// Held reports whether every subscriber received exactly its own
// namespace's messages, in order, without gaps.
func (j Judgement) Held() bool { return len(j.Problems) == 0 }

// Judge compares what every subscription received with what was published.
// A subscriber of group g in namespace S must receive exactly the events
// published to g in S, each once, in increasing sequence order, with the
// sequence number its publish reply carried, labelled S and carrying S's
// inode; and nothing else: no event of another namespace or group, no
// event nobody published, no gap. Events are attributed to their publisher
// by payload, which is unique per publication, so a mislabelled leak is
// still recognised.
func Judge(namespaces []Namespace, pubs []Publication, subs []Subscription) Judgement {
	byPayload := make(map[string]*Publication, len(pubs))
	for i := range pubs {
		byPayload[pubs[i].Payload] = &pubs[i]
	}
	inode := make(map[string]uint64, len(namespaces))
	for _, ns := range namespaces {
		inode[ns.Name] = ns.Inode
	}
	m := newMatrix(namespaces, pubs)
	j := Judgement{Problems: []Problem{}}
	for _, s := range subs {
		j.Problems = append(j.Problems, judgeSubscription(s, pubs, byPayload, inode, m)...)
	}
	j.Matrix = m.rows
	return j
}

// matrix collects the cells of Judgement.Matrix.
type matrix struct {
	rows  []Row
	index map[rowKey]int
	cols  map[string]int
}

type rowKey struct {
	ns    string
	group uint32
}

func newMatrix(namespaces []Namespace, pubs []Publication) *matrix {
	m := &matrix{index: make(map[rowKey]int), cols: make(map[string]int)}
	for i, ns := range namespaces {
		m.cols[ns.Name] = i
	}
	for _, ns := range namespaces {
		groups := []uint32{}
		for _, p := range pubs {
			if p.Namespace == ns.Name && !slices.Contains(groups, p.Group) {
				groups = append(groups, p.Group)
			}
		}
		slices.Sort(groups)
		for _, g := range groups {
			r := Row{Publisher: ns.Name, Inode: ns.Inode, Group: g, Received: make([]Cell, len(namespaces))}
			for i, col := range namespaces {
				r.Received[i] = Cell{Subscriber: col.Name, Seqs: []uint64{}}
			}
			for _, p := range pubs {
				if p.Namespace == ns.Name && p.Group == g {
					r.Published = append(r.Published, p.Seq)
					if p.End {
						r.EndSeq = p.Seq
					}
				}
			}
			slices.Sort(r.Published)
			m.index[rowKey{ns.Name, g}] = len(m.rows)
			m.rows = append(m.rows, r)
		}
	}
	return m
}

// add records that subscriber (of group subGroup) received seq of the
// publications of pub.
func (m *matrix) add(pub *Publication, subscriber string, subGroup uint32, seq uint64) {
	r, ok := m.index[rowKey{pub.Namespace, pub.Group}]
	c, ok2 := m.cols[subscriber]
	if !ok || !ok2 {
		return
	}
	cell := &m.rows[r].Received[c]
	cell.Seqs = append(cell.Seqs, seq)
	if !slices.Contains(cell.Groups, subGroup) {
		cell.Groups = append(cell.Groups, subGroup)
	}
}

// leakKey aggregates leaked events by where they came from.
type leakKey struct {
	ns    string
	group uint32
}

func judgeSubscription(s Subscription, pubs []Publication, byPayload map[string]*Publication,
	inode map[string]uint64, m *matrix) []Problem {
	var (
		problems   []Problem
		leaks      = map[leakKey][]uint64{}
		leakOrder  []leakKey
		foreign    []Item
		mislabels  []string
		seen       = map[uint64]bool{}
		dups       []uint64
		reorders   []string
		last       uint64
		covered    = map[uint64]bool{} // sequence numbers a gap marker reported
		openGapMin uint64              // a gap with an unknown end covers everything from here
	)
	add := func(kind ProblemKind, format string, args ...any) {
		problems = append(problems, Problem{Kind: kind, Namespace: s.Namespace, Group: s.Group,
			Detail: fmt.Sprintf(format, args...)})
	}
	own := inode[s.Namespace]
	for _, it := range s.Items {
		if it.Gap {
			add(ProblemGap, "the daemon reported seq %s lost (%s)", gapRange(it.From, it.To), it.Reason)
			if it.To == 0 {
				if openGapMin == 0 || it.From < openGapMin {
					openGapMin = it.From
				}
			}
			for q := it.From; q <= it.To && q-it.From < 1<<20; q++ {
				covered[q] = true
			}
			continue
		}
		p := byPayload[it.Payload]
		if p == nil {
			foreign = append(foreign, it)
			continue
		}
		m.add(p, s.Namespace, s.Group, it.Seq)
		if p.Namespace != s.Namespace {
			k := leakKey{p.Namespace, p.Group}
			if _, ok := leaks[k]; !ok {
				leakOrder = append(leakOrder, k)
			}
			leaks[k] = append(leaks[k], it.Seq)
			continue
		}
		if p.Group != s.Group {
			add(ProblemWrongGroup, "received seq %d published to group %d", it.Seq, p.Group)
			continue
		}
		if it.Seq != p.Seq || it.Namespace != s.Namespace || it.Inode != own || it.Group != s.Group {
			mislabels = append(mislabels, fmt.Sprintf("payload %q came as seq %d, namespace %q, inode %d, group %d; want seq %d, namespace %q, inode %d, group %d",
				it.Payload, it.Seq, it.Namespace, it.Inode, it.Group, p.Seq, s.Namespace, own, s.Group))
		}
		if seen[p.Seq] {
			dups = append(dups, p.Seq)
			continue
		}
		if p.Seq < last {
			reorders = append(reorders, fmt.Sprintf("seq %d after seq %d", p.Seq, last))
		}
		seen[p.Seq] = true
		last = max(last, p.Seq)
	}
	for _, k := range leakOrder {
		seqs := leaks[k]
		add(ProblemLeak, "received %d event(s) published in %s (inode %d) to group %d: seq %s",
			len(seqs), k.ns, inode[k.ns], k.group, seqList(seqs))
	}
	if len(foreign) > 0 {
		f := foreign[0]
		add(ProblemForeign, "received %d event(s) nobody published in this check; the first: seq %d, namespace %q, inode %d, payload %q",
			len(foreign), f.Seq, f.Namespace, f.Inode, f.Payload)
	}
	if len(mislabels) > 0 {
		add(ProblemMislabelled, "%d own event(s) mislabelled; the first: %s", len(mislabels), mislabels[0])
	}
	if len(dups) > 0 {
		add(ProblemDuplicate, "received seq %s more than once", seqList(dups))
	}
	if len(reorders) > 0 {
		add(ProblemReorder, "%d event(s) out of order: %s", len(reorders), strings.Join(firstN(reorders, 5), "; "))
	}
	var missing []uint64
	for _, p := range pubs {
		if p.Namespace != s.Namespace || p.Group != s.Group || seen[p.Seq] || covered[p.Seq] ||
			(openGapMin != 0 && p.Seq >= openGapMin) {
			continue
		}
		missing = append(missing, p.Seq)
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		add(ProblemMissing, "never received seq %s, and no gap was reported", seqList(missing))
	}
	if s.Err != "" {
		add(ProblemStream, "the subscription ended early: %s", s.Err)
	}
	return problems
}

func gapRange(from, to uint64) string {
	if to == 0 {
		return fmt.Sprintf("%d and everything after it", from)
	}
	if to == from {
		return fmt.Sprint(from)
	}
	return fmt.Sprintf("%d-%d", from, to)
}

// seqList formats sequence numbers in the order given, runs of consecutive
// increasing numbers as ranges: "1-3,5,4".
func seqList(seqs []uint64) string {
	if len(seqs) == 0 {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", seqs[i], seqs[j])
		} else {
			fmt.Fprint(&b, seqs[i])
		}
		i = j + 1
	}
	return b.String()
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}
