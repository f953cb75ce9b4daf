package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

// TestIntegrationNotify checks the service manager notifications: ready
// once serving, reloading and ready again around a SIGHUP, stopping.
func TestIntegrationNotify(t *testing.T) {
	testenv.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		sock.SetReadDeadline(time.Now().Add(waitTimeout))
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("notification: %v", err)
		}
		return string(buf[:n])
	}

	file := writeFile(t, "nsbrokerd.yaml", "tenants: []\n")
	d := startDaemon(t, func(c *Config) { c.ConfigFile = file })
	if got := next(); got != "READY=1" {
		t.Errorf("after start: want READY=1, got %q", got)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if got := next(); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("at SIGHUP: want RELOADING=1 with MONOTONIC_USEC, got %q", got)
	}
	if got := next(); got != "READY=1" {
		t.Errorf("after the reload: want READY=1, got %q", got)
	}
	if e := d.logs.waitCount(msgIs("reloaded"), 1); e.attrs["changed"] != "false" {
		t.Errorf("reload of the same tenants: want changed=false, got %v", e)
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "STOPPING=1" {
		t.Errorf("at stop: want STOPPING=1, got %q", got)
	}
}
