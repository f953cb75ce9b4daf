package family

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

// TestIntegrationNetnsCookie: a socket's cookie is that of the namespace
// it was made in: the host's for one made here (as a plain socket made
// here tells), another for one made in a namespace of its own.
func TestIntegrationNetnsCookie(t *testing.T) {
	testenv.RequireRoot(t)
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	host, err := unix.GetsockoptUint64(s, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	unix.Close(s)
	if errors.Is(err, unix.ENOPROTOOPT) {
		t.Skip("kernel has no SO_NETNS_COOKIE (before 5.14)")
	}
	if err != nil {
		t.Fatal(err)
	}

	here, err := dial(unix.NETLINK_ROUTE, &Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	if got, err := here.NetnsCookie(); err != nil || got != host {
		t.Errorf("NetnsCookie of a socket made here: got %d, %v; want %d", got, err, host)
	}

	there, err := dial(unix.NETLINK_ROUTE, &Config{NetNS: int(newNetns(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer there.Close()
	if got, err := there.NetnsCookie(); err != nil || got == 0 || got == host {
		t.Errorf("NetnsCookie of a socket made in another namespace: got %d, %v; want nonzero and not the host's %d", got, err, host)
	}
}
