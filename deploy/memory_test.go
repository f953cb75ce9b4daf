package deploy

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nsbroker/nsbroker/daemon"
)

// parseGoMemLimit parses a GOMEMLIMIT value: a number of bytes with an
// optional B, KiB, MiB, GiB or TiB suffix, as the Go runtime reads it.
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v << u.shift, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// parseSystemdBytes parses a systemd size: a number with an optional K,
// M, G or T suffix (powers of 1024).
func parseSystemdBytes(s string) (int64, error) {
	shift := map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40}
	if n := len(s); n > 0 {
		if sh, ok := shift[s[n-1]]; ok {
			v, err := strconv.ParseInt(s[:n-1], 10, 64)
			return v << sh, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// checkMemory checks a deployment's memory settings against what the
// daemon can hold with every default limit filled at once: the Go heap's
// soft limit above it, the hard limit above that.
func checkMemory(t *testing.T, where string, goMemLimit, hardLimit int64) {
	t.Helper()
	bound := daemon.MemoryBound(nil)
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	if goMemLimit <= bound {
		t.Errorf("%s: GOMEMLIMIT %s is not above the daemon's memory budget %s (nsbrokerd --print-memory-budget)", where, mib(goMemLimit), mib(bound))
	}
	if hardLimit <= goMemLimit {
		t.Errorf("%s: memory limit %s is not above GOMEMLIMIT %s", where, mib(hardLimit), mib(goMemLimit))
	}
	// Memory beyond the heap: the binary, thread stacks outside Go.
	if hardLimit-goMemLimit < 32<<20 {
		t.Errorf("%s: memory limit %s leaves less than 32 MiB above GOMEMLIMIT %s", where, mib(hardLimit), mib(goMemLimit))
	}
}

func TestDaemonSetMemoryFitsTheBudget(t *testing.T) {
	ds := loadDaemonSet(t)
	var found bool
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name != "nsbrokerd" {
			continue
		}
		found = true
		limit, ok := c.Resources.Limits["memory"]
		if !ok {
			t.Fatal("nsbrokerd has no memory limit")
		}
		var goMem string
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				goMem = e.Value
			}
		}
		v, err := parseGoMemLimit(goMem)
		if err != nil || goMem == "" {
			t.Fatalf("nsbrokerd's GOMEMLIMIT %q: %v", goMem, err)
		}
		checkMemory(t, daemonSetFile, v, limit.Value())
	}
	if !found {
		t.Fatal("no nsbrokerd container")
	}
}

func TestUnitMemoryFitsTheBudget(t *testing.T) {
	u := parseUnit(t, unitFile)
	hard, err := parseSystemdBytes(u.one(t, "Service.MemoryMax"))
	if err != nil {
		t.Fatalf("MemoryMax: %v", err)
	}
	var goMem string
	for _, env := range u["Service.Environment"] {
		for _, kv := range strings.Fields(env) {
			if v, ok := strings.CutPrefix(kv, "GOMEMLIMIT="); ok {
				goMem = v
			}
		}
	}
	v, err := parseGoMemLimit(goMem)
	if err != nil || goMem == "" {
		t.Fatalf("GOMEMLIMIT %q: %v", goMem, err)
	}
	checkMemory(t, unitFile, v, hard)
}
