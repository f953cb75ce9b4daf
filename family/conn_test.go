package family

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// dialFake returns a Conn to a fake kernel: handle gets every request and
// returns the messages the kernel would send back, and for a Receive with
// nothing pending (a multicast wait) it gets an empty request slice.
func dialFake(t *testing.T, handle FakeKernel) *Conn {
	t.Helper()
	c := NewFakeConn(handle)
	t.Cleanup(func() { c.Close() })
	return c
}

// replyTo builds the module's reply of type typ to req.
func replyTo(t *testing.T, req netlink.Message, typ uint16, r encoding.BinaryMarshaler) netlink.Message {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatalf("marshal %T: %v", r, err)
	}
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Sequence: req.Header.Sequence, PID: req.Header.PID},
		Data:   b,
	}
}

// kernelError builds the NLMSG_ERROR the kernel sends for a rejected req
// when NETLINK_EXT_ACK is on: errno, the request, then the ACK attributes.
func kernelError(t *testing.T, req netlink.Message, errno unix.Errno, msg string, offset uint32) netlink.Message {
	t.Helper()
	orig, err := req.MarshalBinary()
	if err != nil {
		t.Fatalf("marshal request: %v", err)
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NLMSGERR_ATTR_MSG, msg)
	if offset != 0 {
		ae.Uint32(unix.NLMSGERR_ATTR_OFFS, offset)
	}
	tlvs, err := ae.Encode()
	if err != nil {
		t.Fatalf("encode ACK attributes: %v", err)
	}
	data := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
	data = append(append(data, orig...), tlvs...)
	return netlink.Message{
		Header: netlink.Header{
			Type:     netlink.Error,
			Flags:    netlink.AcknowledgeTLVs,
			Sequence: req.Header.Sequence,
			PID:      req.Header.PID,
		},
		Data: data,
	}
}

// checkRequest fails the test unless req is a request of type typ with
// body want.
func checkRequest(t *testing.T, req netlink.Message, typ uint16, want []byte) {
	t.Helper()
	if got := uint16(req.Header.Type); got != typ {
		t.Errorf("request type: want %#x, got %#x", typ, got)
	}
	if got := req.Header.Flags; got != netlink.Request {
		t.Errorf("request flags: want %v, got %v", netlink.Request, got)
	}
	if !bytes.Equal(want, req.Data) {
		t.Errorf("request body:\nwant % x\ngot  % x", want, req.Data)
	}
}

func TestConnEcho(t *testing.T) {
	want := &EchoReply{Payload: []byte("ping"), NetnsInum: 4026532100, NetnsCookie: 77}
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		body, _ := EncodeEcho([]byte("ping"))
		checkRequest(t, reqs[0], MsgEcho, body)
		return []netlink.Message{replyTo(t, reqs[0], MsgEcho, want)}, nil
	})
	got, err := c.Echo([]byte("ping"))
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Echo (-want +got):\n%s", diff)
	}
}

func TestConnPublish(t *testing.T) {
	want := &PublishReply{Group: 7, Seq: 41, Listeners: true}
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		body, _ := EncodePublish(7, []byte("news"))
		checkRequest(t, reqs[0], MsgPublish, body)
		return []netlink.Message{replyTo(t, reqs[0], MsgPublish, want)}, nil
	})
	got, err := c.Publish(7, []byte("news"))
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Publish (-want +got):\n%s", diff)
	}
}

func TestConnStats(t *testing.T) {
	want := &Stats{Echo: 3, Publish: 2, Delivered: 1, NoListener: 1, Rejected: 4, Instances: 2, NetnsInum: 4026531840, InstanceID: 99}
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		checkRequest(t, reqs[0], MsgStats, EncodeStats())
		return []netlink.Message{replyTo(t, reqs[0], MsgStats, want)}, nil
	})
	got, err := c.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestConnPublishRejected(t *testing.T) {
	const msg = "needs CAP_NET_ADMIN in the namespace's user namespace"
	var seq uint32
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		seq = reqs[0].Header.Sequence
		return []netlink.Message{kernelError(t, reqs[0], unix.EPERM, msg, 0)}, nil
	})
	_, err := c.Publish(1, []byte("x"))
	var got *Error
	if !errors.As(err, &got) {
		t.Fatalf("Publish: want *Error, got %T %v", err, err)
	}
	want := &Error{Op: "publish", Errno: unix.EPERM, Message: msg, Seq: seq}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Publish error (-want +got):\n%s", diff)
	}
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("errors.Is(%v, EPERM): want true", err)
	}
	for _, part := range []string{"publish", "EPERM", msg} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error text %q: want it to contain %q", err, part)
		}
	}
}

func TestReceiveRejection(t *testing.T) {
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		return []netlink.Message{kernelError(t, reqs[0], unix.ERANGE, "integer out of range", 24)}, nil
	})
	seq, err := c.Send(MsgPublish, 0, body(1, attrU32(AttrGroup, 0)))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	got, err := c.Receive()
	if err != nil {
		t.Fatalf("Receive: want the rejection as a message, got error %v", err)
	}
	want := []Message{{
		Seq:  seq,
		Type: unix.NLMSG_ERROR,
		Err:  &Error{Errno: unix.ERANGE, Message: "integer out of range", Offset: 24, Seq: seq},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Receive (-want +got):\n%s", diff)
	}
}

func TestReceiveDropped(t *testing.T) {
	// The fake passes the error on bare in a multicast wait; a real socket
	// wraps it in *os.SyscallError. Both must come out of Receive.
	for _, sockErr := range []error{unix.ENOBUFS, os.NewSyscallError("recvmsg", unix.ENOBUFS)} {
		c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
			return nil, sockErr
		})
		msgs, err := c.Receive()
		if !errors.Is(err, ErrDropped) || !errors.Is(err, unix.ENOBUFS) {
			t.Fatalf("Receive with %v: want an error matching ErrDropped and ENOBUFS, got %v", sockErr, err)
		}
		if msgs != nil {
			t.Errorf("Receive with %v: want no messages with the error, got %+v", sockErr, msgs)
		}
	}
}

func TestReceiveEvent(t *testing.T) {
	ev := &Event{Group: 4, Seq: 1, Payload: []byte("hello"), NetnsInum: 4026532200, SenderPortID: 555}
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		if len(reqs) != 0 {
			t.Errorf("want a multicast wait, got requests %+v", reqs)
		}
		return []netlink.Message{replyTo(t, netlink.Message{}, MsgEvent, ev)}, nil
	})
	got, err := c.Receive()
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	want := []Message{{Seq: 0, Type: MsgEvent, Reply: ev}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Receive (-want +got):\n%s", diff)
	}
}

func TestReceiveAckUnknownAndUndecodable(t *testing.T) {
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		req := reqs[0]
		if want, got := netlink.Request|netlink.Acknowledge, req.Header.Flags; want != got {
			t.Errorf("request flags: want %v, got %v", want, got)
		}
		ack := netlink.Message{
			Header: netlink.Header{Type: netlink.Error, Sequence: req.Header.Sequence},
			Data:   make([]byte, 4+len(req.Data)+16),
		}
		broken := netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(MsgEcho), Sequence: req.Header.Sequence},
			Data:   body(1, attrU32(AttrNetnsInum, 1)),
		}
		strange := netlink.Message{Header: netlink.Header{Type: 0x30, Sequence: req.Header.Sequence}}
		return []netlink.Message{broken, ack, strange}, nil
	})
	b, _ := EncodeEcho(nil)
	seq, err := c.Send(MsgEcho, netlink.Acknowledge, b)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	got, err := c.Receive()
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("Receive: want 3 messages, got %d: %+v", len(got), got)
	}
	for i, m := range got {
		if m.Seq != seq {
			t.Errorf("message %d: want seq %d, got %d", i, seq, m.Seq)
		}
	}
	if !errors.Is(got[0].Err, ErrMissingAttribute) || got[0].Reply != nil {
		t.Errorf("reply without cookie: want Err %v and no Reply, got %+v", ErrMissingAttribute, got[0])
	}
	if got[1].Type != unix.NLMSG_ERROR || got[1].Err != nil || got[1].Reply != nil {
		t.Errorf("ack: want type NLMSG_ERROR without Err or Reply, got %+v", got[1])
	}
	if !errors.Is(got[2].Err, ErrUnknownType) || got[2].Type != 0x30 {
		t.Errorf("type 0x30: want Err %v, got %+v", ErrUnknownType, got[2])
	}
}

// TestEchoSkipsOtherMessages checks that a synchronous call returns its own
// reply, not an event or a late reply to an abandoned request.
func TestEchoSkipsOtherMessages(t *testing.T) {
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		req := reqs[0]
		stale := req
		stale.Header.Sequence--
		ev := &Event{Group: 1, Seq: 1, Payload: []byte{}}
		return []netlink.Message{
			replyTo(t, netlink.Message{}, MsgEvent, ev),
			replyTo(t, stale, MsgEcho, &EchoReply{NetnsInum: 1}),
			replyTo(t, req, MsgEcho, &EchoReply{NetnsInum: 2}),
		}, nil
	})
	got, err := c.Echo(nil)
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if got.NetnsInum != 2 {
		t.Errorf("Echo: want the reply with inode 2, got %+v", got)
	}
}

func TestEchoWrongReplyType(t *testing.T) {
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		return []netlink.Message{replyTo(t, reqs[0], MsgPublish, &PublishReply{Group: 1, Seq: 1})}, nil
	})
	_, err := c.Echo(nil)
	if err == nil || !strings.Contains(err.Error(), "reply has message type 0x11, want 0x10") {
		t.Errorf("Echo answered by a PUBLISH reply: want a type mismatch error, got %v", err)
	}
}

func TestSendSequenceSkipsZero(t *testing.T) {
	var got []uint32
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		got = append(got, reqs[0].Header.Sequence)
		return nil, nil
	})
	c.seq.Store(^uint32(0) - 1)
	var returned []uint32
	for range 2 {
		seq, err := c.Send(MsgStats, 0, EncodeStats())
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
		returned = append(returned, seq)
	}
	want := []uint32{^uint32(0), 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sequence numbers sent (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, returned); diff != "" {
		t.Errorf("sequence numbers returned (-want +got):\n%s", diff)
	}
}

func TestGroupRangeChecked(t *testing.T) {
	c := dialFake(t, func([]netlink.Message) ([]netlink.Message, error) { return nil, nil })
	for _, g := range []uint32{0, Groups + 1} {
		if err := c.JoinGroup(g); !errors.Is(err, ErrGroupRange) {
			t.Errorf("JoinGroup(%d): want %v, got %v", g, ErrGroupRange, err)
		}
		if err := c.LeaveGroup(g); !errors.Is(err, ErrGroupRange) {
			t.Errorf("LeaveGroup(%d): want %v, got %v", g, ErrGroupRange, err)
		}
		if _, err := c.Publish(g, nil); !errors.Is(err, ErrGroupRange) {
			t.Errorf("Publish(%d): want %v, got %v", g, ErrGroupRange, err)
		}
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{
			&Error{Op: "publish", Errno: unix.ERANGE, Message: "integer out of range", Offset: 24, Seq: 9},
			"nsbroker publish (seq 9): ERANGE (numerical result out of range): integer out of range at offset 24",
		},
		{&Error{Errno: unix.EPERM, Seq: 3}, "nsbroker (seq 3): EPERM (operation not permitted)"},
		{&Error{Errno: 4000, Seq: 1}, "nsbroker (seq 1): errno 4000 (errno 4000)"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error():\nwant %q\ngot  %q", tt.want, got)
		}
	}
}

func TestModuleUnit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got, err := moduleUnit(filepath.Join(dir, "absent")); err != nil || got != DefaultUnit {
		t.Errorf("module not loaded: want %d, got %d, %v", DefaultUnit, got, err)
	}
	if got, err := moduleUnit(write("unit", "27\n")); err != nil || got != 27 {
		t.Errorf("unit file with 27: want 27, got %d, %v", got, err)
	}
	if _, err := moduleUnit(write("bad", "x\n")); err == nil {
		t.Errorf("unit file with x: want an error, got none")
	}
	if _, err := moduleUnit(dir); err == nil {
		t.Errorf("unit path is a directory: want an error, got none")
	}
}

func TestDialRejectsUnit(t *testing.T) {
	for _, unit := range []int{UnitMin - 1, UnitMax + 1, -1} {
		c, err := Dial(&Config{Unit: unit})
		if err == nil {
			c.Close()
			t.Errorf("Dial(unit %d): want an error, got none", unit)
			continue
		}
		if !strings.Contains(err.Error(), "outside 23..31") {
			t.Errorf("Dial(unit %d): want an out-of-range error, got %v", unit, err)
		}
	}
}

func TestSendSeq(t *testing.T) {
	var got []uint32
	c := dialFake(t, func(reqs []netlink.Message) ([]netlink.Message, error) {
		req := reqs[0]
		got = append(got, req.Header.Sequence)
		checkRequest(t, req, MsgStats, EncodeStats())
		return []netlink.Message{replyTo(t, req, MsgStats, &Stats{Echo: 5})}, nil
	})
	if err := c.SendSeq(4242, MsgStats, EncodeStats()); err != nil {
		t.Fatalf("SendSeq(4242): %v", err)
	}
	msgs, err := c.Receive()
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if len(msgs) != 1 || msgs[0].Seq != 4242 {
		t.Errorf("Receive: want the reply to seq 4242, got %+v", msgs)
	}
	if err := c.SendSeq(0, MsgStats, EncodeStats()); !errors.Is(err, ErrZeroSeq) {
		t.Errorf("SendSeq(0): want %v, got %v", ErrZeroSeq, err)
	}
	if want := []uint32{4242}; !cmp.Equal(want, got) {
		t.Errorf("sequence numbers sent: want %v, got %v", want, got)
	}
}

// TestNextBatchSplitsAtBatchBytes: a datagram holds as many requests as fit
// in BatchBytes, and a larger request goes alone.
func TestNextBatchSplitsAtBatchBytes(t *testing.T) {
	reqs := func(sizes ...int) []Request {
		var r []Request
		for _, n := range sizes {
			r = append(r, Request{Seq: 1, Type: MsgPublish, Data: make([]byte, n)})
		}
		return r
	}
	const hdr = unix.NLMSG_HDRLEN
	quarter := BatchBytes/4 - hdr // four of them fill a datagram exactly
	for _, tc := range []struct {
		name     string
		reqs     []Request
		n, bytes int
	}{
		{"small ones all fit", reqs(10, 10, 10), 3, 3 * (hdr + 12)},
		{"exactly full", reqs(quarter, quarter, quarter, quarter, 1), 4, BatchBytes},
		{"one too many", reqs(quarter, quarter, quarter, quarter+4), 3, 3 * BatchBytes / 4},
		{"larger than a batch goes alone", reqs(BatchBytes, 1), 1, hdr + BatchBytes},
	} {
		if n, size := nextBatch(tc.reqs); n != tc.n || size != tc.bytes {
			t.Errorf("%s: want %d requests in %d bytes, got %d in %d", tc.name, tc.n, tc.bytes, n, size)
		}
	}
}
