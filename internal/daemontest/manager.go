package daemontest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ServiceManager plays what systemd does for a Type=notify service with
// FileDescriptorStoreMax= set, so that a test can kill a daemon and start
// it again as systemd's Restart= would: it listens on $NOTIFY_SOCKET,
// keeps the descriptors sent with FDSTORE=1 under their FDNAME (the same
// file sent again under the same name is kept once), closes those named
// by FDSTOREREMOVE=1, and passes what it keeps to each start as
// descriptors 3 and on, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID.
type ServiceManager struct {
	path  string
	conn  *net.UnixConn
	ready chan struct{} // a READY=1

	mu     sync.Mutex
	stored []storedFD // guarded by mu, in the order stored
}

type storedFD struct {
	name     string
	f        *os.File
	dev, ino uint64 // what the descriptor refers to
}

// FDStoreMax is what the manager says in $FDSTORE (systemd 254 and later
// set it to FileDescriptorStoreMax=).
const FDStoreMax = 1024

// NewServiceManager listens on a notify socket in a temporary directory;
// it and what it stores are closed when the test ends.
func NewServiceManager(t *testing.T) *ServiceManager {
	t.Helper()
	m := &ServiceManager{path: filepath.Join(t.TempDir(), "notify.sock"), ready: make(chan struct{}, 16)}
	var err error
	if m.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: m.path, Net: "unixgram"}); err != nil {
		t.Fatal(err)
	}
	go m.serve()
	t.Cleanup(func() {
		m.conn.Close()
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, s := range m.stored {
			s.f.Close()
		}
		m.stored = nil
	})
	return m
}

func (m *ServiceManager) serve() {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*253)) // SCM_MAX_FD
	for {
		n, oobn, _, _, err := m.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		var files []*os.File
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, msg := range msgs {
				fds, err := unix.ParseUnixRights(&msg)
				if err != nil {
					continue
				}
				for _, fd := range fds {
					unix.CloseOnExec(fd)
					files = append(files, os.NewFile(uintptr(fd), "stored"))
				}
			}
		}
		m.handle(string(buf[:n]), files)
	}
}

func (m *ServiceManager) handle(msg string, files []*os.File) {
	vars := map[string]string{}
	for _, line := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	name := vars["FDNAME"]
	if name == "" {
		name = "stored" // systemd's default
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if vars["FDSTORE"] == "1" {
		for _, f := range files {
			var st unix.Stat_t
			if err := fileControl(f, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
				f.Close()
				continue
			}
			if slices.ContainsFunc(m.stored, func(s storedFD) bool { return s.name == name && s.dev == st.Dev && s.ino == st.Ino }) {
				f.Close()
				continue
			}
			m.stored = append(m.stored, storedFD{name, f, st.Dev, st.Ino})
		}
		files = nil
	}
	for _, f := range files {
		f.Close() // sent without FDSTORE=1: systemd closes them
	}
	if vars["FDSTOREREMOVE"] == "1" {
		m.stored = slices.DeleteFunc(m.stored, func(s storedFD) bool {
			if s.name == name {
				s.f.Close()
				return true
			}
			return false
		})
	}
	if vars["READY"] == "1" {
		select {
		case m.ready <- struct{}{}:
		default:
		}
	}
}

// Names lists the names of what the store holds, in the order stored.
func (m *ServiceManager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for _, s := range m.stored {
		names = append(names, s.name)
	}
	return names
}

// Managed is a process the service manager started.
type Managed struct {
	Log     *SyncBuffer // its standard output and error
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been reaped
	waitErr error         // set before exited is closed
}

// Start starts argv (argv[0] found on PATH) with env added to the
// test's environment, passing it what the store holds, and waits up to
// timeout for READY=1. systemd sets LISTEN_PID to the service's pid
// after it forks; here a shell sets it to its own pid and then becomes
// argv[0] (exec keeps the pid). A process still running when the test
// ends is killed.
func (m *ServiceManager) Start(t *testing.T, timeout time.Duration, env []string, argv ...string) *Managed {
	t.Helper()
	// Copies: the store may drop (and close) one while the process
	// starts.
	m.mu.Lock()
	var names []string
	var files []*os.File
	for _, s := range m.stored {
		fd, err := dupFile(s.f)
		if err != nil {
			m.mu.Unlock()
			t.Fatalf("dup the stored %s: %v", s.name, err)
		}
		names, files = append(names, s.name), append(files, os.NewFile(uintptr(fd), s.name))
	}
	m.mu.Unlock()
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for len(m.ready) > 0 {
		<-m.ready
	}
	d := &Managed{Log: &SyncBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command("/bin/sh", append([]string{"-c", `LISTEN_PID=$$; export LISTEN_PID; exec "$@"`, "sh"}, argv...)...)
	own := []string{"NOTIFY_SOCKET", "FDSTORE", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}
	d.cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(own, k)
	})
	d.cmd.Env = append(append(d.cmd.Env, env...), "NOTIFY_SOCKET="+m.path, "FDSTORE="+strconv.Itoa(FDStoreMax))
	if len(files) > 0 {
		d.cmd.Env = append(d.cmd.Env, "LISTEN_FDS="+strconv.Itoa(len(files)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		d.cmd.ExtraFiles = files
	}
	d.cmd.Stdout, d.cmd.Stderr = d.Log, d.Log
	startReaped(t, argv[0], d.cmd, d.Log, &d.waitErr, d.exited)
	select {
	case <-m.ready:
	case <-d.exited:
		t.Fatalf("%s exited during start-up: %v\n%s", argv[0], d.waitErr, d.Log)
	case <-time.After(timeout):
		t.Fatalf("%s did not say READY=1 within %v", argv[0], timeout)
	}
	return d
}

// Pid is the process's id.
func (d *Managed) Pid() int { return d.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (d *Managed) Exited() <-chan struct{} { return d.exited }

// Kill sends SIGKILL and waits up to timeout until the process is gone.
func (d *Managed) Kill(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(timeout):
		t.Fatalf("still running %v after SIGKILL", timeout)
	}
}

// Stop sends SIGTERM and checks that the process exits 0 within timeout.
func (d *Managed) Stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(timeout):
		t.Fatalf("still running %v after SIGTERM", timeout)
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status after SIGTERM: %d, want 0", code)
	}
}

// fileControl runs fn on f's descriptor without f.Fd, which would put
// the open file, shared with the process that stored it, in blocking
// mode.
func fileControl(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// dupFile returns a new close-on-exec descriptor for f's open file.
func dupFile(f *os.File) (int, error) {
	var nfd int
	err := fileControl(f, func(fd int) error {
		var err error
		nfd, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return err
	})
	return nfd, err
}
