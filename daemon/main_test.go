package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

// mainChild is Main running in a child process, its JSON log lines read
// one at a time.
type mainChild struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any
}

func startMain(t *testing.T, args ...string) *mainChild {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(childEnviron(), childEnv+"=main", argsEnv+"="+strings.Join(args, "\n"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &mainChild{t: t, cmd: cmd, lines: make(chan map[string]any, 100)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				line = map[string]any{"msg": "unparsed: " + sc.Text()}
			}
			c.lines <- line
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return c
}

// waitLine returns the first log line with message msg.
func (c *mainChild) waitLine(msg string) map[string]any {
	c.t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("the daemon's log ended before %q", msg)
			}
			c.t.Logf("child: %v", line)
			if line["msg"] == msg {
				return line
			}
		case <-timeout:
			c.t.Fatalf("no %q in the daemon's log after %v", msg, waitTimeout)
		}
	}
}

func (c *mainChild) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// exitCode waits for the child and returns its exit status.
func (c *mainChild) exitCode() int {
	c.t.Helper()
	for range c.lines {
	}
	err := c.cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		c.t.Fatal(err)
	}
	return c.cmd.ProcessState.ExitCode()
}

// TestIntegrationMainSignals runs Main in a child process: SIGHUP
// reloads (and does not kill it), SIGTERM stops it cleanly with status 0.
func TestIntegrationMainSignals(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	socket := filepath.Join(dir, "nsbroker.sock")
	config := writeFile(t, "nsbrokerd.yaml", "tenants: [{name: acme, namespaces: [red]}]\n")
	c := startMain(t, "--config", config, "--admin-socket", socket, "--state-file", filepath.Join(dir, "attachments.json"),
		"--no-local-socket", "--log-format", "json")
	serving := c.waitLine("nsbrokerd serving")
	if serving["admin"] != socket {
		t.Errorf("serving on %v, want %s", serving["admin"], socket)
	}
	c.signal(syscall.SIGHUP)
	if reload := c.waitLine("reloaded"); reload["tenants"] != 1.0 {
		t.Errorf("reload: want 1 tenant, got %v", reload["tenants"])
	}
	c.signal(syscall.SIGTERM)
	c.waitLine("nsbrokerd stopped")
	if code := c.exitCode(); code != exitOK {
		t.Errorf("exit status after SIGTERM: want %d, got %d", exitOK, code)
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket after stop: want it removed, got %v", err)
	}
}

// TestIntegrationMainFails checks that a daemon that cannot start exits
// with status 1 and says why.
func TestIntegrationMainFails(t *testing.T) {
	testenv.RequireRoot(t)
	notSocket := writeFile(t, "file", "")
	c := startMain(t, "--admin-socket", notSocket, "--no-local-socket", "--log-format", "json")
	failed := c.waitLine("nsbrokerd failed")
	if want := notSocket + " exists and is not a socket"; !strings.Contains(failed["err"].(string), want) {
		t.Errorf("failure: want %q, got %v", want, failed["err"])
	}
	if code := c.exitCode(); code != exitError {
		t.Errorf("exit status: want %d, got %d", exitError, code)
	}
}
