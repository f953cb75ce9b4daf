package nlfuzz

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// sent is one datagram a sender sent, kept until the next one so that a
// kernel report can name it.
type sent struct {
	n    int64  // the sender's datagram number, from 1
	what string // its kind, or the crasher file it came from
	inum uint32 // namespace of the socket
	sock string // the socket's options
	data []byte
}

// name is what the datagram is called in testdata/crashers/: a prefix of
// its SHA-256.
func (s *sent) name() string {
	sum := sha256.Sum256(s.data)
	return fmt.Sprintf("%x", sum[:8])
}

func (s *sent) String() string {
	return fmt.Sprintf("datagram #%d (%s, %d bytes, namespace %d, socket %s)",
		s.n, s.what, len(s.data), s.inum, s.sock)
}

// saveHint tells how to keep the datagram as a crasher.
func (s *sent) saveHint() string {
	const dir = "test/netns/nlfuzz/testdata/crashers"
	return fmt.Sprintf("mkdir -p %s && echo %s | base64 -d > %s/%s",
		dir, base64.StdEncoding.EncodeToString(s.data), dir, s.name())
}

// counts are one sender's numbers, merged into the run's at the end.
type counts struct {
	mu        sync.Mutex
	sent      map[string]int64     // datagrams by kind
	walked    int64                // messages netlink walked in them
	handled   int64                // of them, requests handed to the module
	sendErrs  map[unix.Errno]int64 // sendmsg failures by errno
	replies   map[uint16]int64     // answers other than NLMSG_ERROR, by type
	errnos    map[unix.Errno]int64 // NLMSG_ERROR answers by errno (0: acks)
	silent    int64                // datagrams that got no answer at all
	overruns  int64                // ENOBUFS from recvmsg
	probes    int64                // ECHO probes answered correctly
	joins     map[string]int64     // group operations by result
	netnsMade int64                // namespaces created
	flashes   int64                // of them, namespaces for a few datagrams only
}

func newCounts() *counts {
	return &counts{
		sent: map[string]int64{}, sendErrs: map[unix.Errno]int64{}, replies: map[uint16]int64{},
		errnos: map[unix.Errno]int64{}, joins: map[string]int64{},
	}
}

func (c *counts) add(o *counts) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range o.sent {
		c.sent[k] += v
	}
	for k, v := range o.sendErrs {
		c.sendErrs[k] += v
	}
	for k, v := range o.replies {
		c.replies[k] += v
	}
	for k, v := range o.errnos {
		c.errnos[k] += v
	}
	for k, v := range o.joins {
		c.joins[k] += v
	}
	c.walked += o.walked
	c.handled += o.handled
	c.silent += o.silent
	c.overruns += o.overruns
	c.probes += o.probes
	c.netnsMade += o.netnsMade
	c.flashes += o.flashes
}

// sender sends datagrams from its own locked thread, so that a kernel
// report naming that thread names the sender, and reads the kernel log
// after each one.
type sender struct {
	id       int
	unpriv   bool
	tid      int
	kmsg     *kmsg
	buf, oob []byte
	n        int64
	last     atomic.Pointer[sent]
	progress atomic.Int64 // when the last datagram was done, unix ns
	done     atomic.Bool  // the sender returned
	counts   *counts
}

func newSender(id int, unpriv bool) *sender {
	// An NLMSG_ERROR quotes the whole request: up to maxDatagram bytes.
	return &sender{id: id, unpriv: unpriv, buf: make([]byte, 2*maxDatagram), oob: make([]byte, 128), counts: newCounts()}
}

// start locks the calling goroutine to its thread for good (a sender that
// dropped its privileges must never hand the thread back), drops the
// privileges if the sender is unprivileged, and opens the kernel log.
func (s *sender) start() error {
	runtime.LockOSThread()
	s.tid = unix.Gettid()
	k, err := openKmsg()
	if err != nil {
		return err
	}
	s.kmsg = k
	if s.unpriv {
		if err := dropPrivileges(); err != nil {
			return err
		}
	}
	s.progress.Store(time.Now().UnixNano())
	return nil
}

const nobody = 65534

// dropPrivileges makes the calling thread, and only it, uid and gid
// nobody without supplementary groups or capabilities. The raw system
// calls matter: the syscall package's would change every thread.
func dropPrivileges() error {
	for _, c := range []struct {
		name    string
		nr      uintptr
		a, b, c uintptr
	}{
		{"setgroups", unix.SYS_SETGROUPS, 0, 0, 0},
		{"setresgid", unix.SYS_SETRESGID, nobody, nobody, nobody},
		{"setresuid", unix.SYS_SETRESUID, nobody, nobody, nobody},
	} {
		if _, _, e := unix.RawSyscall(c.nr, c.a, c.b, c.c); e != 0 {
			return os.NewSyscallError(c.name, e)
		}
	}
	if uid, _, _ := unix.RawSyscall(unix.SYS_GETEUID, 0, 0, 0); uid != nobody {
		return fmt.Errorf("euid %d after setresuid, want %d", uid, nobody)
	}
	return nil
}

// errKernelReport says the kernel log shows a report; sendOne returns it
// wrapped with the report's first line.
type errKernelReport struct{ first string }

func (e *errKernelReport) Error() string { return "kernel report: " + e.first }

// sendOne sends one datagram on sock, in the namespace inum, reads every
// answer and checks it, and reads the kernel log. what labels the datagram
// in the counts and in reports.
func (s *sender) sendOne(sock *fsock, inum uint32, what string, data []byte) error {
	s.n++
	s.last.Store(&sent{n: s.n, what: what, inum: inum, sock: sock.opts, data: data})
	var err error
	for {
		err = unix.Sendto(sock.fd, data, unix.MSG_DONTWAIT, kernelAddr)
		if err != unix.EINTR {
			break
		}
	}
	walked, handled := requests(data)
	s.counts.mu.Lock()
	s.counts.sent[what]++
	s.counts.walked += int64(walked)
	s.counts.handled += int64(handled)
	if errno, ok := err.(unix.Errno); ok {
		s.counts.sendErrs[errno]++
	}
	s.counts.mu.Unlock()
	// An empty datagram is refused before it reaches the kernel socket;
	// nothing the generator makes is too large for the send buffer.
	if err != nil && err != unix.ENODATA {
		return fmt.Errorf("sendto %v: %w", s.last.Load(), err)
	}
	// The kernel socket answers before sendto returns: everything the
	// datagram caused is queued now.
	answers, derr := s.drain(sock, inum)
	if answers == 0 && derr == nil {
		s.counts.mu.Lock()
		s.counts.silent++
		s.counts.mu.Unlock()
	}
	first, kerr := s.kmsg.scan()
	switch {
	case kerr != nil:
		return kerr
	case first != "":
		return &errKernelReport{first: first}
	case derr != nil:
		return fmt.Errorf("answer to %v: %w", s.last.Load(), derr)
	}
	s.progress.Store(time.Now().UnixNano())
	return nil
}

// drain receives and checks everything queued on sock, returning how many
// datagrams there were.
func (s *sender) drain(sock *fsock, inum uint32) (int, error) {
	got := 0
	for {
		n, oobn, flags, _, err := unix.Recvmsg(sock.fd, s.buf, s.oob, unix.MSG_DONTWAIT)
		switch err {
		case nil:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return got, nil
		case unix.ENOBUFS:
			s.counts.mu.Lock()
			s.counts.overruns++
			s.counts.mu.Unlock()
			continue
		default:
			return got, os.NewSyscallError("recvmsg", err)
		}
		got++
		if flags&unix.MSG_TRUNC != 0 {
			return got, fmt.Errorf("an answer of %d bytes did not fit %d", n, len(s.buf))
		}
		// Only a NETLINK_LISTEN_ALL_NSID delivery from another namespace
		// carries a control message.
		answers, err := checkDatagram(s.buf[:n], inum, oobn > 0)
		s.counts.mu.Lock()
		for _, a := range answers {
			if a.typ == unix.NLMSG_ERROR {
				s.counts.errnos[a.errno]++
			} else {
				s.counts.replies[a.typ]++
			}
		}
		s.counts.mu.Unlock()
		if err != nil {
			return got, err
		}
	}
}
