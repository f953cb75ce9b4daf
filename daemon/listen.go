package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/server"
)

// listenAdmin opens the admin socket, or takes the one inherited: its
// directory is created mode 0755, the socket is mode 0600 (0660 and owned
// by the admin group when there is one), and a stale socket left by a
// dead daemon is replaced. Peers other than root, the daemon's own user
// and members of the admin group are refused by their SO_PEERCRED
// credentials as well. It returns the served listener and the socket.
// Closing it leaves the file: the daemon removes it when it stops for
// good.
func listenAdmin(path, group string, log *slog.Logger, inh *inherited) (net.Listener, *net.UnixListener, error) {
	gid := -1
	if group != "" {
		var err error
		if gid, err = lookupGroup(group); err != nil {
			return nil, nil, err
		}
	}
	ln, err := inh.unixListener(fdAdmin, path)
	if err != nil {
		log.Warn("inherited admin socket dropped", "err", err)
	}
	if ln == nil {
		if ln, err = newAdminSocket(path); err != nil {
			return nil, nil, err
		}
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, nil, err
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, nil, err
	}
	self := uint32(os.Geteuid())
	allow := func(cred *unix.Ucred) error {
		err := allowAdmin(cred, self, gid)
		if err != nil {
			log.Warn("admin socket: peer refused", "pid", cred.Pid, "uid", cred.Uid, "gid", cred.Gid, "err", err)
		}
		return err
	}
	return server.AdminListener(ln, allow), ln, nil
}

// newAdminSocket listens on path, in a directory created mode 0755, in
// place of a stale socket.
func newAdminSocket(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
			return nil, err
		}
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	return listenUnix(path)
}

// allowAdmin admits root, the daemon's own user and, when gid >= 0,
// members of that group (primary or supplementary).
func allowAdmin(cred *unix.Ucred, self uint32, gid int) error {
	if cred.Uid == 0 || cred.Uid == self {
		return nil
	}
	if gid < 0 {
		return fmt.Errorf("uid %d is not root", cred.Uid)
	}
	if cred.Gid == uint32(gid) {
		return nil
	}
	groups, err := processGroups(int(cred.Pid))
	if err != nil {
		return fmt.Errorf("uid %d: supplementary groups: %w", cred.Uid, err)
	}
	if slices.Contains(groups, uint32(gid)) {
		return nil
	}
	return fmt.Errorf("uid %d is neither root nor in group %d", cred.Uid, gid)
}

// processGroups reads a process's supplementary groups.
func processGroups(pid int) ([]uint32, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var groups []uint32
		for _, g := range strings.Fields(rest) {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return nil, err
			}
			groups = append(groups, uint32(n))
		}
		return groups, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no Groups line")
}

// lookupGroup resolves a group name or number.
func lookupGroup(group string) (int, error) {
	if n, err := strconv.ParseUint(group, 10, 31); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("admin_group: %w", err)
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("admin_group %q: gid %q: %w", group, g.Gid, err)
	}
	return n, nil
}

// removeStale removes a socket file nobody listens on; a live one, or a
// file that is not a socket, is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s is in use: is another nsbrokerd running?", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Remove(path)
}

// listeners are the daemon's fixed listeners; nil when off.
type listeners struct {
	admin, tcp, metrics net.Listener
	adminSocket         *net.UnixListener // under admin
	handover            *net.UnixListener
}

// fixedListener is a fixed listener by its fd store name.
type fixedListener struct {
	name string
	ln   interface{ File() (*os.File, error) }
}

// listen opens the fixed listeners, or none.
func (d *daemon) listen() (*listeners, error) {
	cfg := d.cfg
	var lis listeners
	var err error
	if cfg.AdminSocket != "" {
		if lis.admin, lis.adminSocket, err = listenAdmin(cfg.AdminSocket, cfg.AdminGroup, d.log, d.inherit); err != nil {
			return nil, fmt.Errorf("admin socket: %w", err)
		}
		d.fixed = append(d.fixed, fixedListener{fdAdmin, lis.adminSocket})
	}
	if cfg.TCPListen != "" {
		if lis.tcp = d.inherit.tcpListener(fdTCP, cfg.TCPListen); lis.tcp == nil {
			if lis.tcp, err = net.Listen("tcp", cfg.TCPListen); err != nil {
				lis.close()
				return nil, fmt.Errorf("tcp listener: %w", err)
			}
		}
		d.fixed = append(d.fixed, fixedListener{fdTCP, lis.tcp.(*net.TCPListener)})
	}
	if cfg.MetricsListen != "" {
		if lis.metrics = d.inherit.tcpListener(fdMetrics, cfg.MetricsListen); lis.metrics == nil {
			if lis.metrics, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
				lis.close()
				return nil, fmt.Errorf("metrics listener: %w", err)
			}
		}
		d.fixed = append(d.fixed, fixedListener{fdMetrics, lis.metrics.(*net.TCPListener)})
	}
	if path := cfg.runPath(cfg.HandoverSocket); path != "" {
		if lis.handover, err = d.listenHandover(path); err != nil {
			lis.close()
			return nil, fmt.Errorf("handover socket: %w", err)
		}
		d.fixed = append(d.fixed, fixedListener{fdHandover, lis.handover})
	}
	return &lis, nil
}

func (lis *listeners) close() {
	for _, l := range []net.Listener{lis.admin, lis.tcp, lis.metrics} {
		if l != nil {
			l.Close()
		}
	}
	if lis.handover != nil {
		lis.handover.Close()
	}
}

func (lis *listeners) addrs() Addrs {
	var a Addrs
	if lis.admin != nil {
		a.Admin = lis.admin.Addr()
	}
	if lis.tcp != nil {
		a.TCP = lis.tcp.Addr()
	}
	if lis.metrics != nil {
		a.Metrics = lis.metrics.Addr()
	}
	return a
}

func (lis *listeners) logAttrs() []any {
	var attrs []any
	a := lis.addrs()
	for _, kv := range []struct {
		key  string
		addr net.Addr
	}{{"admin", a.Admin}, {"tcp", a.TCP}, {"metrics", a.Metrics}} {
		if kv.addr != nil {
			attrs = append(attrs, kv.key, kv.addr.String())
		}
	}
	return attrs
}
