package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
	"github.com/nsbroker/nsbroker/server"
)

// localSockets keeps the sockets through which each attached namespace's
// own processes reach the daemon as its tenant: the abstract unix socket
// (@nsbroker) opened inside the namespace, and a filesystem socket in a
// root-owned directory that a runtime can bind-mount into a container.
// Each is served through server.NamespaceListener, so a connection is the
// namespace's tenant only if its socket lives in that namespace.
//
// Anyone in a namespace can listen on an abstract name before the daemon
// does. Such a name is taken: the namespace's health is NOT_SERVING, the
// squatter's credentials are logged, and retry tries the name again until
// it is free.
type localSockets struct {
	name string // the abstract socket, "@nsbroker"; "" for none
	dir  string // the filesystem sockets' directory; "" for none
	log  *slog.Logger

	enter    func(in broker.Info, fn func() error) error                    // runs fn inside the attached namespace in
	serve    func(*net.UnixListener, func(net.Listener) net.Listener) error // serves a listener through a chain (server.Acceptor.Add)
	unserve  func(*net.UnixListener)                                        // stops serving it, before it is closed
	gauge    func(open int)                                                 // reports how many abstract sockets are open
	squatted func(name string, on bool)                                     // reports a taken name
	changed  func(name string)                                              // reports any change of state
	store    func(fdname string, f *os.File)                                // hands a listener to the fd store; nil for none
	unstore  func(fdname string)                                            // takes it back out
	inherit  *inherited                                                     // listeners of the previous daemon; may be nil

	mu        sync.Mutex // guards the fields below
	open      map[string]*localSocket
	abstracts int  // the open sockets that have their abstract socket, for the gauge
	frozen    bool // handing over: open nothing new
}

// localSocket is what the daemon holds for one attached namespace.
type localSocket struct {
	id       nsmgr.ID  // the namespace
	ref      nsmgr.Ref // how it was attached
	abstract *net.UnixListener
	file     *net.UnixListener
	path     string // the filesystem socket, "" for none
	conns    connSet
	state    nsbrokerv1.LocalSocket_State
	reason   string // for TAKEN and FAILED
	logged   string // the reason last logged, so a retry logs only news
	attempt  time.Time
}

// namedListener is a listener with the name the fd store and the
// handover know it by.
type namedListener struct {
	name string
	ln   *net.UnixListener
}

// listeners are the socket's open listeners, named.
func (s *localSocket) listeners() []namedListener {
	an, fn := fdNames(s.id)
	var out []namedListener
	for _, l := range []namedListener{{an, s.abstract}, {fn, s.file}} {
		if l.ln != nil {
			out = append(out, l)
		}
	}
	return out
}

// newLocalSockets returns the local sockets with none open.
func newLocalSockets(name, dir string, log *slog.Logger) *localSockets {
	return &localSockets{
		name: name, dir: dir, log: log,
		enter:   func(broker.Info, func() error) error { return errors.New("local sockets: no way into the namespaces") },
		serve:   func(*net.UnixListener, func(net.Listener) net.Listener) error { return nil },
		unserve: func(*net.UnixListener) {}, gauge: func(int) {}, squatted: func(string, bool) {}, changed: func(string) {},
		open: make(map[string]*localSocket),
	}
}

// enabled reports whether there are local sockets at all.
func (ls *localSockets) enabled() bool { return ls.name != "" || ls.dir != "" }

// ensure gives the namespace in its sockets, unless it has them already
// in that namespace. The abstract socket may end up taken or failed;
// status says so, and retry tries again.
func (ls *localSockets) ensure(in broker.Info) {
	ls.mu.Lock()
	cur, ok := ls.open[in.Name]
	frozen := ls.frozen
	ls.mu.Unlock()
	if ok && cur.id == in.ID {
		return
	}
	if ok {
		ls.close(in.Name, connGrace) // the name now means another namespace
	}
	if frozen {
		return
	}
	s := &localSocket{id: in.ID, ref: in.Ref, state: nsbrokerv1.LocalSocket_STATE_OFF}
	log := ls.log.With("namespace", in.Name)

	// What a previous daemon handed over is taken as it is; what is left
	// to open is opened in one visit to the namespace, which costs a
	// thread switched in and out.
	var file, abstract listening
	var path string
	if ls.dir != "" {
		path, file = ls.prepareFile(in)
	}
	if ls.name != "" {
		abstract.ln, abstract.err = ls.inherit.takeAbstract(in.ID, ls.name)
		abstract.todo = abstract.ln == nil && abstract.err == nil
	}
	if file.todo || abstract.todo {
		err := ls.enter(in, func() error {
			file.listen(path)
			abstract.listen(ls.name)
			return nil
		})
		file.failed(err)
		abstract.failed(err)
	}

	if ls.dir != "" {
		if ln, err := file.finishFile(path); err != nil {
			log.Warn("no filesystem socket for namespace", "dir", ls.dir, "err", err)
		} else {
			s.file, s.path = ln, path
			ls.serveOn(in, s, ln)
			log.Debug("filesystem socket open", "path", path)
		}
	}
	ls.mu.Lock()
	ls.open[in.Name] = s
	ls.mu.Unlock()
	if ls.name != "" {
		ls.recordAbstract(in.Name, s, abstract.ln, abstract.err)
	}
	ls.notifyStore(s)
	ls.mu.Lock()
	st := s.state
	ls.mu.Unlock()
	if st == nsbrokerv1.LocalSocket_STATE_TAKEN || st == nsbrokerv1.LocalSocket_STATE_FAILED {
		ls.changed(in.Name)
	}
}

// serveOn serves ln as the tenant listener of the namespace in.
func (ls *localSockets) serveOn(in broker.Info, s *localSocket, ln *net.UnixListener) {
	log := ls.log.With("namespace", in.Name)
	refused := func(err error) { log.Warn("local socket: connection from another namespace refused", "err", err) }
	err := ls.serve(ln, func(l net.Listener) net.Listener {
		return server.NamespaceListener(&trackingListener{Listener: l, conns: &s.conns}, in.Name, in.ID, refused)
	})
	if err != nil {
		log.Warn("local socket not served", "addr", ln.Addr().String(), "err", err)
	}
}

// closeListener stops serving ln and closes it.
func (ls *localSockets) closeListener(ln *net.UnixListener) {
	ls.unserve(ln)
	ln.Close()
}

// listening is one listener to open in a namespace: the outcome of
// taking it over from a previous daemon, or of opening it.
type listening struct {
	todo bool // nothing taken over: open it
	ln   *net.UnixListener
	err  error
}

// listen opens the listener on addr if it is to be opened; it runs on a
// thread inside the namespace.
func (l *listening) listen(addr string) {
	if l.todo {
		l.ln, l.err = listenUnix(addr)
	}
}

// failed records that the namespace could not be entered to open it.
func (l *listening) failed(err error) {
	if l.todo && err != nil && l.ln == nil && l.err == nil {
		l.err = err
	}
}

// openAbstract tries to listen on the abstract name inside s's namespace
// and records the outcome.
func (ls *localSockets) openAbstract(name string, s *localSocket) {
	in := broker.Info{Name: name, ID: s.id, Ref: s.ref}
	ln, err := ls.inherit.takeAbstract(s.id, ls.name)
	if ln == nil && err == nil {
		ln, err = ls.listenIn(in, func() (*net.UnixListener, error) { return listenUnix(ls.name) })
	}
	ls.recordAbstract(name, s, ln, err)
}

// recordAbstract records the outcome of listening on the abstract name
// inside s's namespace: the listener it serves, or why there is none.
func (ls *localSockets) recordAbstract(name string, s *localSocket, ln *net.UnixListener, err error) {
	in := broker.Info{Name: name, ID: s.id, Ref: s.ref}
	log := ls.log.With("namespace", name)
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.open[name] != s {
		if ln != nil {
			ln.Close() // closed meanwhile
		}
		return
	}
	was := s.state
	s.attempt = time.Now()
	switch {
	case err == nil:
		s.abstract, s.state, s.reason = ln, nsbrokerv1.LocalSocket_STATE_OPEN, ""
		ls.serveOn(in, s, ln)
		ls.abstracts++
		ls.lockedGauge()
		if was == nsbrokerv1.LocalSocket_STATE_TAKEN || was == nsbrokerv1.LocalSocket_STATE_FAILED {
			log.Info("local socket open at last", "socket", ls.name, "was", s.logged)
		} else {
			log.Debug("local socket open", "socket", ls.name)
		}
		s.logged = ""
	case errors.Is(err, unix.EADDRINUSE):
		s.state = nsbrokerv1.LocalSocket_STATE_TAKEN
		cred, perr := ls.peerOf(in, ls.name)
		if perr != nil {
			s.reason = fmt.Sprintf("%s is taken by another process (its credentials: %v)", ls.name, perr)
		} else {
			s.reason = fmt.Sprintf("%s is taken by pid %d uid %d gid %d", ls.name, cred.Pid, cred.Uid, cred.Gid)
		}
		if s.reason != s.logged {
			s.logged = s.reason
			attrs := []any{"socket", ls.name, "reason", s.reason}
			if perr == nil {
				attrs = append(attrs, "pid", cred.Pid, "uid", cred.Uid, "gid", cred.Gid)
			}
			log.Warn("local socket taken by another process; retrying", attrs...)
		}
	default:
		s.state, s.reason = nsbrokerv1.LocalSocket_STATE_FAILED, err.Error()
		if s.reason != s.logged {
			s.logged = s.reason
			log.Warn("no local socket in namespace; retrying", "socket", ls.name, "err", err)
		}
	}
	ls.squatted(name, s.state == nsbrokerv1.LocalSocket_STATE_TAKEN)
}

// retry tries again the abstract sockets that are taken or failed, each
// at most once per interval, and returns the names that changed state.
func (ls *localSockets) retry(interval time.Duration) []string {
	ls.mu.Lock()
	if ls.frozen {
		ls.mu.Unlock()
		return nil
	}
	type due struct {
		name string
		s    *localSocket
	}
	var todo []due
	for name, s := range ls.open {
		if (s.state == nsbrokerv1.LocalSocket_STATE_TAKEN || s.state == nsbrokerv1.LocalSocket_STATE_FAILED) &&
			time.Since(s.attempt) >= interval {
			todo = append(todo, due{name, s})
		}
	}
	ls.mu.Unlock()
	var changed []string
	for _, d := range todo {
		ls.openAbstract(d.name, d.s)
		ls.mu.Lock()
		open := d.s.state == nsbrokerv1.LocalSocket_STATE_OPEN
		ls.mu.Unlock()
		if open {
			ls.notifyStore(d.s)
			ls.changed(d.name)
			changed = append(changed, d.name)
		}
	}
	return changed
}

// pending reports whether a name waits for retry.
func (ls *localSockets) pending() bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, s := range ls.open {
		if s.state == nsbrokerv1.LocalSocket_STATE_TAKEN || s.state == nsbrokerv1.LocalSocket_STATE_FAILED {
			return true
		}
	}
	return false
}

// healthy reports whether the namespace's abstract socket is the
// daemon's (or off): a taken or failed one makes the namespace
// NOT_SERVING.
func (ls *localSockets) healthy(name string, id nsmgr.ID) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	s, ok := ls.open[name]
	if !ok || s.id != id {
		return ls.name == "" // not opened yet
	}
	return s.state == nsbrokerv1.LocalSocket_STATE_OPEN || s.state == nsbrokerv1.LocalSocket_STATE_OFF
}

// status reports the local sockets of the namespace in.
func (ls *localSockets) status(in broker.Info) *nsbrokerv1.LocalSocket {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	s, ok := ls.open[in.Name]
	if !ok || s.id != in.ID {
		return &nsbrokerv1.LocalSocket{State: nsbrokerv1.LocalSocket_STATE_UNSPECIFIED}
	}
	return &nsbrokerv1.LocalSocket{State: s.state, Reason: s.reason, Path: s.path}
}

// fdNames are the fd store names of a namespace's listeners.
func fdNames(id nsmgr.ID) (abstract, file string) {
	key := fmt.Sprintf("%d-%d", id.Dev, id.Ino)
	return "local-" + key, "file-" + key
}

// notifyStore hands s's listeners to the fd store.
func (ls *localSockets) notifyStore(s *localSocket) {
	if ls.store == nil {
		return
	}
	for _, l := range s.listeners() {
		f, err := l.ln.File()
		if err != nil {
			ls.log.Warn("cannot hand a local socket to the service manager", "err", err)
			continue
		}
		ls.store(l.name, f)
		f.Close()
	}
}

// listenIn runs listen on a thread inside the namespace in describes:
// a socket belongs to the network namespace of the thread that creates
// it.
func (ls *localSockets) listenIn(in broker.Info, listen func() (*net.UnixListener, error)) (*net.UnixListener, error) {
	var ln *net.UnixListener
	err := ls.enter(in, func() error {
		var err error
		ln, err = listen()
		return err
	})
	return ln, err
}

// listenUnix listens on a unix socket address; a filesystem socket is
// not unlinked when the listener is closed: the daemon removes it itself
// when the namespace is detached, and a successor may still serve it.
func listenUnix(addr string) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// peerOf connects to the abstract socket name inside the namespace in
// and returns the credentials of the process that listens on it.
func (ls *localSockets) peerOf(in broker.Info, name string) (*unix.Ucred, error) {
	var cred *unix.Ucred
	err := ls.enter(in, func() error {
		c, err := net.DialTimeout("unix", name, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		rc, err := c.(*net.UnixConn).SyscallConn()
		if err != nil {
			return err
		}
		var cerr error
		if err := rc.Control(func(fd uintptr) {
			cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		}); err != nil {
			return err
		}
		return cerr
	})
	return cred, err
}

// fileSocketName is the socket's name inside a namespace's directory.
const fileSocketName = "nsbroker.sock"

// FileSocketPath is where the daemon serves the namespace attached as
// name through a filesystem socket, given its file_socket_dir: in the
// directory DIR/NAME when NAME is a plain file name and the socket's path
// fits a unix socket address (107 bytes); else in DIR/~HASH, with the
// first 16 bytes of NAME's SHA-256 in hex (names may hold "/" and be 255
// bytes long). GetNamespace reports the path as local_socket.path.
func FileSocketPath(dir, name string) string {
	if name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00") && name[0] != '~' {
		if p := filepath.Join(dir, name, fileSocketName); len(p) < unixPathMax {
			return p
		}
	}
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(dir, "~"+hex.EncodeToString(sum[:16]), fileSocketName)
}

// prepareFile readies the namespace's filesystem socket: the listener a
// previous daemon handed over, or the path made ready to listen on, inside
// the namespace (listening.todo). dir and the namespace's directory in it
// are owned by the daemon's user and mode 0755, so that nobody else can
// put a socket there.
func (ls *localSockets) prepareFile(in broker.Info) (string, listening) {
	path := FileSocketPath(ls.dir, in.Name)
	if len(path) >= unixPathMax {
		return path, listening{err: fmt.Errorf("%s: file_socket_dir is too long for a unix socket address (%d bytes at most)", path, unixPathMax-1)}
	}
	if ln, err := ls.inherit.takeFile(in.ID, path); ln != nil || err != nil {
		return path, listening{ln: ln, err: err}
	}
	for _, d := range []string{ls.dir, filepath.Dir(path)} {
		if err := ownedDir(d); err != nil {
			return path, listening{err: err}
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return path, listening{err: err}
	}
	return path, listening{todo: true}
}

// finishFile returns the filesystem socket's listener, made mode 0666 if
// it was opened here: any process in the namespace may reach @nsbroker.
func (l *listening) finishFile(path string) (*net.UnixListener, error) {
	if l.err != nil || !l.todo {
		return l.ln, l.err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.ln.Close()
		return nil, err
	}
	return l.ln, nil
}

// ownedDir makes dir a directory of the daemon's user, mode 0755: an
// existing one that is not a directory, or another user's, is an error.
func ownedDir(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not the daemon's %d", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm() != 0o755 {
		return os.Chmod(dir, 0o755) // whatever the umask
	}
	return nil
}

// connGrace is how long the connections of a closed local socket live on:
// the namespace's streams are ending with their status (ABORTED, the
// namespace is gone), and cutting the connection first would turn that
// into UNAVAILABLE with no reason.
const connGrace = time.Second

// close closes the namespace's sockets at once, removes its filesystem
// socket and cuts its connections after grace; false if it had none.
func (ls *localSockets) close(name string, grace time.Duration) bool {
	ls.mu.Lock()
	s, ok := ls.open[name]
	if ok && s.abstract != nil {
		ls.abstracts--
	}
	delete(ls.open, name)
	ls.lockedGauge()
	ls.mu.Unlock()
	if !ok {
		return false
	}
	ls.squatted(name, false)
	if s.abstract != nil {
		ls.closeListener(s.abstract)
	}
	if s.file != nil {
		ls.closeListener(s.file)
		os.Remove(s.path)
		os.Remove(filepath.Dir(s.path))
	}
	if ls.unstore != nil {
		an, fn := fdNames(s.id)
		ls.unstore(an)
		ls.unstore(fn)
	}
	if grace <= 0 {
		s.conns.closeAll()
	} else {
		time.AfterFunc(grace, func() { s.conns.closeAll() })
	}
	return true
}

// lockedGauge reports the open abstract sockets. (Counted as they open
// and close: counting them here made attaching n namespaces cost n².)
func (ls *localSockets) lockedGauge() { ls.gauge(ls.abstracts) }

// has reports whether name has its sockets, in which namespace.
func (ls *localSockets) has(name string) (nsmgr.ID, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	s, ok := ls.open[name]
	if !ok {
		return nsmgr.ID{}, false
	}
	return s.id, true
}

// names lists the namespaces with sockets.
func (ls *localSockets) names() []string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	out := make([]string, 0, len(ls.open))
	for n := range ls.open {
		out = append(out, n)
	}
	return out
}

// stopAll closes every socket and cuts every connection now, at the
// daemon's stop. The filesystem sockets stay in place when a successor
// serves them (handedOver) or the service manager keeps them (keepFiles).
func (ls *localSockets) stopAll(keepFiles bool) {
	ls.mu.Lock()
	all := ls.open
	ls.open = make(map[string]*localSocket)
	ls.abstracts = 0
	ls.lockedGauge()
	ls.mu.Unlock()
	for name, s := range all {
		ls.squatted(name, false)
		if s.abstract != nil {
			ls.closeListener(s.abstract)
		}
		if s.file != nil {
			ls.closeListener(s.file)
			if !keepFiles {
				os.Remove(s.path)
				os.Remove(filepath.Dir(s.path))
			}
		}
		s.conns.closeAll()
	}
}

// freeze stops opening sockets, and returns the listeners now open,
// duplicated, by their fd store names; thaw undoes it.
func (ls *localSockets) freeze() (names []string, files []*os.File) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.frozen = true
	for _, s := range ls.open {
		for _, l := range s.listeners() {
			f, err := l.ln.File()
			if err != nil {
				continue
			}
			names, files = append(names, l.name), append(files, f)
		}
	}
	return names, files
}

func (ls *localSockets) thaw() {
	ls.mu.Lock()
	ls.frozen = false
	ls.mu.Unlock()
}
