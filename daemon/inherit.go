package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/nsmgr"
)

// The names under which the daemon hands its listening sockets to the
// service manager's fd store or to its successor. A namespace's sockets
// are named after its identity (fdNames): "local-DEV-INO" for the
// abstract socket, "file-DEV-INO" for the filesystem socket.
const (
	fdAdmin    = "admin"
	fdTCP      = "tcp"
	fdMetrics  = "metrics"
	fdHandover = "handover"
)

// inherited are the listening sockets a daemon got from the one before
// it, by name: from the service manager's fd store (LISTEN_FDS) or by a
// handover. Each is taken once, by the listener it is for, and checked
// to be that listener (its address, and for a namespace's socket the
// network namespace it lives in). What nobody took once start-up is over
// is closed. A nil *inherited holds nothing.
type inherited struct {
	from string // "service manager" or "handover", for logs

	mu    sync.Mutex // guards files
	files map[string]*os.File
}

// newInherited holds files by names; a name given twice keeps the first.
func newInherited(from string, names []string, files []*os.File, log *slog.Logger) *inherited {
	h := &inherited{from: from, files: make(map[string]*os.File)}
	for i, f := range files {
		name := ""
		if i < len(names) {
			name = names[i]
		}
		if _, dup := h.files[name]; dup || name == "" {
			log.Warn("inherited descriptor dropped", "from", from, "name", name)
			f.Close()
			continue
		}
		h.files[name] = f
	}
	return h
}

// take returns the file named name, and forgets it.
func (h *inherited) take(name string) *os.File {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.files[name]
	delete(h.files, name)
	return f
}

// rest closes what nobody took and returns its names.
func (h *inherited) rest() []string {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var names []string
	for name, f := range h.files {
		f.Close()
		names = append(names, name)
	}
	clear(h.files)
	slices.Sort(names)
	return names
}

// unixListener turns the file named name into a unix listener whose
// address is addr; nil if there is no such file. A file that is not such
// a listener is closed and is an error.
func (h *inherited) unixListener(name, addr string) (*net.UnixListener, error) {
	f := h.take(name)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("inherited %s: %w", name, err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok || ul.Addr().String() != addr {
		l.Close()
		return nil, fmt.Errorf("inherited %s listens on %s, not %s", name, l.Addr(), addr)
	}
	ul.SetUnlinkOnClose(false)
	return ul, nil
}

// takeAbstract returns the inherited abstract socket addr of the
// namespace id, if there is one.
func (h *inherited) takeAbstract(id nsmgr.ID, addr string) (*net.UnixListener, error) {
	an, _ := fdNames(id)
	return h.namespaceListener(an, id, addr)
}

// takeFile returns the inherited filesystem socket at path of the
// namespace id, if there is one.
func (h *inherited) takeFile(id nsmgr.ID, path string) (*net.UnixListener, error) {
	_, fn := fdNames(id)
	ln, err := h.namespaceListener(fn, id, path)
	if ln != nil {
		if _, serr := os.Stat(path); serr != nil {
			ln.Close() // the file is gone: nobody could reach it
			return nil, nil
		}
	}
	return ln, err
}

func (h *inherited) namespaceListener(name string, id nsmgr.ID, addr string) (*net.UnixListener, error) {
	ln, err := h.unixListener(name, addr)
	if ln == nil || err != nil {
		return nil, err
	}
	got, err := nsmgr.SocketID(ln)
	if err == nil && got != id {
		err = fmt.Errorf("inherited %s lives in namespace %s, not %s", name, got, id)
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// tcpListener returns the inherited TCP listener named name if it
// listens on addr (any port when addr's port is 0); nil otherwise.
func (h *inherited) tcpListener(name, addr string) net.Listener {
	f := h.take(name)
	if f == nil {
		return nil
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil
	}
	want, err := net.ResolveTCPAddr("tcp", addr)
	got, ok := l.Addr().(*net.TCPAddr)
	if err != nil || !ok || !(want.Port == 0 || want.Port == got.Port) || !(want.IP == nil || want.IP.Equal(got.IP)) {
		l.Close()
		return nil
	}
	return l
}

// listenFDStart is the first descriptor the service manager passes.
const listenFDStart = 3

// fromServiceManager takes the descriptors the service manager passed
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES: its fd store, given back at
// start), and unsets those variables. nil when it passed none.
func fromServiceManager(log *slog.Logger) (*inherited, error) {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	names, fds, err := parseListenFDs(os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), os.Getpid())
	if err != nil || len(fds) == 0 {
		return nil, err
	}
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		unix.CloseOnExec(fd)
		files[i] = os.NewFile(uintptr(fd), names[i])
	}
	return newInherited("service manager", names, files, log), nil
}

// parseListenFDs reads the service manager's variables: the descriptors
// are listenFDStart.. and count n, named by the colon-separated names,
// and meant for the process pid only.
func parseListenFDs(pidVar, fdsVar, namesVar string, pid int) (names []string, fds []int, err error) {
	if fdsVar == "" {
		return nil, nil, nil
	}
	if p, err := strconv.Atoi(pidVar); err != nil || p != pid {
		return nil, nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fdsVar)
	if err != nil || n < 0 {
		return nil, nil, fmt.Errorf("LISTEN_FDS=%q is not a count", fdsVar)
	}
	if namesVar != "" {
		names = strings.Split(namesVar, ":")
	}
	if len(names) != n {
		return nil, nil, fmt.Errorf("LISTEN_FDS=%d but LISTEN_FDNAMES has %d names", n, len(names))
	}
	for i := range n {
		fds = append(fds, listenFDStart+i)
	}
	return names, fds, nil
}

// errNoPredecessor says that no daemon answered on the handover socket.
var errNoPredecessor = errors.New("no daemon to take over from")
