package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/internal/quote"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// DefaultStateFile is where the daemon records its attachments by default:
// under /run, which lives exactly as long as the namespaces can (until a
// reboot).
const DefaultStateFile = "/run/nsbroker/attachments.json"

// stateVersion is the version of the state file's entries; an entry of
// another version is skipped.
const stateVersion = 1

// maxStateLine bounds one line of the state file: a name and a path at
// their longest fit many times over. A longer line is damage and skipped.
const maxStateLine = 64 << 10

// finalWriteTimeout bounds the last write at a stop.
const finalWriteTimeout = 5 * time.Second

// stateEntry is one line of the state file: an attachment, and what proves
// after a restart that its namespace (and, for a reference that ends with
// a process, its process) is still the one that was attached.
type stateEntry struct {
	Version int    `json:"v"`
	Name    string `json:"name"`
	Ref     string `json:"ref"` // as ParseRef takes it
	Dev     uint64 `json:"dev"` // the namespace's nsfs device and inode
	Ino     uint64 `json:"ino"`
	Cookie  uint64 `json:"cookie"` // SO_NETNS_COOKIE; 0 when the kernel has none
	Boot    string `json:"boot"`   // /proc/sys/kernel/random/boot_id
	// Start is the start time of the process a pid-bound reference
	// (pid:N, path:/proc/N/ns/net) follows: nsmgr.ProcessStart.
	Start uint64 `json:"start,omitempty"`
}

// stateFile keeps the state file in step with the broker's attachments and
// attaches them again at start-up. Its methods do nothing on a nil
// stateFile (the state file turned off).
type stateFile struct {
	path string
	boot string
	b    *broker.Broker
	log  *slog.Logger

	kick chan struct{} // capacity 1: a write was asked for
	stop context.CancelFunc
	done sync.WaitGroup

	mu      sync.Mutex    // guards the fields below
	asked   uint64        // writes asked for
	written uint64        // of them, done by the last write
	wrote   chan struct{} // closed and replaced at each write
	failed  bool          // the last write failed (logged once)

	// starts caches the recorded process start times; only the writer
	// goroutine uses it.
	starts map[startKey]uint64
}

type startKey struct {
	name string
	id   nsmgr.ID
}

// newStateFile returns the state file at path, or nil when path is "".
func newStateFile(path string, b *broker.Broker, log *slog.Logger) *stateFile {
	if path == "" {
		return nil
	}
	return &stateFile{
		path:   path,
		boot:   bootID(),
		b:      b,
		log:    log.With("state_file", path),
		kick:   make(chan struct{}, 1),
		wrote:  make(chan struct{}),
		starts: make(map[startKey]uint64),
	}
}

// bootID identifies the running kernel's boot; "" if it cannot be read.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// restore attaches again every recorded attachment that can be proven the
// same, and logs each one that cannot. A missing file is an empty one; an
// unreadable one is logged. Nothing here stops the daemon from starting.
func (s *stateFile) restore(ctx context.Context) {
	if s == nil {
		return
	}
	entries, err := readStateFile(s.path, s.log)
	if err != nil {
		s.log.Error("cannot read the state file; no attachment restored", "err", err)
		return
	}
	restored := 0
	for _, e := range entries {
		if ctx.Err() != nil {
			return // stopping
		}
		log := s.log.With("namespace", e.Name, "ref", e.Ref)
		if err := s.restoreEntry(ctx, e); errors.Is(err, errAttachedAlready) {
			continue
		} else if err != nil {
			log.Warn("recorded attachment dropped", "reason", err)
			continue
		}
		restored++
		log.Info("recorded attachment restored", "inode", e.Ino)
	}
	if len(entries) > 0 {
		s.log.Info("state file read", "recorded", len(entries), "restored", restored)
	}
}

// errAttachedAlready: the entry's name is attached to its namespace
// already (a duplicate line).
var errAttachedAlready = errors.New("attached already")

// restoreEntry attaches e if its namespace is provably the one recorded,
// and says why not otherwise.
func (s *stateFile) restoreEntry(ctx context.Context, e stateEntry) error {
	if e.Boot != s.boot {
		return fmt.Errorf("recorded in another boot (%q, this one is %q)", e.Boot, s.boot)
	}
	ref, err := nsmgr.ParseRef(e.Ref)
	if err != nil {
		return err
	}
	// Before: so that nothing is attached, not even for a moment, on a
	// mere guess. After: the broker opened the reference again, and what
	// it holds is what counts.
	if err := s.verify(e, ref, nil); err != nil {
		return err
	}
	in, err := s.b.Attach(ctx, e.Name, ref)
	if errors.Is(err, broker.ErrExists) {
		if cur, gerr := s.b.Get(e.Name); gerr == nil && cur.ID == (nsmgr.ID{Dev: e.Dev, Ino: e.Ino}) {
			return errAttachedAlready
		}
	}
	if err != nil {
		return err
	}
	if err := s.verify(e, ref, &in); err != nil {
		if derr := s.b.Detach(e.Name); derr != nil && !errors.Is(derr, broker.ErrNotFound) {
			s.log.Error("cannot detach a namespace that changed while it was restored", "namespace", e.Name, "err", derr)
		}
		return fmt.Errorf("changed while it was attached again: %w", err)
	}
	return nil
}

// verify checks that ref still names the recorded namespace, and for a
// pid-bound reference the recorded process. It opens ref unless in, what
// the broker attached, is given.
func (s *stateFile) verify(e stateEntry, ref nsmgr.Ref, in *broker.Info) error {
	if pid := ref.Process(); pid != 0 {
		start, err := nsmgr.ProcessStart(pid)
		if err != nil {
			return fmt.Errorf("process %d is gone: %w", pid, err)
		}
		if start != e.Start {
			return fmt.Errorf("process %d is another process (started at tick %d, the recorded one at %d)", pid, start, e.Start)
		}
	}
	var id nsmgr.ID
	var cookie uint64
	if in != nil {
		id, cookie = in.ID, in.Cookie
	} else {
		ns, err := nsmgr.Open(ref)
		if err != nil {
			return err
		}
		id, cookie = ns.ID(), ns.Cookie()
		ns.Close()
	}
	if want := (nsmgr.ID{Dev: e.Dev, Ino: e.Ino}); id != want {
		return fmt.Errorf("%s names another namespace now (device:inode %v, recorded %v)", ref, id, want)
	}
	if cookie != e.Cookie {
		return fmt.Errorf("%s names another namespace now (cookie %d, recorded %d)", ref, cookie, e.Cookie)
	}
	return nil
}

// readStateFile reads the entries of the state file at path, line by line:
// a line that is not a valid entry, or repeats an earlier entry's name, is
// skipped with a log line. A missing file has no entries.
func readStateFile(path string, log *slog.Logger) ([]stateEntry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var entries []stateEntry
	seen := make(map[string]bool)
	r := bufio.NewReaderSize(f, 4096)
	for n := 1; ; n++ {
		line, tooLong, err := readLine(r)
		if err != nil && !errors.Is(err, io.EOF) {
			return entries, err
		}
		if len(bytes.TrimSpace(line)) > 0 || tooLong {
			if e, perr := parseStateLine(line, tooLong); perr != nil {
				log.Warn("state file: line skipped", "line", n, "err", perr)
			} else if seen[e.Name] {
				log.Warn("state file: line skipped", "line", n, "err", "the name "+quote.String(e.Name)+" is recorded on an earlier line")
			} else {
				seen[e.Name] = true
				entries = append(entries, e)
			}
		}
		if err != nil {
			return entries, nil
		}
	}
}

// readLine reads a line without its newline, at most maxStateLine bytes of
// it; a longer one is read to its end and reported too long.
func readLine(r *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > maxStateLine+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), tooLong, err
	}
}

func parseStateLine(line []byte, tooLong bool) (stateEntry, error) {
	var e stateEntry
	if tooLong {
		return e, fmt.Errorf("longer than %d bytes", maxStateLine)
	}
	if err := json.Unmarshal(line, &e); err != nil {
		return e, err
	}
	if e.Version != stateVersion {
		return e, fmt.Errorf("entry version %d, want %d", e.Version, stateVersion)
	}
	if e.Name == "" {
		return e, errors.New("no name")
	}
	if err := broker.CheckName(e.Name); err != nil {
		return e, err
	}
	if _, err := nsmgr.ParseRef(e.Ref); err != nil {
		return e, err
	}
	if e.Ino == 0 {
		return e, errors.New("no namespace inode")
	}
	return e, nil
}

// record writes the state file now, then follows the broker and writes it
// again whenever a namespace is attached or detached, until stopRecording.
// It does nothing when ctx, the attaching's, is cancelled already: the
// restore may have been cut short, and the file must keep what it holds.
func (s *stateFile) record(ctx context.Context) {
	if s == nil || ctx.Err() != nil {
		return // stopping: the restore may be partial, keep the file
	}
	// Its own context: it ends with stopRecording, after the attaching.
	ctx, s.stop = context.WithCancel(context.Background())
	s.done.Add(2)
	go func() {
		defer s.done.Done()
		s.writer(ctx)
	}()
	go func() {
		defer s.done.Done()
		s.follow(ctx)
	}()
	if err := s.flush(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("cannot write the state file", "err", err)
	}
}

// stopRecording stops writing; the file keeps what it holds, for the next
// daemon. It must return before the broker is closed, which detaches
// everything without it being a change to record.
func (s *stateFile) stopRecording() {
	if s == nil || s.stop == nil {
		return // off, never started, or stopped already
	}
	// A change asked for but not yet written is written now.
	ctx, cancel := context.WithTimeout(context.Background(), finalWriteTimeout)
	s.mu.Lock()
	pending := s.written < s.asked
	s.mu.Unlock()
	if pending {
		if err := s.flush(ctx); err != nil {
			s.log.Error("cannot write the state file at the stop", "err", err)
		}
	}
	cancel()
	s.stop()
	s.done.Wait()
	s.stop = nil
}

// follow asks for a write at every attach and detach.
func (s *stateFile) follow(ctx context.Context) {
	for {
		events, err := s.b.Watch(ctx)
		if err != nil {
			return
		}
		s.ask()
		for ev := range events {
			switch ev.Kind {
			case broker.NamespaceAttached, broker.NamespaceDetached, broker.NamespaceGone:
				s.ask()
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The watch fell behind and was cut off: watch again, and write
		// what is attached then.
	}
}

// ask asks for a write and returns its number.
func (s *stateFile) ask() uint64 {
	s.mu.Lock()
	s.asked++
	n := s.asked
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return n
}

// flush asks for a write and waits until one that began after the asking
// is done: then the file holds every change made before flush was called.
// Writes asked for at once are done as one.
func (s *stateFile) flush(ctx context.Context) error {
	if s == nil {
		return nil
	}
	n := s.ask()
	for {
		s.mu.Lock()
		done, wrote, failed := s.written >= n, s.wrote, s.failed
		s.mu.Unlock()
		if done {
			if failed {
				return errors.New("the state file could not be written (logged)")
			}
			return nil
		}
		select {
		case <-wrote:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// writer writes the state file whenever asked, until ctx is cancelled.
func (s *stateFile) writer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		n := s.asked
		s.mu.Unlock()
		// Listed after the asking: the write holds every change made
		// before it.
		err := writeFileAtomic(s.path, s.encode(s.b.List()))
		s.mu.Lock()
		s.written = n
		switch {
		case err != nil && !s.failed:
			s.log.Error("cannot write the state file; attachments made now may be forgotten at a restart", "err", err)
		case err == nil && s.failed:
			s.log.Info("state file written again")
		}
		s.failed = err != nil
		close(s.wrote)
		s.wrote = make(chan struct{})
		s.mu.Unlock()
	}
}

// encode makes the state file's contents: one JSON entry per line.
func (s *stateFile) encode(infos []broker.Info) []byte {
	var buf bytes.Buffer
	starts := make(map[startKey]uint64, len(s.starts))
	for _, in := range infos {
		e := stateEntry{Version: stateVersion, Name: in.Name, Ref: in.Ref.String(),
			Dev: in.ID.Dev, Ino: in.ID.Ino, Cookie: in.Cookie, Boot: s.boot}
		if pid := in.Ref.Process(); pid != 0 {
			// Read once, as soon after the attach as can be: the process
			// is the one the broker follows while it stays attached.
			key := startKey{in.Name, in.ID}
			start, ok := s.starts[key]
			if !ok {
				var err error
				if start, err = nsmgr.ProcessStart(pid); err != nil {
					continue // exited: the broker detaches it
				}
			}
			starts[key] = start
			e.Start = start
		}
		line, err := json.Marshal(e)
		if err != nil {
			continue // cannot happen: strings and numbers only
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	s.starts = starts
	return buf.Bytes()
}

// writeFileAtomic replaces the file at path with data so that a reader,
// or the next daemon after a crash or power loss, finds the old contents
// or the new, never a mix: it writes a temporary file in the same
// directory, syncs it, renames it over path and syncs the directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp") // mode 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// unary makes an admin's attach or detach return only once the state file
// records it, so that a restart right after the answer keeps it.
func (s *stateFile) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if s == nil {
		return resp, err
	}
	switch info.FullMethod {
	case nsbrokerv1.Broker_AttachNamespace_FullMethodName, nsbrokerv1.Broker_AttachNamespaces_FullMethodName,
		nsbrokerv1.Broker_DetachNamespace_FullMethodName:
		// A batch attach may have attached some even when it failed.
		if ferr := s.flush(ctx); ferr != nil && ctx.Err() == nil {
			s.log.Warn("attachment not recorded before the answer", "rpc", rpcName(info.FullMethod), "err", ferr)
		}
	}
	return resp, err
}
