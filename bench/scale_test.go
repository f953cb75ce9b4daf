package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

const scaleEchoes = 300

// measureScale attaches counts[i] namespaces to the daemon in turn and
// records what that costs. The daemon runs in this process, so its RSS and
// goroutines are this process's, measured after a GC with nothing else
// running.
//
// Each count's attach loops and an echo loop are profiled on their own
// (profiles scale-attach-N, scale-attach-many-N and scale-echo-N), and the
// heap after attaching (scale-heap-N), so that what an echo costs with N
// attached is not hidden in the cost of creating and attaching the
// namespaces. The echo latencies compared are both measured unprofiled.
// Next to each, the kernel's floor (a raw netlink echo in the same
// namespace) and how busy the guest is while the bench rests say how much
// of a difference is the daemon's and how much the guest's with N
// namespaces in it.
func measureScale(t *testing.T, e *env, res *Results, counts []int) {
	admin := e.adminClient(t)
	ctx := context.Background()
	payload := make([]byte, rtPayload)
	echo := func() float64 {
		return Summarise("", timeN(t, "scale echo", scaleEchoes, func() error {
			_, err := admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: e.name, Payload: payload})
			return err
		})).P50us
	}
	raw, err := openRaw(e.ns, e.unit, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	echoBody, err := family.EncodeEcho(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw.prepare(family.MsgEcho, echoBody)
	rawEcho := func() float64 {
		return Summarise("", timeN(t, "scale raw echo", scaleEchoes, func() error {
			_, err := raw.roundTrip()
			return err
		})).P50us
	}
	idle, err := moduleInstances(e.unit)
	if err != nil {
		t.Fatalf("the module's instance count: %v", err)
	}
	for _, n := range counts {
		s := Scale{N: n}
		// The echo with one attached is a baseline only once the kernel
		// has torn down the previous count's namespaces, which it does
		// in the background after they are deleted.
		if took, err := awaitInstances(e.unit, idle, teardownLimit); err != nil {
			t.Logf("scale %d: %v; measuring anyway", n, err)
		} else if took > time.Second {
			t.Logf("scale %d: the previous namespaces' teardown took %v more", n, took.Round(time.Millisecond))
		}
		s.EchoOneP50us = echo()
		s.RawEchoOneP50us = rawEcho()
		s.BusyAtRestOne = busyAtRest(t)
		measured := func() {
			s.EchoP50us = echo()
			s.RawEchoP50us = rawEcho()
			s.BusyAtRest = busyAtRest(t)
		}
		if err := scaleOnce(t, e, admin, n, &s, echo, measured); err != nil {
			s.Err = err.Error()
		}
		res.Scale = append(res.Scale, s)
		if s.Err == "" && s.ByHandSeconds > 0 && s.EchoOneP50us > 0 {
			ratio(res, fmt.Sprintf("scale %d: attach batched / by hand", n), s.AttachManySeconds/s.ByHandSeconds, 1.5)
			ratio(res, fmt.Sprintf("scale %d: echo p50 / echo p50 with one attached", n), s.EchoP50us/s.EchoOneP50us, 1.1)
			ratio(res, fmt.Sprintf("scale %d: raw netlink echo p50 / with one attached", n), s.RawEchoP50us/s.RawEchoOneP50us, 0)
			ratio(res, fmt.Sprintf("scale %d: daemon RSS KiB per namespace / 16", n), s.RSSPerNsKiB/16, 1)
		}
	}
	// The last count's namespaces are torn down before the run ends: the
	// module cannot be unloaded until they are.
	if took, err := awaitInstances(e.unit, idle, teardownLimit); err != nil {
		t.Logf("scale: %v", err)
	} else {
		t.Logf("scale: the last namespaces' teardown took %v more", took.Round(time.Millisecond))
	}
}

// scaleOnce creates n namespaces, opens their sockets by hand, attaches
// them, measures the echo latency, and detaches and deletes them again.
func scaleOnce(t *testing.T, e *env, admin nsbrokerv1.BrokerClient, n int, s *Scale, echo func() float64, measured func()) error {
	ctx := context.Background()
	names := make([]string, 0, n)
	nss := make([]*nsmgr.Namespace, 0, n)
	defer func() {
		for _, name := range names {
			admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name})
		}
		for i, ns := range nss {
			ns.Close()
			nsmgr.DeleteNamed(names[i])
		}
	}()
	for range n {
		name := testenv.NetnsName()
		ns, err := nsmgr.NewNamed(name)
		if err != nil {
			return fmt.Errorf("creating namespace %d: %w", len(nss)+1, err)
		}
		names = append(names, name)
		nss = append(nss, ns)
	}

	// By hand: what attaching opens in each namespace, a socket to the
	// module and the two listening unix sockets, the abstract one and the
	// filesystem one in a directory of its own (both in one visit to
	// the namespace).
	byHandDir := t.TempDir()
	start := time.Now()
	var opened []func() error
	for i, ns := range nss {
		c, err := family.Dial(&family.Config{Unit: e.unit, NetNS: ns.Fd(), ReadBuffer: 4 << 20})
		if err != nil {
			return fmt.Errorf("by hand: %w", err)
		}
		opened = append(opened, c.Close)
		dir := filepath.Join(byHandDir, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("by hand: %w", err)
		}
		path := filepath.Join(dir, "nsbroker.sock")
		var abstract, file net.Listener
		if err := ns.Do(func() error {
			var err error
			if abstract, err = net.Listen("unix", localSocket); err != nil {
				return err
			}
			if file, err = net.Listen("unix", path); err != nil {
				abstract.Close()
				return err
			}
			return nil
		}); err != nil {
			return fmt.Errorf("by hand: %w", err)
		}
		opened = append(opened, abstract.Close, file.Close)
		if err := os.Chmod(path, 0o666); err != nil {
			return fmt.Errorf("by hand: %w", err)
		}
	}
	s.ByHandSeconds = time.Since(start).Seconds()
	for _, c := range opened {
		c()
	}

	m0 := settle()
	slab0 := slabKiB()
	var attachErr error
	profile(t, fmt.Sprintf("scale-attach-%d", n), func() {
		start = time.Now()
		for _, name := range names {
			if _, err := admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}}}); err != nil {
				attachErr = fmt.Errorf("attaching %s: %w", name, err)
				return
			}
		}
		s.AttachSeconds = time.Since(start).Seconds()
	})
	if attachErr != nil {
		return attachErr
	}
	m1 := settle()
	slab1 := slabKiB()
	perNs := func(a, b int64) float64 { return float64(b-a) / float64(n) }
	s.RSSPerNsKiB = perNs(m0.rssKiB, m1.rssKiB)
	s.HeapPerNsKiB = perNs(m0.heapKiB, m1.heapKiB)
	s.StackPerNsKiB = perNs(m0.stackKiB, m1.stackKiB)
	s.RuntimePerNsKiB = perNs(m0.runtimeKiB, m1.runtimeKiB)
	s.GoroutinesPerNs = perNs(int64(m0.goroutines), int64(m1.goroutines))
	s.SlabPerNsKiB = perNs(slab0, slab1)
	heapProfile(t, fmt.Sprintf("scale-heap-%d", n))
	// Measured without the profiler, as the echo with one attached is:
	// its signals slow the emulated guest. Then once more for the profile.
	measured()
	profile(t, fmt.Sprintf("scale-echo-%d", n), func() { echo() })

	// Once more, batched: the same namespaces detached, then attached
	// with AttachNamespaces, a thousand per call.
	for _, name := range names {
		if _, err := admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
			return fmt.Errorf("detaching %s: %w", name, err)
		}
	}
	settle()
	profile(t, fmt.Sprintf("scale-attach-many-%d", n), func() {
		start = time.Now()
		for first := 0; first < len(names); first += attachBatch {
			req := &nsbrokerv1.AttachNamespacesRequest{}
			for _, name := range names[first:min(first+attachBatch, len(names))] {
				req.Namespaces = append(req.Namespaces, &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}}})
			}
			resp, err := admin.AttachNamespaces(ctx, req)
			if err != nil {
				attachErr = fmt.Errorf("attaching %d from %s: %w", len(req.Namespaces), names[first], err)
				return
			}
			for i, r := range resp.GetResults() {
				if r.GetCode() != 0 {
					attachErr = fmt.Errorf("attaching %s: code %d: %s", names[first+i], r.GetCode(), r.GetMessage())
					return
				}
			}
		}
		s.AttachManySeconds = time.Since(start).Seconds()
	})
	return attachErr
}

// busyAtRest is the share of the guest's CPU time that is not idle (nor
// waiting for I/O) over 2 s in which the bench does nothing: work the
// kernel and the daemon do on their own, which every round trip then
// shares the CPUs with.
func busyAtRest(t *testing.T) float64 {
	before, err := cpuTimes()
	if err != nil {
		t.Logf("busy at rest: %v", err)
		return 0
	}
	time.Sleep(2 * time.Second)
	after, err := cpuTimes()
	if err != nil {
		t.Logf("busy at rest: %v", err)
		return 0
	}
	total, idle := after[0]-before[0], after[1]-before[1]
	if total == 0 {
		return 0
	}
	return 1 - float64(idle)/float64(total)
}

// cpuTimes returns the guest's CPU time in all and idle (idle and
// iowait), in clock ticks, from /proc/stat's first line.
func cpuTimes() ([2]uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]uint64{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return [2]uint64{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var out [2]uint64
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return [2]uint64{}, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		if i >= 8 { // guest and guest_nice are counted in user already
			break
		}
		out[0] += n
		if i == 3 || i == 4 { // idle, iowait
			out[1] += n
		}
	}
	return out, nil
}

// attachBatch is how many namespaces one AttachNamespaces call holds.
const attachBatch = 1000

// memory is what settle measures.
type memory struct {
	rssKiB, heapKiB, stackKiB int64
	runtimeKiB                int64 // what the Go runtime holds from the kernel
	goroutines                int
}

// settle collects garbage, returns memory to the kernel and gives the
// daemon's goroutines time to park, then measures RSS, the Go heap and
// stacks in use, and the goroutines.
func settle() memory {
	time.Sleep(200 * time.Millisecond)
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memory{
		rssKiB:     statusKiB("/proc/self/status", "VmRSS:"),
		heapKiB:    int64(ms.HeapInuse >> 10),
		stackKiB:   int64(ms.StackInuse >> 10),
		runtimeKiB: int64((ms.Sys - ms.HeapReleased) >> 10),
		goroutines: runtime.NumGoroutine(),
	}
}

// slabKiB is the kernel's slab memory.
func slabKiB() int64 { return statusKiB("/proc/meminfo", "Slab:") }

func statusKiB(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// teardownLimit bounds the wait for the kernel to tear down a scale
// run's namespaces.
const teardownLimit = 10 * time.Minute

// moduleInstances is the module's count of live per-namespace instances,
// asked in the initial namespace.
func moduleInstances(unit int) (uint32, error) {
	c, err := family.Dial(&family.Config{Unit: unit})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	st, err := c.Stats()
	if err != nil {
		return 0, err
	}
	return st.Instances, nil
}

// awaitInstances waits until the module has at most want instances, and
// says how long that took.
func awaitInstances(unit int, want uint32, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		got, err := moduleInstances(unit)
		if err != nil {
			return time.Since(start), err
		}
		if got <= want {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return time.Since(start), fmt.Errorf("%d module instances after %v, want %d", got, limit, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
