package fault

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The forger is the test binary run again with forgerEnv set to the
// module's unit, in a user namespace of its own (uid 0 there is nobody
// outside) and a network namespace that user namespace owns: the root of
// a rootless container. TestMain runs it instead of the tests, as it runs
// the squatter (restart_test.go).
const (
	forgerEnv = "NSB_FAULT_FORGER"
	nobody    = 65534
)

func TestMain(m *testing.M) {
	if name := os.Getenv(squatterEnv); name != "" {
		os.Exit(runSquatter(name))
	}
	if unit := os.Getenv(forgerEnv); unit != "" {
		if err := runForger(unit); err != nil {
			fmt.Fprintf(os.Stderr, "forger: %v\n", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// forgeOrder is one command to the forger, a JSON line on its stdin: the
// group to forge an EVENT of, and the sequence numbers to give the one it
// multicasts and the one it unicasts.
type forgeOrder struct {
	Group                      uint32
	MulticastSeq, UnicastSeq   uint64
	MulticastText, UnicastText string
}

// forgeReport is the forger's answer, a JSON line on its stdout.
type forgeReport struct {
	Port      uint32         // the forger's own port id
	Multicast int            // sendto's errno for the group
	Unicast   map[uint32]int // sendto's errno, by the port id sent to
}

// runForger reads orders until its stdin closes, carrying out each with a
// netlink socket of the module's unit in its own namespace, and reports.
func runForger(unitStr string) error {
	unit, err := strconv.Atoi(unitStr)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unit)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("getsockname: %w", err)
	}
	port := sa.(*unix.SockaddrNetlink).Pid
	in, out := json.NewDecoder(os.Stdin), json.NewEncoder(os.Stdout)
	for {
		var o forgeOrder
		if err := in.Decode(&o); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		rep := forgeReport{Port: port, Unicast: map[uint32]int{}}
		// To the group, as the module would multicast it.
		ev := forgedEvent(port, o.Group, o.MulticastSeq, o.MulticastText)
		rep.Multicast = errnoOf(sendto(fd, ev, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (o.Group - 1)}))
		// To every other socket of the unit in this namespace: the only
		// one is the daemon's.
		ports, err := unitPorts(unit)
		if err != nil {
			return err
		}
		ev = forgedEvent(port, o.Group, o.UnicastSeq, o.UnicastText)
		for _, p := range ports {
			if p != 0 && p != port {
				rep.Unicast[p] = errnoOf(sendto(fd, ev, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: p}))
			}
		}
		if err := out.Encode(rep); err != nil {
			return err
		}
	}
}

// forgedEvent is an EVENT datagram in the module's exact format.
func forgedEvent(port, group uint32, seq uint64, text string) []byte {
	body, err := (&family.Event{Group: group, Seq: seq, Payload: []byte(text), NetnsInum: 1,
		SenderPortID: port, Timestamp: time.Now()}).MarshalBinary()
	if err != nil {
		panic(err)
	}
	b := make([]byte, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], family.MsgEvent)
	binary.NativeEndian.PutUint32(b[12:], port)
	copy(b[unix.NLMSG_HDRLEN:], body)
	return b
}

func sendto(fd int, b []byte, to *unix.SockaddrNetlink) error {
	for {
		if err := unix.Sendto(fd, b, 0, to); err != unix.EINTR {
			return err
		}
	}
}

func errnoOf(err error) int {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return int(errno)
	}
	if err != nil {
		return -1
	}
	return 0
}

// unitPorts lists the port ids of the unit's sockets in the caller's
// network namespace, from /proc/self/net/netlink.
func unitPorts(unit int) ([]uint32, error) {
	b, err := os.ReadFile("/proc/self/net/netlink")
	if err != nil {
		return nil, err
	}
	var ports []uint32
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 || f[1] != strconv.Itoa(unit) {
			continue
		}
		p, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("/proc/self/net/netlink line %q: %w", line, err)
		}
		ports = append(ports, uint32(p))
	}
	return ports, nil
}

// forger is the running forging process.
type forger struct {
	pid int
	in  *json.Encoder
	out *json.Decoder
}

// startForger starts the forger in a new user namespace, as nobody
// outside it, and a new network namespace owned by it.
func startForger(t *testing.T, unit int) *forger {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), forgerEnv+"="+strconv.Itoa(unit))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: nobody, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: nobody, Size: 1}},
		Credential:  &syscall.Credential{Uid: 0, Gid: 0},
		Pdeathsig:   syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the forger: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("forger: %v; stderr: %s", err, stderr.String())
		}
	})
	return &forger{pid: cmd.Process.Pid, in: json.NewEncoder(stdin), out: json.NewDecoder(stdout)}
}

func (f *forger) forge(t *testing.T, o forgeOrder) forgeReport {
	t.Helper()
	if err := f.in.Encode(o); err != nil {
		t.Fatalf("order to the forger: %v", err)
	}
	var rep forgeReport
	if err := f.out.Decode(&rep); err != nil {
		t.Fatalf("forger's report: %v", err)
	}
	return rep
}

// requireOutsider checks that the forger is root only in a user namespace
// of its own: nobody to the initial one, its network namespace owned by
// its user namespace.
func requireOutsider(t *testing.T, pid int) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) < 2 || f[1] != strconv.Itoa(nobody) {
				t.Fatalf("forger's uids %q, want effective uid %d", rest, nobody)
			}
		}
	}
	own, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	its, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
	if err != nil {
		t.Fatal(err)
	}
	if its == own {
		t.Fatalf("forger in the test's user namespace %s", own)
	}
}

// TestIntegrationForge: the root of a rootless container — CAP_NET_ADMIN
// over its network namespace through a user namespace of its own, nobody
// outside — forges EVENTs to the daemon attached to that namespace: one
// multicast to the group a tenant subscribes to, one unicast to the
// daemon's port id. The kernel lets it multicast (it holds the capability
// the group needs) and refuses the unicast (the daemon's socket is
// connected to the kernel); the daemon drops the multicast, as a datagram
// whose source port id is not the kernel's, and counts it in
// nsbroker_forged_datagrams_total. The tenant's stream holds exactly the
// genuine events, numbered without a gap, before and after the forgery.
// What the forger and the tenant learn of the daemon's socket, its port
// id, is not the daemon's pid.
func TestIntegrationForge(t *testing.T) {
	unit := requireDaemon(t)
	const group = 5
	f := startForger(t, unit)
	requireOutsider(t, f.pid)

	d := startDaemon(t, filepath.Join(t.TempDir(), "nsbroker.sock"), "--metrics-listen", "127.0.0.1:0")
	admin, adminConn := d.client(t)
	name := fmt.Sprintf("forge-%d", f.pid)
	if _, err := admin.AttachNamespace(rpcContext(t), &nsbrokerv1.AttachNamespaceRequest{
		Name: name,
		Ref:  &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(f.pid)}},
	}); err != nil {
		t.Fatalf("attach the forger's namespace by pid %d: %v", f.pid, err)
	}
	waitServing(t, adminConn, name)

	tn := newTenantIn(t, nsmgr.Ref{PID: f.pid})
	sub := subscribe(testContext(t), "tenant", tn, "", group, false)
	waitSubscribers(t, admin, name, 1)

	publish := daemonPublish(admin, name, group)
	var want []string
	genuine := func(i int) {
		t.Helper()
		text := fmt.Sprintf("genuine %d", i)
		seq, err := publish([]byte(text))
		if err != nil {
			t.Fatalf("publish %q: %v", text, err)
		}
		want = append(want, fmt.Sprintf("event %d %q", seq, text))
		sub.waitFor(t, waitTimeout, text, func(gens []generation) bool {
			return len(gens) == 1 && len(gens[0].items) > 0 && gens[0].items[len(gens[0].items)-1].ev.GetSeq() == seq
		})
	}
	for i := 1; i <= 3; i++ {
		genuine(i)
	}

	// Forged: a number already delivered (which would report a module
	// reload) and one far ahead (which would report an overrun).
	rep := f.forge(t, forgeOrder{Group: group,
		MulticastSeq: 2, MulticastText: "forged multicast",
		UnicastSeq: 1000, UnicastText: "forged unicast"})
	t.Logf("forger (port id %d): sendto group %d: errno %d; sendto port ids: %v", rep.Port, group, rep.Multicast, rep.Unicast)
	if rep.Multicast != 0 {
		t.Fatalf("forger's sendto group %d: errno %d, want 0: without CAP_NET_ADMIN over the namespace it forges nothing and this test proves nothing", group, rep.Multicast)
	}
	if len(rep.Unicast) != 2 {
		t.Fatalf("forger saw %d other sockets of unit %d in its namespace (%v), want 2: the daemon's shared socket and its request socket", len(rep.Unicast), unit, rep.Unicast)
	}
	for port, errno := range rep.Unicast {
		if unix.Errno(errno) != unix.ECONNREFUSED {
			t.Errorf("forger's sendto the daemon's port id %d: errno %d (%v), want ECONNREFUSED (the socket is connected to the kernel)", port, errno, unix.Errno(errno))
		}
	}

	// What a process in the tenant's namespace reads of the daemon: the
	// port ids of its sockets there, in /proc/net/netlink (as the forger
	// did) and in every event published through them. None may be the
	// daemon's pid: family.Dial binds random port ids from 2^31 up.
	daemonPID := uint32(d.pid(t))
	for port := range rep.Unicast {
		if port == daemonPID || port < 0x80000000 {
			t.Errorf("the daemon's socket in the tenant's namespace has port id %d, which every process there reads: want one from 0x80000000 up, never the daemon's pid %d", port, daemonPID)
		}
	}

	// A genuine event after the forgery is delivered as the next number;
	// everything forged was read before it.
	genuine(4)
	var got []string
	gens := sub.snapshot()
	for _, it := range gens[0].items {
		if it.gap != nil {
			got = append(got, it.String())
			continue
		}
		got = append(got, fmt.Sprintf("event %d %q", it.ev.GetSeq(), it.ev.GetPayload()))
		if _, ours := rep.Unicast[it.ev.GetSenderPortid()]; !ours || it.ev.GetSenderPortid() == daemonPID {
			t.Errorf("event %d published through the daemon names sender port id %d: want one of the daemon's sockets' %v, never its pid %d", it.ev.GetSeq(), it.ev.GetSenderPortid(), rep.Unicast, daemonPID)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tenant's stream:\n\t%s\nwant only the genuine events:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}

	series := fmt.Sprintf("nsbroker_forged_datagrams_total{namespace=%q}", name)
	if got := metric(t, d.Log.String(), series); got != 1 {
		t.Errorf("%s = %v, want 1 (the multicast; the unicast was refused by the kernel)", series, got)
	}
}

// metric returns the value of the daemon's sample named exactly series,
// or -1 if it has none. The metrics address is in the daemon's log.
func metric(t *testing.T, log, series string) float64 {
	t.Helper()
	var addr string
	for _, line := range strings.Split(log, "\n") {
		var l struct{ Msg, Metrics string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "nsbrokerd serving" && l.Metrics != "" {
			addr = l.Metrics
		}
	}
	if addr == "" {
		t.Fatalf("no metrics address in the daemon's log:\n%s", log)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", s.Text(), err)
			}
			return v
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return -1
}
