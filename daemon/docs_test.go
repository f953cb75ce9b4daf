package daemon

import (
	"flag"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/broker/brokertest"
)

const operationsDoc = "../docs/operations.md"

// docTable returns the rows of the markdown table whose header row is
// header, as cells with the outer pipes removed.
func docTable(t *testing.T, doc, header string) [][]string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	var rows [][]string
	for i, l := range lines {
		if l != header {
			continue
		}
		for _, r := range lines[i+2:] { // past the header and its rule
			if !strings.HasPrefix(r, "|") {
				break
			}
			cells := strings.Split(strings.Trim(r, "|"), "|")
			for j := range cells {
				cells[j] = strings.TrimSpace(cells[j])
			}
			rows = append(rows, cells)
		}
		return rows
	}
	t.Fatalf("%s: no table with the header %q", operationsDoc, header)
	return nil
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// code is how the documentation spells a value: `v`, or — for none.
func code(v string) string {
	if v == "" {
		return "—"
	}
	return "`" + v + "`"
}

// TestOperationsDocSettings checks the settings table against the flags:
// every flag has a row with its file key and its default, and every row
// is a flag or the tenants key.
func TestOperationsDocSettings(t *testing.T) {
	rows := docTable(t, readDoc(t), "| flag | file key | default | meaning |")
	byFlag := make(map[string][]string)
	for _, r := range rows {
		if len(r) != 4 {
			t.Errorf("settings row %q: want 4 cells, got %d", r, len(r))
			continue
		}
		if r[0] == "—" {
			if r[1] != "`tenants`" {
				t.Errorf("settings row %q: only tenants has no flag", r)
			}
			continue
		}
		byFlag[r[0]] = r
	}
	var opts options
	fs := newFlagSet(Defaults(), &opts, io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		r, ok := byFlag[code("--"+f.Name)]
		if !ok {
			t.Errorf("--%s is not in the settings table of %s", f.Name, operationsDoc)
			return
		}
		delete(byFlag, code("--"+f.Name))
		key := strings.ReplaceAll(f.Name, "-", "_")
		switch f.Name {
		case flagConfig, flagNoLocalSocket, flagPrintConfig, flagPrintMemory:
			key = ""
		}
		if r[1] != code(key) {
			t.Errorf("--%s: file key: want %s, got %s", f.Name, code(key), r[1])
		}
		if r[2] != code(f.DefValue) {
			t.Errorf("--%s: default: want %s, got %s", f.Name, code(f.DefValue), r[2])
		}
	})
	for fl := range byFlag {
		t.Errorf("the settings table lists %s, which is not a flag", fl)
	}
}

var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)

// TestOperationsDocMetrics checks the metrics table against the metrics
// the daemon registers: names, types and labels, both ways.
func TestOperationsDocMetrics(t *testing.T) {
	rows := docTable(t, readDoc(t), "| metric | type | labels | meaning |")
	documented := make(map[string][]string)
	for _, r := range rows {
		documented[r[0]] = r
	}
	k := brokertest.NewKernel()
	b := broker.New(&broker.Config{ModuleIdentity: k.Identity, Dial: k.Dial})
	defer b.Close()
	m := newMetrics(b)
	for _, c := range m.own {
		for _, d := range describe(c) {
			match := descRE.FindStringSubmatch(d.desc.String())
			if match == nil {
				t.Fatalf("cannot read %s", d.desc)
			}
			name, labels := match[1], "—"
			if match[2] != "" {
				labels = "`" + strings.ReplaceAll(match[2], ",", "`, `") + "`"
			}
			r, ok := documented[code(name)]
			if !ok {
				t.Errorf("%s is not in the metrics table of %s", name, operationsDoc)
				continue
			}
			delete(documented, code(name))
			if r[1] != d.typ {
				t.Errorf("%s: type: want %s, got %s", name, d.typ, r[1])
			}
			if r[2] != labels {
				t.Errorf("%s: labels: want %s, got %s", name, labels, r[2])
			}
		}
	}
	for name := range documented {
		t.Errorf("the metrics table lists %s, which the daemon does not export", name)
	}
}

type typedDesc struct {
	desc *prometheus.Desc
	typ  string
}

// describe lists a collector's metrics with their types.
func describe(c prometheus.Collector) []typedDesc {
	if _, ok := c.(*brokerCollector); ok {
		var out []typedDesc
		for _, bm := range brokerMetrics {
			typ := map[prometheus.ValueType]string{prometheus.CounterValue: "counter", prometheus.GaugeValue: "gauge"}[bm.typ]
			out = append(out, typedDesc{bm.desc, typ})
		}
		return out
	}
	var typ string
	switch c.(type) {
	case *prometheus.GaugeVec, prometheus.Gauge:
		typ = "gauge"
	case *prometheus.CounterVec, prometheus.Counter:
		typ = "counter"
	case *prometheus.HistogramVec, prometheus.Histogram:
		typ = "histogram"
	}
	ch := make(chan *prometheus.Desc, 16)
	c.Describe(ch)
	close(ch)
	var out []typedDesc
	for d := range ch {
		out = append(out, typedDesc{d, typ})
	}
	return out
}

// TestOperationsDocExample checks that the example configuration is read
// strictly and is valid.
func TestOperationsDocExample(t *testing.T) {
	doc := readDoc(t)
	_, after, ok := strings.Cut(doc, "## Example configuration\n")
	if !ok {
		t.Fatal("no example configuration section")
	}
	_, block, ok := strings.Cut(after, "```yaml\n")
	if !ok {
		t.Fatal("no yaml block in the example configuration section")
	}
	block, _, _ = strings.Cut(block, "```")
	cfg := Defaults()
	if err := decodeYAML([]byte(block), cfg); err != nil {
		t.Fatalf("example configuration: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("example configuration: %v", err)
	}
	if len(cfg.Tenants) != 2 || cfg.Tenants[0].URI != "spiffe://example.org/tenant/acme" || cfg.Tenants[1].commonName() != "globex" {
		t.Errorf("example tenants: want acme (spiffe://example.org/tenant/acme) and globex (globex), got %+v", cfg.Tenants)
	}
}

// TestOperationsDocMemoryBudget: the memory table in docs/operations.md is
// what --print-memory-budget prints for the defaults.
func TestOperationsDocMemoryBudget(t *testing.T) {
	b, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- memory-budget -->\n```text\n")
	if !ok {
		t.Fatalf("%s: no memory-budget block", operationsDoc)
	}
	doc, _, _ := strings.Cut(rest, "```")
	var want strings.Builder
	if err := printMemoryBudget(&want, Defaults()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.String(), doc); diff != "" {
		t.Errorf("%s: memory budget (-code +doc):\n%s", operationsDoc, diff)
	}
}
