package kmodtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

// Where the VM harness installs the kernel's ynl CLI (tools/net/ynl of
// Debian's linux-source package, with Debian's python3, PyYAML and
// jsonschema), the netlink-raw schema of the same source, and the
// project's spec (test/netns/vm/lib/initramfs.sh, install_ynl).
const (
	ynlCommand = "/usr/local/bin/ynl"
	ynlSchema  = "/usr/local/share/ynl/netlink-raw.yaml"
	ynlSpec    = "/usr/local/share/nsbroker/nsbroker.yaml"
	// ynlSleep is how long the subscriber waits for events before it
	// reads them (ynl --subscribe --sleep), in seconds. ynl takes seconds
	// to start under emulation (3 to 8 per call on the Debian kernel); the
	// publishes come after both subscribers joined, within this.
	ynlSleep = 40
	// ynlSleepDebug is ynlSleep on the debug kernel, where everything
	// python does in the kernel is much slower.
	ynlSleepDebug = 150
)

// ynlSetup checks that ynl and its files are there (in the VM they must
// be) and returns a spec for the module's unit.
func ynlSetup(t *testing.T, unit int) string {
	t.Helper()
	for _, f := range []string{ynlCommand, ynlSchema, ynlSpec, "/usr/bin/python3"} {
		if _, err := os.Stat(f); err != nil {
			if testenv.InVM() {
				t.Fatalf("ynl is not installed in the guest: %v (the VM harness installs it: test/netns/vm/lib/initramfs.sh)", err)
			}
			t.Skipf("ynl is not installed: %v; this test runs in the VM (make vmtest)", err)
		}
	}
	// The spec names the default unit; the module may have been loaded
	// on another.
	src, err := os.ReadFile(ynlSpec)
	if err != nil {
		t.Fatal(err)
	}
	protonum := regexp.MustCompile(`(?m)^protonum: \d+$`)
	if !protonum.Match(src) {
		t.Fatalf("%s has no protonum line", ynlSpec)
	}
	spec := filepath.Join(t.TempDir(), "nsbroker.yaml")
	if err := os.WriteFile(spec, protonum.ReplaceAll(src, []byte("protonum: "+strconv.Itoa(unit))), 0o644); err != nil {
		t.Fatal(err)
	}
	return spec
}

// ynlCmd is ynl run in namespace ns (through nsenter and the namespace's
// handle), with the spec and the kernel's schema, printing JSON.
//
// The child gets a duplicate of the handle: an *os.File made from the
// handle itself would close it when the garbage collector finalizes the
// File, and the next command's /proc/self/fd/3 would then be whatever
// reused the number (nsenter: "can't reassociate to namespace 'net':
// Invalid argument").
func ynlCmd(ctx context.Context, t *testing.T, ns netns.NsHandle, spec string, args ...string) *exec.Cmd {
	t.Helper()
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("duplicate the namespace handle: %v", err)
	}
	f := os.NewFile(uintptr(fd), "netns")
	t.Cleanup(func() { f.Close() })
	args = append([]string{"--net=/proc/self/fd/3", ynlCommand, "--spec", spec, "--schema", ynlSchema, "--output-json"}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.ExtraFiles = []*os.File{f}
	return cmd
}

// ynlDo runs one --do operation and decodes its JSON reply.
func ynlDo(t *testing.T, ns netns.NsHandle, spec, op string, req map[string]any) map[string]any {
	t.Helper()
	js, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	cmd := ynlCmd(ctx, t, ns, spec, "--do", op, "--json", string(js))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("ynl --do %s --json '%s': %v\n%s%s", op, js, err, out, stderr.Bytes())
	}
	var reply map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out), &reply); err != nil {
		t.Fatalf("ynl --do %s: reply is not a JSON object: %v\n%s", op, err, out)
	}
	t.Logf("ynl --do %s --json '%s' (%v): %s", op, js, time.Since(start).Round(time.Millisecond), bytes.TrimSpace(out))
	return reply
}

// num reads a number of a decoded reply; path names nested objects.
func num(t *testing.T, m map[string]any, path ...string) uint64 {
	t.Helper()
	var v any = m
	for _, k := range path {
		o, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%v: %q is not inside an object", m, k)
		}
		if v, ok = o[k]; !ok {
			t.Fatalf("%v: no %q", m, strings.Join(path, "."))
		}
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("%v: %s = %v, not a number", m, strings.Join(path, "."), v)
	}
	return uint64(f)
}

// joinedGroup reports whether a netlink socket of unit in the namespace of
// process pid is a member of group (/proc/PID/net/netlink).
func joinedGroup(pid, unit int, group uint) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/netlink", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// sk Eth Pid Groups Rmem ...
		fields := strings.Fields(s.Text())
		if len(fields) < 4 || fields[1] != strconv.Itoa(unit) {
			continue
		}
		groups, err := strconv.ParseUint(fields[3], 16, 32)
		if err == nil && groups&(1<<(group-1)) != 0 {
			return true
		}
	}
	return false
}

// TestIntegrationYNL drives the module with the kernel's own YNL CLI and
// the project's spec (kmod/nsbroker.yaml), as docs/ynl.md tells a user
// to, from two namespaces: echo, publish and stats answer with the
// namespace that asked, and a `--subscribe` in each namespace receives
// exactly its own namespace's event.
func TestIntegrationYNL(t *testing.T) {
	unit := testenv.RequireModule(t)
	spec := ynlSetup(t, unit)
	const group = 9
	sleep := ynlSleep
	if testenv.DebugKernel() {
		sleep = ynlSleepDebug
	}

	type tenant struct {
		name  string
		ns    netns.NsHandle
		inode uint32
		sub   *exec.Cmd
		out   bytes.Buffer
	}
	tenants := []*tenant{{name: "a"}, {name: "b"}}
	for _, tn := range tenants {
		tn.ns = newNetns(t)
		tn.inode = inode(t, tn.ns)
	}

	// Subscribers first: each one joins the group and sleeps, then prints
	// what arrived meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(sleep)*time.Second+2*time.Minute)
	defer cancel()
	for _, tn := range tenants {
		tn.sub = ynlCmd(ctx, t, tn.ns, spec, "--subscribe", fmt.Sprintf("group-%d", group), "--sleep", strconv.Itoa(sleep))
		tn.sub.Stdout, tn.sub.Stderr = &tn.out, &tn.out
		if err := tn.sub.Start(); err != nil {
			t.Fatalf("start ynl --subscribe in %s: %v", tn.name, err)
		}
		defer func() {
			if tn.sub.ProcessState == nil {
				tn.sub.Process.Kill()
				tn.sub.Wait()
			}
		}()
	}
	start := time.Now()
	for _, tn := range tenants {
		for !joinedGroup(tn.sub.Process.Pid, unit, group) {
			if time.Since(start) > time.Duration(sleep)*time.Second/2 {
				t.Fatalf("ynl --subscribe in %s has not joined group %d after %v", tn.name, group, time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("both subscribers joined group %d after %v", group, time.Since(start).Round(time.Millisecond))

	// Publish first, while the subscribers wait. Fresh namespaces: the
	// group's first number is 1, and the subscriber is its member.
	for _, tn := range tenants {
		r := ynlDo(t, tn.ns, spec, "publish", map[string]any{"version": 1, "group": group, "payload": hex.EncodeToString([]byte("event of " + tn.name))})
		if g, s, l := num(t, r, "group"), num(t, r, "seq"), num(t, r, "listeners"); g != group || s != 1 || l != 1 {
			t.Errorf("%s: publish reply group %d seq %d listeners %d, want %d 1 1", tn.name, g, s, l, group)
		}
	}
	t.Logf("both published %v after the subscribers started", time.Since(start).Round(time.Millisecond))

	for _, tn := range tenants {
		payload := []byte("ynl in " + tn.name)
		r := ynlDo(t, tn.ns, spec, "echo", map[string]any{"version": 1, "payload": hex.EncodeToString(payload)})
		if got := r["payload"]; got != hex.EncodeToString(payload) {
			t.Errorf("%s: echo payload %v, want %x", tn.name, got, payload)
		}
		if got := num(t, r, "netns-inum"); got != uint64(tn.inode) {
			t.Errorf("%s: echo answered by namespace %d, want %d", tn.name, got, tn.inode)
		}

		r = ynlDo(t, tn.ns, spec, "stats", map[string]any{"version": 1})
		if got := num(t, r, "netns-inum"); got != uint64(tn.inode) {
			t.Errorf("%s: stats answered by namespace %d, want %d", tn.name, got, tn.inode)
		}
		for _, c := range []struct {
			name string
			want uint64
		}{{"echo", 1}, {"publish", 1}, {"delivered", 1}, {"no-listener", 0}, {"rejected", 0}} {
			if got := num(t, r, "stats", c.name); got != c.want {
				t.Errorf("%s: stats %s = %d, want %d (this namespace's counters only)", tn.name, c.name, got, c.want)
			}
		}
	}

	// A request the module refuses: ynl fails and says why.
	out, err := ynlCmd(ctx, t, tenants[0].ns, spec, "--do", "publish", "--json", `{"version": 1, "group": 33}`).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "out of range") {
		t.Errorf("ynl --do publish to group 33: want a failure naming ERANGE, got %v:\n%s", err, out)
	}

	for _, tn := range tenants {
		if err := tn.sub.Wait(); err != nil {
			t.Fatalf("ynl --subscribe in %s: %v\n%s", tn.name, err, tn.out.String())
		}
		var events []struct {
			Name string         `json:"name"`
			Msg  map[string]any `json:"msg"`
		}
		if err := json.Unmarshal(bytes.TrimSpace(tn.out.Bytes()), &events); err != nil {
			t.Fatalf("ynl --subscribe in %s: output is not a JSON list: %v\n%s", tn.name, err, tn.out.String())
		}
		t.Logf("ynl --subscribe group-%d in %s: %s", group, tn.name, bytes.TrimSpace(tn.out.Bytes()))
		if len(events) != 1 {
			t.Fatalf("%s: subscriber received %d messages, want exactly its own namespace's event", tn.name, len(events))
		}
		ev := events[0]
		if ev.Name != "event" {
			t.Errorf("%s: subscriber received %q, want an event", tn.name, ev.Name)
		}
		if got, want := ev.Msg["payload"], hex.EncodeToString([]byte("event of "+tn.name)); got != want {
			t.Errorf("%s: event payload %v, want %v", tn.name, got, want)
		}
		if got := num(t, ev.Msg, "netns-inum"); got != uint64(tn.inode) {
			t.Errorf("%s: event from namespace %d, want %d", tn.name, got, tn.inode)
		}
		if g, s := num(t, ev.Msg, "group"), num(t, ev.Msg, "seq"); g != group || s != 1 {
			t.Errorf("%s: event group %d seq %d, want %d 1", tn.name, g, s, group)
		}
	}
}
