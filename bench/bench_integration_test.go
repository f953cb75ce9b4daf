package bench

import (
	"bytes"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Markers framing the JSON results and the profiles in the test output;
// mk/bench.mk cuts them out.
const (
	jsonBegin    = "==== nsbroker-bench json begin"
	jsonEnd      = "==== nsbroker-bench json end"
	profileBegin = "==== nsbroker-bench profile begin "
	profileEnd   = "==== nsbroker-bench profile end"
)

var (
	qemuMode  = flag.String("bench.qemu", "", "how the VM runs (for the report)")
	scaleList = flag.String("bench.scale", "10,100,1000", "namespace counts for the scale runs, comma-separated")
	sections  = flag.String("bench.sections", "roundtrip,throughput,scale", "which measurements to run")
	profiles  = flag.Bool("bench.profile", true, "print CPU profiles of the gRPC paths")
)

// TestIntegrationBench measures everything docs/performance.md describes in
// one boot and prints it as a table and as JSON between marker lines.
func TestIntegrationBench(t *testing.T) {
	e := newEnv(t)
	res := &Results{Kernel: kernelRelease(), CPU: cpuModel(), CPUs: runtime.NumCPU(), QEMU: *qemuMode, Started: time.Now()}
	res.Clocksource, res.ClockReadNs = clockCost()
	on := func(s string) bool { return strings.Contains(*sections, s) }
	// The results so far are printed after every section, so that a run
	// cut short (a scale run out of memory) still leaves them.
	if on("roundtrip") {
		profile(t, "roundtrip", func() { measureRoundTrips(t, e, res) })
		printJSON(t, res)
	}
	if on("throughput") {
		measureThroughput(t, e, res) // profiles each path itself
		printJSON(t, res)
	}
	if on("scale") {
		var counts []int
		for _, f := range strings.Split(*scaleList, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("-bench.scale: %v", err)
			}
			counts = append(counts, n)
		}
		measureScale(t, e, res, counts) // profiles each step itself
		printJSON(t, res)
	}
	fmt.Println(res.Markdown())
}

// printJSON prints res between the marker lines; the last block printed is
// the result.
func printJSON(t *testing.T, res *Results) {
	var b bytes.Buffer
	if err := res.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s\n%s%s\n", jsonBegin, b.String(), jsonEnd)
}

// profile runs fn under the CPU profiler and prints the profile, base64,
// between marker lines.
func profile(t *testing.T, name string, fn func()) {
	if !*profiles {
		fn()
		return
	}
	var b bytes.Buffer
	if err := pprof.StartCPUProfile(&b); err != nil {
		t.Logf("no profile of %s: %v", name, err)
		fn()
		return
	}
	fn()
	pprof.StopCPUProfile()
	printProfile(name, b.Bytes())
}

// printProfile prints a profile, base64, between marker lines.
func printProfile(name string, p []byte) {
	fmt.Printf("%s%s\n", profileBegin, name)
	enc := base64.StdEncoding.EncodeToString(p)
	for len(enc) > 0 {
		n := min(len(enc), 76)
		fmt.Println(enc[:n])
		enc = enc[n:]
	}
	fmt.Println(profileEnd)
}

// heapProfile prints the heap profile (live objects after a GC), base64,
// between the same marker lines as the CPU profiles.
func heapProfile(t *testing.T, name string) {
	if !*profiles {
		return
	}
	runtime.GC()
	var b bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&b, 0); err != nil {
		t.Logf("no heap profile %s: %v", name, err)
		return
	}
	printProfile(name, b.Bytes())
}

// clockCost returns the guest kernel's clocksource and what one time.Now
// costs: the median of 9 loops of 20,000 calls.
func clockCost() (string, float64) {
	b, _ := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	var per []float64
	for range 9 {
		const n = 20000
		start := time.Now()
		for range n {
			_ = time.Now()
		}
		per = append(per, float64(time.Since(start).Nanoseconds())/n)
	}
	return strings.TrimSpace(string(b)), NewStat(per).Median
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
