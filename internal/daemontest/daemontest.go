// Package daemontest runs the real nsbrokerd binary for the in-guest
// suites: started with its admin socket in a temporary directory, ready
// once it says READY=1 on $NOTIFY_SOCKET as it does to a service manager,
// the end of its log printed when the test fails.
package daemontest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer that a process and the test share.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Daemon is a running nsbrokerd.
type Daemon struct {
	Admin   string      // the admin socket
	Log     *SyncBuffer // its standard output and error
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been reaped
	waitErr error         // set before exited is closed
}

// Start starts nsbrokerd (from PATH) with args after the test's own and
// waits up to timeout for READY=1. A daemon still running when the test
// ends is killed.
func Start(t *testing.T, timeout time.Duration, args ...string) *Daemon {
	t.Helper()
	return StartIn(t, timeout, "", args...)
}

// StartIn is Start with the process created inside the cgroup v2
// directory cgroup (clone3 with CLONE_INTO_CGROUP), so that everything it
// ever allocates is charged there and its limits hold from its first
// instruction. An empty cgroup is the test's own.
func StartIn(t *testing.T, timeout time.Duration, cgroup string, args ...string) *Daemon {
	t.Helper()
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()

	d := &Daemon{Admin: filepath.Join(dir, "run", "nsbroker.sock"), Log: &SyncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command("nsbrokerd", append([]string{
		"--admin-socket", d.Admin, "--log-format", "json", "--log-level", "debug",
		// Each daemon its own state file, unless args name one: a test
		// that restarts the daemon passes the same file to both.
		"--state-file", filepath.Join(dir, "run", "attachments.json"),
	}, args...)...)
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	d.cmd.Stdout, d.cmd.Stderr = d.Log, d.Log
	if cgroup != "" {
		cg, err := os.Open(cgroup)
		if err != nil {
			t.Fatal(err)
		}
		defer cg.Close()
		d.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	}
	startReaped(t, "nsbrokerd", d.cmd, d.Log, &d.waitErr, d.exited)

	ready := make(chan error, 1)
	notify.SetReadDeadline(time.Now().Add(timeout))
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				ready <- err
				return
			}
			if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
				ready <- nil
				return
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("nsbrokerd did not report READY=1: %v", err)
		}
	case <-d.exited:
		t.Fatalf("nsbrokerd exited during start-up: %v", d.waitErr)
	}
	return d
}

// Pid is the process's id. (The admin socket's SO_PEERCRED names the
// process that listened on it, which is another after a handover.)
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// Stop sends SIGTERM and checks that the daemon exits 0 within timeout.
func (d *Daemon) Stop(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(timeout):
		t.Fatalf("nsbrokerd still running %v after SIGTERM", timeout)
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("nsbrokerd exit status after SIGTERM: got %d (%v), want 0", code, d.waitErr)
	}
}

// startReaped starts cmd (name in the log) and reaps it on a goroutine of
// its own: *waitErr is set, and then exited closed, once it has exited. A
// process still running when the test ends is killed, and a failed test
// shows the last logTail lines it wrote to log.
func startReaped(t *testing.T, name string, cmd *exec.Cmd, log *SyncBuffer, waitErr *error, exited chan struct{}) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		*waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s (pid %d) log:\n%s", name, cmd.Process.Pid, tail(log.String(), logTail))
		}
	})
}

// logTail is how many of a process's last log lines a failed test shows:
// enough for what led up to the failure, few enough that the test's own
// messages are not lost in the output above it.
const logTail = 200

// tail is the last n lines of log, after a line that says how many it
// leaves out.
func tail(log string, n int) string {
	lines := strings.SplitAfter(log, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) <= n {
		return log
	}
	return fmt.Sprintf("(first %d lines omitted)\n%s", len(lines)-n, strings.Join(lines[len(lines)-n:], ""))
}
