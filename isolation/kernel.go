package isolation

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// hostKernel is the module and the nsid table of the checker's namespace.
type hostKernel struct {
	unit  int
	inode uint64
}

func newHostKernel() (*hostKernel, error) {
	b, err := os.ReadFile(family.UnitParam)
	if err != nil {
		return nil, fmt.Errorf("the nsbroker module is not loaded: %w", err)
	}
	unit, err := strconv.Atoi(string(trimSpace(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", family.UnitParam, err)
	}
	here, err := nsmgr.Current()
	if err != nil {
		return nil, err
	}
	defer here.Close()
	return &hostKernel{unit: unit, inode: uint64(here.Inode())}, nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// Inode implements Kernel.
func (k *hostKernel) Inode() uint64 { return k.inode }

// Publish implements Kernel.
func (k *hostKernel) Publish(group uint32, payload []byte) (uint64, error) {
	return publishHere(k.unit, group, payload)
}

// Listen opens (or has an unprivileged child open) a socket to the module,
// then sets NETLINK_LISTEN_ALL_NSID and joins group, which need privileges
// the checker has.
func (k *hostKernel) Listen(group uint32, unprivileged bool) (Listener, error) {
	var fd int
	var err error
	if unprivileged {
		fd, err = openUnprivileged(k.unit)
	} else {
		fd, err = openSocket(k.unit)
	}
	if err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_LISTEN_ALL_NSID, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set NETLINK_LISTEN_ALL_NSID: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(group)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("join group %d: %w", group, err)
	}
	c, err := socket.New(fd, "nsbroker-listen-all-nsid")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &rawListener{c: c}, nil
}

// openSocket opens and binds a socket to the module.
func openSocket(unit int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unit)
	if err != nil {
		return -1, fmt.Errorf("socket(AF_NETLINK, %d): %w", unit, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	return fd, nil
}

// rawListener reads events with their control messages.
type rawListener struct {
	c       *socket.Conn
	pending []ListenedEvent
}

// Close implements Listener.
func (l *rawListener) Close() error { return l.c.Close() }

// Next implements Listener: the next event from the kernel, with its
// nsid control message.
func (l *rawListener) Next(ctx context.Context) (ListenedEvent, error) {
	buf := make([]byte, 1<<16)
	oob := make([]byte, unix.CmsgSpace(4)*4)
	for len(l.pending) == 0 {
		n, oobn, _, from, err := l.c.Recvmsg(ctx, buf, oob, 0)
		if err != nil {
			return ListenedEvent{}, err
		}
		// Only the kernel's messages: anyone with CAP_NET_ADMIN here can
		// send forged ones (docs/protocol.md).
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue
		}
		nsid, has, err := parseNsid(oob[:oobn])
		if err != nil {
			return ListenedEvent{}, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return ListenedEvent{}, err
		}
		for _, m := range msgs {
			if m.Header.Type != family.MsgEvent {
				continue
			}
			ev, err := family.DecodeEvent(m.Data)
			if err != nil {
				return ListenedEvent{}, err
			}
			l.pending = append(l.pending, ListenedEvent{
				Group: ev.Group, Seq: ev.Seq, Inode: uint64(ev.NetnsInum), Payload: string(ev.Payload),
				Nsid: nsid, HasNsid: has,
			})
		}
	}
	ev := l.pending[0]
	l.pending = l.pending[1:]
	return ev, nil
}

// parseNsid finds the NETLINK_LISTEN_ALL_NSID control message.
func parseNsid(oob []byte) (int32, bool, error) {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false, fmt.Errorf("control messages: %w", err)
	}
	for _, cm := range cmsgs {
		if cm.Header.Level == unix.SOL_NETLINK && cm.Header.Type == unix.NETLINK_LISTEN_ALL_NSID && len(cm.Data) >= 4 {
			return int32(binary.NativeEndian.Uint32(cm.Data[:4])), true, nil
		}
	}
	return 0, false, nil
}

// Nsid asks the kernel (RTM_GETNSID) for the named namespace's nsid here.
func (k *hostKernel) Nsid(name string) (int32, bool, error) {
	return nsidOf(name)
}

func nsidOf(name string) (int32, bool, error) {
	msgs, err := nsidRequest(name, unix.RTM_GETNSID, 0, netlink.Request)
	if err != nil {
		return 0, false, fmt.Errorf("RTM_GETNSID: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, false, err
		}
		for ad.Next() {
			if ad.Type() == unix.NETNSA_NSID {
				id := ad.Int32()
				return id, id != unix.NETNSA_NSID_NOT_ASSIGNED, ad.Err()
			}
		}
		if err := ad.Err(); err != nil {
			return 0, false, err
		}
	}
	return 0, false, errors.New("RTM_GETNSID: no NETNSA_NSID in the answer")
}

// AssignNsid has the kernel allocate an nsid for the named namespace here
// (RTM_NEWNSID with NETNSA_NSID -1, what ip netns set NAME auto does).
func (k *hostKernel) AssignNsid(name string) (int32, error) {
	if _, err := nsidRequest(name, unix.RTM_NEWNSID, unix.NETNSA_NSID_NOT_ASSIGNED, netlink.Request|netlink.Acknowledge); err != nil {
		return 0, fmt.Errorf("RTM_NEWNSID: %w", err)
	}
	id, ok, err := nsidOf(name)
	if err == nil && !ok {
		err = errors.New("the kernel reports no nsid after RTM_NEWNSID")
	}
	return id, err
}

// nsidRequest sends an RTM_*NSID request naming the namespace by fd (and,
// for RTM_NEWNSID, the nsid wanted).
func nsidRequest(name string, typ netlink.HeaderType, nsid int32, flags netlink.HeaderFlags) ([]netlink.Message, error) {
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	rt, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, err
	}
	defer rt.Close()
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.NETNSA_FD, uint32(ns.Fd()))
	if typ == unix.RTM_NEWNSID {
		ae.Int32(unix.NETNSA_NSID, nsid)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	// struct rtgenmsg, padded to 4 bytes, then the attributes.
	data := append([]byte{unix.AF_UNSPEC, 0, 0, 0}, attrs...)
	return rt.Execute(netlink.Message{Header: netlink.Header{Type: typ, Flags: flags}, Data: data})
}

// The unprivileged opener: the checker runs itself again as nobody with
// childEnv set; the child opens a socket to the module and passes it back
// over fd 3 (SCM_RIGHTS), so that the socket carries nobody's credentials.
const (
	childEnv     = "NSB_ISOLATION_CHILD"
	childUnitEnv = "NSB_ISOLATION_UNIT"
	childOpen    = "open-socket"
	nobody       = 65534
)

func openUnprivileged(unit int) (int, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	mine := os.NewFile(uintptr(pair[0]), "fdpass-parent")
	defer mine.Close()
	theirs := os.NewFile(uintptr(pair[1]), "fdpass-child")
	cmd := exec.Command("/proc/self/exe")
	cmd.Dir = "/"
	cmd.Env = []string{childEnv + "=" + childOpen, childUnitEnv + "=" + strconv.Itoa(unit)}
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	theirs.Close()
	if err != nil {
		return -1, fmt.Errorf("the child opening a socket as uid %d: %v: %s", nobody, err, trimSpace(out))
	}
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(pair[0], buf, oob, unix.MSG_DONTWAIT)
	if err != nil {
		return -1, fmt.Errorf("receive the child's socket: %w", err)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		return -1, fmt.Errorf("the child's control messages: %d, %v", len(cmsgs), err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("the child's SCM_RIGHTS: %v, %v", fds, err)
	}
	unix.CloseOnExec(fds[0])
	return fds[0], nil
}

// runChild does what the parent asked for if this process is the
// unprivileged child, and reports whether it was.
func runChild() (bool, error) {
	if os.Getenv(childEnv) != childOpen {
		return false, nil
	}
	unit, err := strconv.Atoi(os.Getenv(childUnitEnv))
	if err != nil {
		return true, fmt.Errorf("%s: %w", childUnitEnv, err)
	}
	fd, err := openSocket(unit)
	if err != nil {
		return true, err
	}
	return true, unix.Sendmsg(3, []byte{0}, unix.UnixRights(fd), nil, 0)
}
