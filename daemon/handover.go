package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The handover: a starting daemon takes the listening sockets of the one
// running before it, so that no name is ever unbound during an upgrade.
//
// The running daemon listens on the handover socket (a SOCK_SEQPACKET
// unix socket, mode 0600, and root or the daemon's own user by
// SO_PEERCRED). A new daemon connects and sends handoverHello. The old
// one stops opening local sockets, and sends every listening socket it
// holds by SCM_RIGHTS, in packets of at most handoverBatch descriptors
// with a JSON handoverPacket naming each (the fd store's names), the last
// packet marked End. The new daemon serves them as its own, attaches its
// namespaces (taking each one's sockets by identity), and then sends
// handoverReady. Only then does the old daemon stop accepting and drain:
// its streams end with UNAVAILABLE and their clients reconnect, to the
// same sockets, now served by the new daemon. Until then both accept on
// them, and if the new daemon goes away before it is ready, the old one
// carries on as if nothing happened. At no moment is a socket closed.

const (
	handoverHello = "nsbroker-handover/1"
	handoverReady = "ready"
	// handoverBatch is below the kernel's SCM_MAX_FD (253).
	handoverBatch = 200
	// handoverTimeout bounds how long the old daemon waits for its
	// successor to serve, and each packet of the exchange.
	handoverTimeout = 2 * time.Minute
	// handoverDialTimeout bounds how long a starting daemon waits for a
	// running one to answer.
	handoverDialTimeout = 5 * time.Second
)

// handoverPacket is the data part of a packet of descriptors.
type handoverPacket struct {
	Names []string `json:"names"`
	End   bool     `json:"end,omitempty"`
}

// predecessor is the connection of a new daemon to the one it takes over
// from.
type predecessor struct {
	c *net.UnixConn
}

// takeOver asks the daemon listening on path for its sockets. With no
// daemon there it returns errNoPredecessor.
func takeOver(path string) (*predecessor, []string, []*os.File, error) {
	c, err := net.DialTimeout("unixpacket", path, handoverDialTimeout)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, nil, nil, errNoPredecessor
		}
		return nil, nil, nil, err
	}
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(handoverTimeout))
	if _, err := uc.Write([]byte(handoverHello)); err != nil {
		uc.Close()
		return nil, nil, nil, err
	}
	var names []string
	var files []*os.File
	fail := func(err error) (*predecessor, []string, []*os.File, error) {
		uc.Close()
		for _, f := range files {
			f.Close()
		}
		return nil, nil, nil, fmt.Errorf("handover from %s: %w", path, err)
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*handoverBatch))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil {
			return fail(err)
		}
		var got []*os.File
		if oobn > 0 {
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return fail(err)
			}
			for _, m := range msgs {
				fds, err := unix.ParseUnixRights(&m)
				if err != nil {
					continue
				}
				for _, fd := range fds {
					unix.CloseOnExec(fd)
					got = append(got, os.NewFile(uintptr(fd), "inherited"))
				}
			}
		}
		files = append(files, got...)
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			return fail(errors.New("packet truncated"))
		}
		var p handoverPacket
		if err := json.Unmarshal(buf[:n], &p); err != nil {
			return fail(err)
		}
		if len(p.Names) != len(got) {
			return fail(fmt.Errorf("%d names for %d descriptors", len(p.Names), len(got)))
		}
		names = append(names, p.Names...)
		if p.End {
			break
		}
	}
	uc.SetDeadline(time.Time{})
	return &predecessor{uc}, names, files, nil
}

// ready tells the predecessor that this daemon serves; it then stops
// accepting and drains.
func (p *predecessor) ready() error {
	defer p.c.Close()
	p.c.SetDeadline(time.Now().Add(handoverTimeout))
	_, err := p.c.Write([]byte(handoverReady))
	return err
}

func (p *predecessor) close() { p.c.Close() }

// listenHandover opens the handover socket (or takes the inherited one):
// mode 0600 in a directory made as for the admin socket.
func (d *daemon) listenHandover(path string) (*net.UnixListener, error) {
	if ln, err := d.inherit.unixListener(fdHandover, path); ln != nil || err != nil {
		return ln, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// A stale socket: nobody answered it when this daemon started.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// serveHandover answers successors on ln until it is closed. A handover
// that succeeds is reported on d.handedOver.
func (d *daemon) serveHandover(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		if err := d.handOver(c); err != nil {
			d.log.Warn("handover failed; serving on", "err", err)
			continue
		}
		return
	}
}

// handOver hands every listening socket to the successor on c, and on
// its word that it serves, reports it on d.handedOver.
func (d *daemon) handOver(c *net.UnixConn) error {
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && cred.Uid != uint32(os.Geteuid()) {
		return fmt.Errorf("peer pid %d uid %d is neither root nor the daemon's user", cred.Pid, cred.Uid)
	}
	c.SetDeadline(time.Now().Add(handoverTimeout))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != handoverHello {
		return fmt.Errorf("peer pid %d: unknown handover request", cred.Pid)
	}
	d.log.Info("handing the listening sockets over", "pid", cred.Pid)

	d.handingOver.Store(true)
	names, files := d.local.freeze()
	for _, fx := range d.fixed {
		f, err := fx.ln.File()
		if err != nil {
			continue
		}
		names, files = append(names, fx.name), append(files, f)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	err = sendFiles(c, names, files)
	if err == nil {
		n, err = c.Read(buf)
		if err == nil && string(buf[:n]) != handoverReady {
			err = fmt.Errorf("successor said %q", buf[:n])
		}
	}
	if err != nil {
		d.local.thaw()
		d.handingOver.Store(false)
		return fmt.Errorf("successor pid %d: %w", cred.Pid, err)
	}
	d.log.Info("successor serves; draining", "pid", cred.Pid, "sockets", len(files))
	d.handedOverOnce.Do(func() { close(d.handedOver) })
	return nil
}

// sendFiles sends files and their names in packets of handoverBatch.
func sendFiles(c *net.UnixConn, names []string, files []*os.File) error {
	for i := 0; ; i += handoverBatch {
		j := min(i+handoverBatch, len(files))
		p := handoverPacket{Names: names[i:j], End: j == len(files)}
		if p.Names == nil {
			p.Names = []string{}
		}
		data, err := json.Marshal(p)
		if err != nil {
			return err
		}
		var oob []byte
		if j > i {
			oob = unix.UnixRights(rawFDs(files[i:j])...)
		}
		if _, _, err := c.WriteMsgUnix(data, oob, nil); err != nil {
			return err
		}
		if p.End {
			return nil
		}
	}
}
