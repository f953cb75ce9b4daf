package isolation

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Status is the outcome of one probe.
type Status string

// Probe outcomes.
const (
	// StatusHeld: the boundary held.
	StatusHeld Status = "held"
	// StatusBroken: the boundary did not hold, or the system did
	// something it must not.
	StatusBroken Status = "broken"
	// StatusDocumented: a documented, privileged path across namespaces
	// delivered exactly as documented. It is outside the security model
	// and does not fail the check; it also shows that the probe's listener
	// sees a crossing when there is one.
	StatusDocumented Status = "crossed-as-documented"
	// StatusInconclusive: the probe could not show either way; it fails
	// the check, since nothing was proven.
	StatusInconclusive Status = "inconclusive"
	// StatusNotRun: the probe was left out on request.
	StatusNotRun Status = "not-run"
)

// ok reports whether the status lets the check pass.
func (s Status) ok() bool {
	return s == StatusHeld || s == StatusDocumented || s == StatusNotRun
}

// Probe is one attempt at a way across namespaces, or one property the
// check verifies, with what it expected, what it saw and the evidence.
type Probe struct {
	Name     string   `json:"name"`
	Status   Status   `json:"status"`
	Expected string   `json:"expected"`
	Observed string   `json:"observed"`
	Evidence []string `json:"evidence,omitempty"`
}

// Report is the outcome of a check. Passed is true only when every
// subscriber received exactly its own namespace's messages and every probe
// held (or, for the documented privileged path, behaved as documented).
type Report struct {
	Run      string        `json:"run"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	Daemon   string        `json:"daemon,omitempty"`
	// The check's parameters.
	Messages   int      `json:"messages"`
	Groups     []uint32 `json:"groups"`
	ProbeGroup uint32   `json:"probe_group"`
	Attached   bool     `json:"attached,omitempty"`
	// Namespaces under test, with the inodes the checker read from them.
	Namespaces    []Namespace    `json:"namespaces"`
	Publications  []Publication  `json:"publications"`
	Subscriptions []Subscription `json:"subscriptions"`
	Judgement     Judgement      `json:"judgement"`
	Probes        []Probe        `json:"probes"`
	// Notes are observations that do not decide the verdict (cleanup).
	Notes   []string `json:"notes,omitempty"`
	Passed  bool     `json:"passed"`
	Verdict string   `json:"verdict"`
}

// finish computes Passed and Verdict.
func (r *Report) finish() {
	var failed, documented, held, notRun []string
	for _, p := range r.Probes {
		switch {
		case !p.Status.ok():
			failed = append(failed, fmt.Sprintf("%s (%s)", p.Name, p.Status))
		case p.Status == StatusDocumented:
			documented = append(documented, p.Name)
		case p.Status == StatusNotRun:
			notRun = append(notRun, p.Name)
		default:
			held = append(held, p.Name)
		}
	}
	r.Passed = r.Judgement.Held() && len(failed) == 0
	scope := fmt.Sprintf("%d namespaces, group(s) %s, %d messages each", len(r.Namespaces), groupList(r.Groups), r.Messages)
	if r.Passed {
		v := fmt.Sprintf("PASS: %s: every subscriber received exactly its own namespace's messages, in order, without gaps, and nothing else; %d of %d ways across held",
			scope, len(held), len(held)+len(documented)+len(notRun))
		if len(documented) > 0 {
			v += fmt.Sprintf(", %d documented privileged path crossed as documented", len(documented))
		}
		if len(notRun) > 0 {
			v += fmt.Sprintf(", %d not run", len(notRun))
		}
		r.Verdict = v
		return
	}
	var parts []string
	if !r.Judgement.Held() {
		counts := map[ProblemKind]int{}
		var kinds []ProblemKind
		for _, p := range r.Judgement.Problems {
			if counts[p.Kind] == 0 {
				kinds = append(kinds, p.Kind)
			}
			counts[p.Kind]++
		}
		var ks []string
		for _, k := range kinds {
			ks = append(ks, fmt.Sprintf("%s %d", k, counts[k]))
		}
		subs := map[string]bool{}
		for _, p := range r.Judgement.Problems {
			subs[fmt.Sprintf("%s/%d", p.Namespace, p.Group)] = true
		}
		parts = append(parts, fmt.Sprintf("%d subscriber(s) did not receive exactly their own messages (%s)", len(subs), strings.Join(ks, ", ")))
	}
	if len(failed) > 0 {
		parts = append(parts, "not held: "+strings.Join(failed, "; "))
	}
	r.Verdict = fmt.Sprintf("FAIL: %s: %s", scope, strings.Join(parts, "; "))
}

func groupList(groups []uint32) string {
	s := make([]string, len(groups))
	for i, g := range groups {
		s[i] = fmt.Sprint(g)
	}
	return strings.Join(s, ",")
}

// WriteText writes the report for a person: the namespaces, the matrix of
// who received what, the problems, the probes and the verdict, which is the
// last line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	r.text(&b, false)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteBrief writes the report as WriteText does, but each probe on one
// line, without what was expected and the evidence.
func (r *Report) WriteBrief(w io.Writer) error {
	var b strings.Builder
	r.text(&b, true)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) text(w *strings.Builder, brief bool) {
	fmt.Fprintf(w, "nsbroker isolation check %s: %d namespaces, group(s) %s, %d messages per namespace and group\n",
		r.Run, len(r.Namespaces), groupList(r.Groups), r.Messages)
	if r.Daemon != "" {
		fmt.Fprintf(w, "daemon: %s\n", r.Daemon)
	}
	w.WriteString("\nNamespaces (inode read from the namespace; echo: the inode the module named when the tenant echoed through its own socket)\n")
	tw := newTable("  ", "namespace", "inode", "cookie", "echo")
	for _, ns := range r.Namespaces {
		echo := "-"
		if ns.EchoInode != 0 {
			echo = fmt.Sprint(ns.EchoInode)
			if ns.EchoInode != ns.Inode {
				echo += " !"
			}
		}
		tw.row(ns.Name, fmt.Sprint(ns.Inode), fmt.Sprint(ns.Cookie), echo)
	}
	tw.write(w)
	r.writeMatrix(w)
	if len(r.Judgement.Problems) > 0 {
		w.WriteString("\nProblems\n")
		for _, p := range r.Judgement.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	w.WriteString("\nWays across\n")
	notRun := 0
	for _, p := range r.Probes {
		if brief && p.Status == StatusNotRun {
			notRun++
			continue
		}
		if brief {
			fmt.Fprintf(w, "  %-22s %s: %s\n", strings.ToUpper(string(p.Status)), p.Name, p.Observed)
			continue
		}
		fmt.Fprintf(w, "  %-22s %s\n", strings.ToUpper(string(p.Status)), p.Name)
		fmt.Fprintf(w, "  %-22s expected: %s\n", "", p.Expected)
		fmt.Fprintf(w, "  %-22s observed: %s\n", "", p.Observed)
		for _, e := range p.Evidence {
			fmt.Fprintf(w, "  %-22s   %s\n", "", e)
		}
	}
	if notRun > 0 {
		fmt.Fprintf(w, "  (%d probe(s) not run, on request)\n", notRun)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "\nverdict: %s\n", r.Verdict)
}

// writeMatrix writes one row per publishing namespace and group and one
// column per namespace's subscribers. A cell lists the sequence numbers
// received; "." is nothing; "!" marks a cell that is not what isolation
// requires (the diagonal must equal what was published, the rest empty).
func (r *Report) writeMatrix(w *strings.Builder) {
	if len(r.Judgement.Matrix) == 0 {
		return
	}
	labels := make([]string, len(r.Namespaces))
	short := false
	for _, ns := range r.Namespaces {
		short = short || len(ns.Name) > 10
	}
	for i, ns := range r.Namespaces {
		labels[i] = ns.Name
		if short {
			labels[i] = fmt.Sprintf("#%d", i+1)
		}
	}
	w.WriteString("\nWho received what (rows: what a namespace published to a group, by sequence number; columns: what the subscribers of that group in each namespace received)\n")
	head := append([]string{"publisher", "inode", "group", "published", "|"}, labels...)
	tw := newTable("  ", head...)
	inodes := []string{"", "", "", "", "|"}
	for _, ns := range r.Namespaces {
		inodes = append(inodes, fmt.Sprint(ns.Inode))
	}
	tw.row(inodes...)
	for _, row := range r.Judgement.Matrix {
		name := row.Publisher
		if short {
			name = fmt.Sprintf("#%d %s", slices.IndexFunc(r.Namespaces, func(n Namespace) bool { return n.Name == row.Publisher })+1, name)
		}
		cells := []string{name, fmt.Sprint(row.Inode), fmt.Sprint(row.Group), cellText(row.Published, row.EndSeq), "|"}
		for _, c := range row.Received {
			text := "."
			if len(c.Seqs) > 0 {
				text = cellText(c.Seqs, row.EndSeq)
				for _, g := range c.Groups {
					if g != row.Group {
						text += fmt.Sprintf(" (g%d)", g)
					}
				}
			}
			want := c.Subscriber == row.Publisher
			if (want && !slices.Equal(c.Seqs, row.Published)) || (!want && len(c.Seqs) > 0) ||
				(len(c.Groups) > 0 && !slices.Equal(c.Groups, []uint32{row.Group})) {
				text += " !"
			}
			cells = append(cells, text)
		}
		tw.row(cells...)
	}
	tw.write(w)
	fmt.Fprintf(w, "  (each namespace published %d messages to each group, then an end marker: +end; \".\": nothing received; \"!\": not what isolation requires)\n", r.Messages)
}

// cellText lists sequence numbers as seqList does, with the end marker's
// as "+end" after the others.
func cellText(seqs []uint64, endSeq uint64) string {
	var rest []uint64
	end := false
	for _, s := range seqs {
		if endSeq != 0 && s == endSeq {
			end = true
			continue
		}
		rest = append(rest, s)
	}
	text := seqList(rest)
	if end {
		text += "+end"
		if len(rest) == 0 {
			text = "end"
		}
	}
	return text
}

// table aligns columns of text.
type table struct {
	indent string
	rows   [][]string
}

func newTable(indent string, head ...string) *table {
	return &table{indent: indent, rows: [][]string{head}}
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w *strings.Builder) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range t.rows {
		line := t.indent
		for i, c := range r {
			if i < len(r)-1 {
				c += strings.Repeat(" ", widths[i]-len(c)+2)
			}
			line += c
		}
		w.WriteString(strings.TrimRight(line, " ") + "\n")
	}
}
