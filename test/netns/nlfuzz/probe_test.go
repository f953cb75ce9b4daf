package nlfuzz

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"github.com/nsbroker/nsbroker/family"
	"golang.org/x/sys/unix"
)

// request sends one well-formed request on a plain socket and returns the
// attributes of its only answer, which must be the reply of the same type
// and sequence number: the module is alive and answers correctly.
func request(sock *fsock, typ uint16, seq uint32, attrs []byte) ([]byte, error) {
	req := appendHdr(nil, uint32(reqHdrLen+len(attrs)), typ, unix.NLM_F_REQUEST, seq)
	req = append(appendFamHdr(req, family.Version, 0, 0), attrs...)
	if err := unix.Sendto(sock.fd, req, unix.MSG_DONTWAIT, kernelAddr); err != nil {
		return nil, os.NewSyscallError("sendto", err)
	}
	buf := make([]byte, 1<<16)
	n, _, err := unix.Recvfrom(sock.fd, buf, unix.MSG_DONTWAIT)
	if err == unix.EAGAIN {
		return nil, fmt.Errorf("request type %#x seq %d: no answer", typ, seq)
	}
	if err != nil {
		return nil, os.NewSyscallError("recvfrom", err)
	}
	b := buf[:n]
	if len(b) < reqHdrLen || int(ne.Uint32(b[0:4])) != n {
		return nil, fmt.Errorf("request type %#x seq %d: answer of %d bytes % x", typ, seq, n, b[:min(n, 64)])
	}
	gotType, gotSeq := ne.Uint16(b[4:6]), ne.Uint32(b[8:12])
	if gotType == unix.NLMSG_ERROR {
		return nil, fmt.Errorf("request type %#x seq %d: error %v", typ, seq, unix.Errno(-int32(ne.Uint32(b[16:20]))))
	}
	if gotType != typ || gotSeq != seq {
		return nil, fmt.Errorf("answer type %#x seq %d, want %#x seq %d", gotType, gotSeq, typ, seq)
	}
	if _, _, err := unix.Recvfrom(sock.fd, buf, unix.MSG_DONTWAIT); err != unix.EAGAIN {
		return nil, fmt.Errorf("request type %#x seq %d: a second answer (%v), want one", typ, seq, err)
	}
	return b[reqHdrLen:], nil
}

// echoProbe checks that the module answers ECHO on sock, in namespace
// inum, with the payload sent and the right namespace.
func echoProbe(sock *fsock, inum, seq uint32) error {
	payload := []byte(fmt.Sprintf("nlfuzz probe %d", seq))
	attrs, err := request(sock, family.MsgEcho, seq,
		appendAttr(nil, uint16(nlaHdrLen+len(payload)), family.AttrPayload, payload))
	if err != nil {
		return fmt.Errorf("ECHO probe in namespace %d: %w", inum, err)
	}
	if !bytes.Contains(attrs, payload) {
		return fmt.Errorf("ECHO probe in namespace %d: reply % x lacks the payload %q", inum, attrs, payload)
	}
	got, ok, err := findU32(attrs, family.AttrNetnsInum)
	if err != nil || !ok || got != inum {
		return fmt.Errorf("ECHO probe in namespace %d: NSB_A_NETNS_INUM = %d (present %v, %v), want %d", inum, got, ok, err, inum)
	}
	return nil
}

// instances asks the module for its number of per-namespace instances.
func instances(unit int) (uint32, error) {
	sock, err := openPlainSock(unit)
	if err != nil {
		return 0, err
	}
	defer unix.Close(sock.fd)
	attrs, err := request(sock, family.MsgStats, 1, nil)
	if err != nil {
		return 0, err
	}
	n, ok, err := findU32(attrs, family.AttrInstances)
	if err != nil || !ok {
		return 0, fmt.Errorf("STATS reply without NSB_A_INSTANCES (%v)", err)
	}
	return n, nil
}

// waitInstances waits until the module has want instances: namespaces
// are destroyed asynchronously after their last socket is closed. Nothing
// signals that, so it asks every 100 ms until limit.
func waitInstances(unit int, want uint32, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		got, err := instances(unit)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("NSB_A_INSTANCES = %d %v after the run, want %d as before it", got, limit, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
