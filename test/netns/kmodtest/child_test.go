package kmodtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Some checks need a socket opened by a process without privileges. The
// test binary re-executes itself as uid/gid 65534 (nobody) with childEnv
// naming what the child does; TestMain runs that instead of the tests.

const (
	childEnv     = "NSB_KMODTEST_CHILD" // child mode: childUnpriv or childFDPass
	childUnitEnv = "NSB_KMODTEST_UNIT"  // the module's unit, for the child

	// childUnpriv: try every request and a group join, print a childReport
	// as JSON on stdout.
	childUnpriv = "unpriv"
	// childFDPass: open and bind a socket to the module, pass it to the
	// parent over the unix socket at fd 3 (SCM_RIGHTS).
	childFDPass = "fdpass"

	nobody = 65534
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", mode, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childResult is the outcome of one operation in the unprivileged child.
type childResult struct {
	Errno int    // 0 on success
	Msg   string // extended-ACK message, if any
	Inum  uint32 // NSB_A_NETNS_INUM of a successful reply, if any
}

// childReport is what the unprivileged child prints.
type childReport struct {
	UID, EUID                          int
	Echo, Stats, Groups, Publish, Join childResult
	Forge                              childResult // an EVENT sent straight to group 1
}

func runChild(mode string) error {
	unit, err := strconv.Atoi(os.Getenv(childUnitEnv))
	if err != nil {
		return fmt.Errorf("%s: %w", childUnitEnv, err)
	}
	switch mode {
	case childUnpriv:
		return childTryAll(unit)
	case childFDPass:
		return childPassSocket(unit)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func childTryAll(unit int) error {
	c, err := netlink.Dial(unit, nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetOption(netlink.ExtendedAcknowledge, true); err != nil {
		return err
	}
	try := func(typ uint16, b []byte) childResult {
		msgs, err := c.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
			Data:   b,
		})
		var r childResult
		var oerr *netlink.OpError
		var errno unix.Errno
		switch {
		case errors.As(err, &oerr) && errors.As(oerr.Err, &errno):
			r.Errno, r.Msg = int(errno), oerr.Message
		case err != nil:
			r.Errno, r.Msg = -1, err.Error()
		case len(msgs) != 1:
			r.Errno, r.Msg = -1, fmt.Sprintf("%d replies", len(msgs))
		case typ == msgGroups:
			// GROUPS repeats NSB_A_GROUP_SEQ, which parseBody refuses.
			r.Inum = groupsInum(msgs[0])
			if r.Inum == 0 {
				r.Errno, r.Msg = -1, "GROUPS reply without NSB_A_NETNS_INUM"
			}
		default:
			a, err := parseBody(msgs[0])
			if err != nil || len(a[attrNetnsInum]) != 4 {
				r.Errno, r.Msg = -1, fmt.Sprintf("reply %v: %v", a, err)
				break
			}
			r.Inum = ne.Uint32(a[attrNetnsInum])
		}
		return r
	}
	rep := childReport{
		UID:     os.Getuid(),
		EUID:    os.Geteuid(),
		Echo:    try(msgEcho, body(attr(attrPayload, []byte("unprivileged")))),
		Stats:   try(msgStats, body()),
		Groups:  try(msgGroups, body()),
		Publish: try(msgPublish, body(attr(attrGroup, u32(1)), attr(attrPayload, []byte("x")))),
	}
	if err := c.JoinGroup(1); err != nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			return err
		}
		rep.Join.Errno = int(errno)
	}
	rep.Forge.Errno, err = forgeEvent(c, 1)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(rep)
}

// groupsInum returns the NSB_A_NETNS_INUM of a GROUPS reply, 0 if none.
func groupsInum(m netlink.Message) uint32 {
	if len(m.Data) < nsbHdrLen {
		return 0
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[nsbHdrLen:])
	if err != nil {
		return 0
	}
	for ad.Next() {
		if ad.Type() == attrNetnsInum {
			return ad.Uint32()
		}
	}
	return 0
}

// forgeEvent sends a fake EVENT of group straight to the group's members,
// bypassing the module, and returns sendto's errno.
func forgeEvent(c rawSock, group uint32) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	msg := nlMsg(msgEvent, 0, 0, body(attr(attrGroup, u32(group)), attr(attrSeq, u64(1)), attr(attrPayload, []byte("forged"))))
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (group - 1)})
	}); err != nil {
		return 0, err
	}
	var errno unix.Errno
	if errors.As(serr, &errno) {
		return int(errno), nil
	}
	return 0, serr
}

func childPassSocket(unit int) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unit)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	// Bind now: a socket without a port id never receives multicast.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return unix.Sendmsg(3, []byte{0}, unix.UnixRights(fd), nil, 0)
}

// runUnprivileged runs the test binary as nobody in child mode and returns
// its stdout.
func runUnprivileged(t *testing.T, unit int, mode string, extra ...*os.File) []byte {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childUnitEnv+"="+strconv.Itoa(unit))
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("unprivileged child %s (%s): %v; stderr: %s", mode, exe, err, stderr.Bytes())
	}
	return stdout.Bytes()
}
