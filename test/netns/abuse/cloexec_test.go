package abuse

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationCloseOnExec: every descriptor of a daemon that holds
// namespaces (by name and by pid), their local sockets, its listeners,
// subscribers and client connections has close-on-exec set, so no process
// started from it could inherit a socket or namespace file and pin a
// namespace. The daemon starts no child processes itself; the test checks
// that too, since a child would be where a leaked descriptor shows.
func TestIntegrationCloseOnExec(t *testing.T) {
	d := startDaemon(t)
	red, blue := d.attach(t), d.attach(t)
	admin, _ := d.admin(t)

	// A namespace attached by pid: the daemon holds a pidfd for it.
	other := newNetns(t)
	sleeper := exec.Command("ip", "netns", "exec", other, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	var pidNs *nsbrokerv1.Namespace
	if !waitFor(waitTimeout, func() bool { // until ip has exec'd sleep inside the namespace
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid))
		if err != nil || link == selfNetns(t) {
			return false
		}
		pidNs, err = admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{
			Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(sleeper.Process.Pid)}},
		})
		if err != nil {
			t.Fatalf("AttachNamespace pid:%d: %v", sleeper.Process.Pid, err)
		}
		return true
	}) {
		t.Fatalf("process %d never entered namespace %s", sleeper.Process.Pid, other)
	}

	// Streams and connections through every kind of listener.
	tc, _ := tenant(t, red)
	subscribe(t, ctx, tc, "", 1)
	subscribe(t, ctx, admin, blue, 1, 2)
	subscribe(t, ctx, admin, pidNs.GetName(), 1)
	d.metric(t, "go_goroutines")

	// What the daemon was given when the test started it is not its
	// own: standard input, output and error, and whatever descriptor the
	// test itself passes on to every program it runs (the VM's result
	// port). Those are listed, not judged.
	given := inheritable(t)
	kinds := map[string]int{}
	var bad, passed []string
	for _, fd := range d.fds(t) {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", d.pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		flags := fdFlags(t, d.pid, fd)
		if fd <= 2 || given[fd] == link {
			passed = append(passed, fmt.Sprintf("%d=%s", fd, link))
			if strings.HasPrefix(link, "socket:") || strings.HasPrefix(link, "net:") {
				t.Errorf("fd %d given to the daemon is %s: it would pin a namespace", fd, link)
			}
			continue
		}
		kind := link
		if i := strings.IndexAny(link, ":["); i > 0 && !strings.HasPrefix(link, "/") {
			kind = link[:i]
			if strings.HasPrefix(link, "anon_inode:") {
				kind = link
			}
		}
		kinds[kind]++
		if flags&unix.O_CLOEXEC == 0 {
			bad = append(bad, fmt.Sprintf("fd %d (%s) flags %#o", fd, link, flags))
		}
	}
	t.Logf("daemon pid %d: %d descriptors of its own by kind %v, without close-on-exec: %d; given to it by the test: %v", d.pid, len(d.fds(t))-len(passed), kinds, len(bad), passed)
	for _, b := range bad {
		t.Errorf("no close-on-exec: %s", b)
	}
	// The descriptors that pin a namespace were among those checked.
	for _, want := range []string{"socket", "net", "anon_inode:[pidfd]", "anon_inode:inotify"} {
		if kinds[want] == 0 {
			t.Errorf("no %s descriptor in the daemon; want one checked (kinds %v)", want, kinds)
		}
	}

	if children := childrenOf(t, d.pid); len(children) > 0 {
		t.Errorf("the daemon has child processes %v; want none (or check their descriptors)", children)
	}
}

// fdFlags reads the "flags:" line (octal) of /proc/PID/fdinfo/FD.
func fdFlags(t *testing.T, pid, fd int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "flags:"); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(rest), 8, 64)
			if err != nil {
				t.Fatalf("fdinfo %d of %d: %q: %v", fd, pid, line, err)
			}
			return int(v)
		}
	}
	t.Fatalf("fdinfo %d of %d has no flags line:\n%s", fd, pid, b)
	return 0
}

// inheritable maps the test process's descriptors that a program it runs
// inherits (no close-on-exec) to what they are.
func inheritable(t *testing.T) map[int]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	pid := os.Getpid()
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		if fdFlags(t, pid, fd)&unix.O_CLOEXEC == 0 {
			out[fd] = link
		}
	}
	return out
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []string {
	t.Helper()
	// /proc/PID/task/*/children needs CONFIG_PROC_CHILDREN, which the
	// debug kernel lacks: look at every process's parent instead.
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil || len(stats) == 0 {
		t.Fatalf("list processes: %v, %d found", err, len(stats))
	}
	var out []string
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the process is gone
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		fields := strings.Fields(string(b[i+1:]))
		if i < 0 || len(fields) < 2 {
			t.Fatalf("%s: %q", f, b)
		}
		if fields[1] == strconv.Itoa(pid) {
			out = append(out, strings.Fields(string(b))[0])
		}
	}
	return out
}

// selfNetns is the link of the test's own network namespace.
func selfNetns(t *testing.T) string {
	t.Helper()
	link, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return link
}
