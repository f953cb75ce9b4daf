package kmodtest

import (
	"bytes"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

// nlmsg_flags used by the table (include/uapi/linux/netlink.h).
const (
	fReq   = unix.NLM_F_REQUEST
	fMulti = unix.NLM_F_MULTI
	fAck   = unix.NLM_F_ACK
	fEcho  = unix.NLM_F_ECHO
	fRoot  = unix.NLM_F_ROOT
	fDump  = unix.NLM_F_DUMP
)

// firstAttr is the offset of the first attribute of a request, counted from
// its netlink header: NLMSGERR_ATTR_OFFS points there when it is at fault.
const firstAttr = nlHdrLen + nsbHdrLen

// Extended-ACK messages: the module's (kmod/netlink.c) and the kernel's
// attribute parser's (lib/nlattr.c).
const (
	msgUnknownType  = "unknown message type"
	msgEventKernel  = "EVENT is sent by the kernel only"
	msgVersion      = "unsupported ABI version"
	msgTruncated    = "truncated family header"
	msgHdrBits      = "unknown flags or reserved bits set in family header"
	msgNoGroup      = "PUBLISH needs NSB_A_GROUP"
	msgDump         = "dump requests are not supported"
	msgFlags        = "unsupported netlink message flags"
	msgPolicy       = "Attribute failed policy validation"
	msgIntRange     = "integer out of range"
	msgAttrLen      = "invalid attribute length"
	msgUnknownAttr  = "Unknown attribute type"
	msgUnsupported  = "Unsupported attribute"
	msgNestedFlag   = "NLA_F_NESTED not expected"
	msgLeftover     = "bytes leftover after parsing attributes"
	msgNeedsNetAdmn = "needs CAP_NET_ADMIN in the namespace's user namespace"
)

// outcome is one datagram the kernel must send back: a reply of the
// module (typ != 0) or an NLMSG_ERROR.
type outcome struct {
	seq uint32 // nlmsg_seq of the request it answers

	typ   uint16                        // reply: message type
	check func(t *testing.T, a attrSet) // reply: extra checks

	errno    unix.Errno // NLMSG_ERROR: 0 for an acknowledgement
	msg      string     // NLMSG_ERROR: extended-ACK message, "" for none
	offset   int        // NLMSG_ERROR: NLMSGERR_ATTR_OFFS, -1 for none
	missType int        // NLMSG_ERROR: NLMSGERR_ATTR_MISS_TYPE, -1 for none
	policy   bool       // NLMSG_ERROR: NLMSGERR_ATTR_POLICY present
}

func reply(seq uint32, typ uint16, check func(*testing.T, attrSet)) outcome {
	return outcome{seq: seq, typ: typ, check: check}
}

func fail(seq uint32, errno unix.Errno, msg string) outcome {
	return outcome{seq: seq, errno: errno, msg: msg, offset: -1, missType: -1}
}

func failAt(seq uint32, errno unix.Errno, msg string, offset int) outcome {
	return outcome{seq: seq, errno: errno, msg: msg, offset: offset, missType: -1}
}

// failPol is an attribute that broke its nla_policy rule: the kernel
// reports the rule (NLMSGERR_ATTR_POLICY) too.
func failPol(seq uint32, errno unix.Errno, msg string, offset int) outcome {
	return outcome{seq: seq, errno: errno, msg: msg, offset: offset, missType: -1, policy: true}
}

func acked(seq uint32) outcome { return fail(seq, 0, "") }

// payloadIs checks the echoed payload.
func payloadIs(want []byte) func(*testing.T, attrSet) {
	return func(t *testing.T, a attrSet) {
		t.Helper()
		got, ok := a[attrPayload]
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("reply payload present=%v %d bytes %.40q, want %d bytes %.40q", ok, len(got), got, len(want), want)
		}
	}
}

// publishedTo checks a PUBLISH reply: group, first number of that group.
func publishedTo(group uint32) func(*testing.T, attrSet) {
	return func(t *testing.T, a attrSet) {
		t.Helper()
		if g := a.u32(t, attrGroup); g != group {
			t.Errorf("PUBLISH reply group %d, want %d", g, group)
		}
		if s := a.u64(t, attrSeq); s != 1 {
			t.Errorf("PUBLISH reply seq %d, want 1", s)
		}
	}
}

// badCase is one datagram and everything the kernel must answer to it.
type badCase struct {
	name     string
	datagram []byte
	sendErr  unix.Errno // sendmsg itself fails with this
	want     []outcome  // in order; none means silence
	rejected uint64     // requests the module answered with an error
}

// echoMsg is a well-formed ECHO request.
func echoMsg(seq uint32, payload string) []byte {
	return nlMsg(msgEcho, fReq, seq, body(attr(attrPayload, []byte(payload))))
}

func badCases() []badCase {
	group := func(g uint32) []byte { return attr(attrGroup, u32(g)) }
	big := bytes.Repeat([]byte{0xa5}, nsbPayloadMax+1)
	longest := big[:nsbPayloadMax]
	return []badCase{
		// Message types.
		{name: "unknown type 0x30", datagram: nlMsg(0x30, fReq, 1, body()),
			want: []outcome{fail(1, unix.EOPNOTSUPP, msgUnknownType)}, rejected: 1},
		{name: "type NSB_MSG_MAX+1", datagram: nlMsg(msgMax+1, fReq, 2, body()),
			want: []outcome{fail(2, unix.EOPNOTSUPP, msgUnknownType)}, rejected: 1},
		{name: "type 0xffff", datagram: nlMsg(0xffff, fReq, 3, body()),
			want: []outcome{fail(3, unix.EOPNOTSUPP, msgUnknownType)}, rejected: 1},
		{name: "EVENT sent to the module", datagram: nlMsg(msgEvent, fReq, 4, body(group(1))),
			want: []outcome{fail(4, unix.EOPNOTSUPP, msgEventKernel)}, rejected: 1},

		// Family header.
		{name: "version 0", datagram: nlMsg(msgEcho, fReq, 10, cat(famHdr(0, 0, 0), attr(attrPayload, []byte("x")))),
			want: []outcome{fail(10, unix.EPROTONOSUPPORT, msgVersion)}, rejected: 1},
		{name: "version 2", datagram: nlMsg(msgEcho, fReq, 11, famHdr(2, 0, 0)),
			want: []outcome{fail(11, unix.EPROTONOSUPPORT, msgVersion)}, rejected: 1},
		{name: "family header of 0 bytes", datagram: rawMsg(16, msgEcho, fReq, 12, nil),
			want: []outcome{fail(12, unix.EINVAL, msgTruncated)}, rejected: 1},
		{name: "family header of 1 byte", datagram: rawMsg(17, msgEcho, fReq, 13, []byte{1}),
			want: []outcome{fail(13, unix.EINVAL, msgTruncated)}, rejected: 1},
		{name: "family header of 2 bytes", datagram: rawMsg(18, msgStats, fReq, 14, []byte{1, 0}),
			want: []outcome{fail(14, unix.EINVAL, msgTruncated)}, rejected: 1},
		{name: "family header of 3 bytes", datagram: rawMsg(19, msgPublish, fReq, 15, []byte{1, 0, 0}),
			want: []outcome{fail(15, unix.EINVAL, msgTruncated)}, rejected: 1},
		{name: "family header flags 0x01", datagram: nlMsg(msgEcho, fReq, 16, famHdr(nsbVersion, 0x01, 0)),
			want: []outcome{fail(16, unix.EINVAL, msgHdrBits)}, rejected: 1},
		{name: "family header flags 0x80", datagram: nlMsg(msgStats, fReq, 17, famHdr(nsbVersion, 0x80, 0)),
			want: []outcome{fail(17, unix.EINVAL, msgHdrBits)}, rejected: 1},
		{name: "family header reserved 0x0100", datagram: nlMsg(msgEcho, fReq, 18, famHdr(nsbVersion, 0, 0x0100)),
			want: []outcome{fail(18, unix.EINVAL, msgHdrBits)}, rejected: 1},

		// nlmsg_flags.
		{name: "NLM_F_DUMP", datagram: nlMsg(msgStats, fReq|fDump, 20, body()),
			want: []outcome{fail(20, unix.EOPNOTSUPP, msgDump)}, rejected: 1},
		{name: "NLM_F_ECHO", datagram: nlMsg(msgEcho, fReq|fEcho, 21, body()),
			want: []outcome{fail(21, unix.EOPNOTSUPP, msgFlags)}, rejected: 1},
		{name: "NLM_F_MULTI", datagram: nlMsg(msgEcho, fReq|fMulti, 22, body()),
			want: []outcome{fail(22, unix.EOPNOTSUPP, msgFlags)}, rejected: 1},
		{name: "NLM_F_ROOT alone", datagram: nlMsg(msgStats, fReq|fRoot, 23, body()),
			want: []outcome{fail(23, unix.EOPNOTSUPP, msgFlags)}, rejected: 1},
		{name: "flags checked before type: EVENT with NLM_F_DUMP", datagram: nlMsg(msgEvent, fReq|fDump, 24, body()),
			want: []outcome{fail(24, unix.EOPNOTSUPP, msgDump)}, rejected: 1},
		{name: "error with NLM_F_ACK is answered once", datagram: nlMsg(0x30, fReq|fAck, 25, body()),
			want: []outcome{fail(25, unix.EOPNOTSUPP, msgUnknownType)}, rejected: 1},
		{name: "type checked before version", datagram: nlMsg(0x30, fReq, 26, famHdr(0, 0, 0)),
			want: []outcome{fail(26, unix.EOPNOTSUPP, msgUnknownType)}, rejected: 1},
		{name: "version checked before attributes", datagram: nlMsg(msgEcho, fReq, 27, cat(famHdr(0, 0, 0), attr(attrMax+1, nil))),
			want: []outcome{fail(27, unix.EPROTONOSUPPORT, msgVersion)}, rejected: 1},

		// Required attributes and ranges.
		{name: "PUBLISH without NSB_A_GROUP", datagram: nlMsg(msgPublish, fReq, 30, body(attr(attrPayload, []byte("x")))),
			want: []outcome{{seq: 30, errno: unix.EINVAL, msg: msgNoGroup, offset: -1, missType: int(attrGroup)}}, rejected: 1},
		{name: "ECHO payload of NSB_PAYLOAD_MAX+1", datagram: nlMsg(msgEcho, fReq, 31, body(attr(attrPayload, big))),
			want: []outcome{failPol(31, unix.ERANGE, msgPolicy, firstAttr)}, rejected: 1},
		{name: "ECHO payload of NSB_PAYLOAD_MAX", datagram: nlMsg(msgEcho, fReq, 32, body(attr(attrPayload, longest))),
			want: []outcome{reply(32, msgEcho, payloadIs(longest))}},
		{name: "PUBLISH payload of NSB_PAYLOAD_MAX+1", datagram: nlMsg(msgPublish, fReq, 33, body(group(1), attr(attrPayload, big))),
			want: []outcome{failPol(33, unix.ERANGE, msgPolicy, firstAttr+8)}, rejected: 1},
		{name: "group 0", datagram: nlMsg(msgPublish, fReq, 34, body(group(0))),
			want: []outcome{failPol(34, unix.ERANGE, msgIntRange, firstAttr)}, rejected: 1},
		{name: "group NSB_GROUPS+1", datagram: nlMsg(msgPublish, fReq, 35, body(group(nsbGroups+1))),
			want: []outcome{failPol(35, unix.ERANGE, msgIntRange, firstAttr)}, rejected: 1},
		{name: "group 0xffffffff", datagram: nlMsg(msgPublish, fReq, 36, body(group(0xffffffff))),
			want: []outcome{failPol(36, unix.ERANGE, msgIntRange, firstAttr)}, rejected: 1},
		{name: "group attribute of 0 bytes", datagram: nlMsg(msgPublish, fReq, 37, body(attr(attrGroup, nil))),
			want: []outcome{failPol(37, unix.EINVAL, msgAttrLen, firstAttr)}, rejected: 1},
		{name: "group attribute of 2 bytes", datagram: nlMsg(msgPublish, fReq, 38, body(attr(attrGroup, []byte{1, 0}))),
			want: []outcome{failPol(38, unix.EINVAL, msgAttrLen, firstAttr)}, rejected: 1},
		{name: "group attribute of 8 bytes", datagram: nlMsg(msgPublish, fReq, 39, body(attr(attrGroup, u64(1)))),
			want: []outcome{failPol(39, unix.EINVAL, msgAttrLen, firstAttr)}, rejected: 1},

		// Strict attribute parsing.
		{name: "attribute type NSB_A_MAX+1", datagram: nlMsg(msgEcho, fReq, 40, body(attr(attrMax+1, []byte("x")))),
			want: []outcome{failAt(40, unix.EINVAL, msgUnknownAttr, firstAttr)}, rejected: 1},
		{name: "attribute type 0", datagram: nlMsg(msgEcho, fReq, 41, body(attr(attrPayload, []byte("ok")), attr(attrUnspec, nil))),
			want: []outcome{failAt(41, unix.EINVAL, msgUnknownAttr, firstAttr+8)}, rejected: 1},
		{name: "attribute type 0x3fff", datagram: nlMsg(msgStats, fReq, 42, body(attr(0x3fff, nil))),
			want: []outcome{failAt(42, unix.EINVAL, msgUnknownAttr, firstAttr)}, rejected: 1},
		{name: "NSB_A_SEQ in ECHO", datagram: nlMsg(msgEcho, fReq, 43, body(attr(attrSeq, u64(1)))),
			want: []outcome{failAt(43, unix.EINVAL, msgUnsupported, firstAttr)}, rejected: 1},
		{name: "NSB_A_PAD in ECHO", datagram: nlMsg(msgEcho, fReq, 44, body(attr(attrPad, nil))),
			want: []outcome{failAt(44, unix.EINVAL, msgUnsupported, firstAttr)}, rejected: 1},
		{name: "NSB_A_GROUP in ECHO", datagram: nlMsg(msgEcho, fReq, 45, body(group(1))),
			want: []outcome{failAt(45, unix.EINVAL, msgUnsupported, firstAttr)}, rejected: 1},
		{name: "NSB_A_PAYLOAD in STATS", datagram: nlMsg(msgStats, fReq, 46, body(attr(attrPayload, []byte("x")))),
			want: []outcome{failAt(46, unix.EINVAL, msgUnsupported, firstAttr)}, rejected: 1},
		{name: "NSB_A_GROUP in GROUPS", datagram: nlMsg(msgGroups, fReq, 57, body(group(1))),
			want: []outcome{failAt(57, unix.EINVAL, msgUnsupported, firstAttr)}, rejected: 1},
		{name: "NSB_A_GROUP_SEQ in GROUPS", datagram: nlMsg(msgGroups, fReq, 58, body(attr(attrGroupSeq|unix.NLA_F_NESTED, nil))),
			want: []outcome{failAt(58, unix.EINVAL, msgUnsupported, firstAttr)}, rejected: 1},
		{name: "GROUPS with NLM_F_DUMP", datagram: nlMsg(msgGroups, fReq|fDump, 59, body()),
			want: []outcome{fail(59, unix.EOPNOTSUPP, msgDump)}, rejected: 1},
		{name: "GROUPS with family header flags 0x02", datagram: nlMsg(msgGroups, fReq, 65, famHdr(nsbVersion, 0x02, 0)),
			want: []outcome{fail(65, unix.EINVAL, msgHdrBits)}, rejected: 1},
		{name: "GROUPS version 2", datagram: nlMsg(msgGroups, fReq, 66, famHdr(2, 0, 0)),
			want: []outcome{fail(66, unix.EPROTONOSUPPORT, msgVersion)}, rejected: 1},
		{name: "NLA_F_NESTED on NSB_A_PAYLOAD", datagram: nlMsg(msgEcho, fReq, 47, body(attr(attrPayload|unix.NLA_F_NESTED, nil))),
			want: []outcome{failPol(47, unix.EINVAL, msgNestedFlag, firstAttr)}, rejected: 1},
		{name: "NLA_F_NET_BYTEORDER on NSB_A_PAYLOAD is ignored", datagram: nlMsg(msgEcho, fReq, 48, body(attr(attrPayload|unix.NLA_F_NET_BYTEORDER, []byte("be")))),
			want: []outcome{reply(48, msgEcho, payloadIs([]byte("be")))}},
		{name: "nla_len overruns the message", datagram: nlMsg(msgEcho, fReq, 49, body(rawAttr(64, attrPayload, []byte("shrt")))),
			want: []outcome{fail(49, unix.EINVAL, msgLeftover)}, rejected: 1},
		{name: "nla_len 2", datagram: nlMsg(msgEcho, fReq, 50, body(rawAttr(2, attrPayload, nil))),
			want: []outcome{fail(50, unix.EINVAL, msgLeftover)}, rejected: 1},
		{name: "nla_len 0", datagram: nlMsg(msgEcho, fReq, 51, body(rawAttr(0, attrPayload, []byte("abcd")))),
			want: []outcome{fail(51, unix.EINVAL, msgLeftover)}, rejected: 1},
		{name: "2 bytes after the last attribute", datagram: pad4(rawMsg(nlHdrLen+nsbHdrLen+8+2, msgEcho, fReq, 52,
			body(attr(attrPayload, []byte("ok")), []byte{0, 0}))),
			want: []outcome{fail(52, unix.EINVAL, msgLeftover)}, rejected: 1},
		{name: "zero-length payload", datagram: nlMsg(msgEcho, fReq, 53, body(attr(attrPayload, nil))),
			want: []outcome{reply(53, msgEcho, payloadIs([]byte{}))}},
		{name: "duplicated payload: the last wins", datagram: nlMsg(msgEcho, fReq, 54,
			body(attr(attrPayload, []byte("first")), attr(attrPayload, []byte("second")))),
			want: []outcome{reply(54, msgEcho, payloadIs([]byte("second")))}},
		{name: "duplicated group: the last wins", datagram: nlMsg(msgPublish, fReq, 55, body(group(5), group(6))),
			want: []outcome{reply(55, msgPublish, publishedTo(6))}},
		{name: "duplicated group: every copy is validated", datagram: nlMsg(msgPublish, fReq, 56, body(group(nsbGroups+1), group(5))),
			want: []outcome{failPol(56, unix.ERANGE, msgIntRange, firstAttr)}, rejected: 1},

		// Malformed netlink headers: netlink_rcv_skb drops the rest of the
		// datagram without a word.
		{name: "nlmsg_len 8", datagram: rawMsg(8, msgEcho, fReq, 60, famHdr(nsbVersion, 0, 0))},
		{name: "nlmsg_len 0", datagram: rawMsg(0, msgEcho, fReq|fAck, 61, famHdr(nsbVersion, 0, 0))},
		{name: "nlmsg_len beyond the datagram", datagram: rawMsg(64, msgEcho, fReq|fAck, 62, famHdr(nsbVersion, 0, 0))},
		{name: "datagram of 8 bytes", datagram: rawMsg(8, msgEcho, fReq, 63, nil)[:8]},
		{name: "last message unpadded", datagram: rawMsg(nlHdrLen+nsbHdrLen+5, msgEcho, fReq, 64, body(rawAttr(5, attrPayload, []byte("1")))),
			want: []outcome{reply(64, msgEcho, payloadIs([]byte("1")))}},

		// Control types (below NLMSG_MIN_TYPE) and messages that are not
		// requests never reach the module: acknowledged if asked, else silence.
		{name: "NLMSG_NOOP with NLM_F_ACK", datagram: nlMsg(unix.NLMSG_NOOP, fReq|fAck, 70, nil), want: []outcome{acked(70)}},
		{name: "NLMSG_ERROR with NLM_F_ACK", datagram: nlMsg(unix.NLMSG_ERROR, fReq|fAck, 71, nil), want: []outcome{acked(71)}},
		{name: "NLMSG_DONE with NLM_F_ACK", datagram: nlMsg(unix.NLMSG_DONE, fReq|fAck, 72, nil), want: []outcome{acked(72)}},
		{name: "NLMSG_OVERRUN with NLM_F_ACK", datagram: nlMsg(unix.NLMSG_OVERRUN, fReq|fAck, 73, nil), want: []outcome{acked(73)}},
		{name: "reserved type 0x0f with NLM_F_ACK", datagram: nlMsg(0x0f, fReq|fAck, 74, body()), want: []outcome{acked(74)}},
		{name: "NLMSG_NOOP", datagram: nlMsg(unix.NLMSG_NOOP, fReq, 75, nil)},
		{name: "NLMSG_ERROR", datagram: nlMsg(unix.NLMSG_ERROR, fReq, 76, nil)},
		{name: "NLMSG_DONE", datagram: nlMsg(unix.NLMSG_DONE, fReq, 77, nil)},
		{name: "NLMSG_OVERRUN", datagram: nlMsg(unix.NLMSG_OVERRUN, fReq, 78, nil)},
		{name: "ECHO without NLM_F_REQUEST", datagram: nlMsg(msgEcho, 0, 79, body(attr(attrPayload, []byte("x"))))},
		{name: "ECHO without NLM_F_REQUEST, with NLM_F_ACK", datagram: nlMsg(msgEcho, fAck, 80, body(attr(attrPayload, []byte("x")))),
			want: []outcome{acked(80)}},
		{name: "invalid message without NLM_F_REQUEST", datagram: nlMsg(0x30, fAck|fDump, 81, nil),
			want: []outcome{acked(81)}},

		// Acknowledgements and several messages per datagram.
		{name: "ECHO with NLM_F_ACK: reply, then ack", datagram: nlMsg(msgEcho, fReq|fAck, 90, body(attr(attrPayload, []byte("acked")))),
			want: []outcome{reply(90, msgEcho, payloadIs([]byte("acked"))), acked(90)}},
		{name: "PUBLISH with NLM_F_ACK: reply, then ack", datagram: nlMsg(msgPublish, fReq|fAck, 91, body(group(9))),
			want: []outcome{reply(91, msgPublish, publishedTo(9)), acked(91)}},
		{name: "echo, bad, echo in one datagram", datagram: cat(echoMsg(92, "one"), nlMsg(0x30, fReq, 93, body()), echoMsg(94, "three")),
			want: []outcome{reply(92, msgEcho, payloadIs([]byte("one"))), fail(93, unix.EOPNOTSUPP, msgUnknownType),
				reply(94, msgEcho, payloadIs([]byte("three")))}, rejected: 1},
		{name: "two bad in one datagram", datagram: cat(nlMsg(msgEcho, fReq, 95, famHdr(2, 0, 0)), nlMsg(msgPublish, fReq, 96, body())),
			want: []outcome{fail(95, unix.EPROTONOSUPPORT, msgVersion),
				{seq: 96, errno: unix.EINVAL, msg: msgNoGroup, offset: -1, missType: int(attrGroup)}}, rejected: 2},
		{name: "echo, then a truncated header: the rest is dropped", datagram: cat(echoMsg(97, "kept"), rawMsg(8, msgEcho, fReq|fAck, 98, nil)),
			want: []outcome{reply(97, msgEcho, payloadIs([]byte("kept")))}},

		// Datagrams sendmsg refuses before the module sees them.
		{name: "1 MiB datagram", datagram: make([]byte, 1<<20), sendErr: unix.EMSGSIZE},
		{name: "empty datagram", datagram: []byte{}, sendErr: unix.ENODATA},
	}
}

// TestIntegrationBadInput sends every kind of malformed request to the
// module in a fresh namespace and checks the kernel's exact answer: which
// datagrams come back in which order, each errno and extended-ACK text and
// attribute offset, and that STATS' rejected counter moves by exactly the
// number of errors. After every case an ECHO must be the very next thing
// answered, which also proves silent cases left nothing behind.
func TestIntegrationBadInput(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	c := dial(t, unit, ns)

	cases := badCases()
	var total uint64
	for i, bc := range cases {
		t.Run(bc.name, func(t *testing.T) {
			c := c.in(t)
			before := c.stats().counters[statsRejected]
			err := sendRaw(c.nl, bc.datagram)
			if err != bc.sendErr && !(bc.sendErr == 0 && err == nil) {
				t.Fatalf("send %d bytes: error %v, want %v", len(bc.datagram), err, errOrNil(bc.sendErr))
			}
			if err != nil {
				t.Logf("sendmsg of %d bytes: %v", len(bc.datagram), err)
			}
			for _, w := range bc.want {
				checkOutcome(t, c, w)
			}
			// The kernel answers synchronously: anything this case caused is
			// queued before the sentinel's reply.
			sentinel := uint32(10000 + i)
			if err := sendRaw(c.nl, echoMsg(sentinel, "sentinel")); err != nil {
				t.Fatal(err)
			}
			checkOutcome(t, c, reply(sentinel, msgEcho, payloadIs([]byte("sentinel"))))

			after := c.stats().counters[statsRejected]
			if after-before != bc.rejected {
				t.Errorf("rejected counter moved by %d, want %d", after-before, bc.rejected)
			}
			total += after - before
		})
	}
	t.Logf("%d cases, %d requests rejected", len(cases), total)

	// Still alive, and nothing stray left in the socket.
	expectSilence(t, silenceWait, []string{"bad input socket"}, c.nl)
	if got, want := c.echo([]byte("after")).u32(t, attrNetnsInum), inode(t, ns); got != want {
		t.Errorf("echo after the bad input answered by inode %d, want %d", got, want)
	}
	if got := c.stats().counters[statsRejected]; got != total {
		t.Errorf("namespace's rejected counter %d, want %d", got, total)
	}
}

func errOrNil(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// checkOutcome receives the next datagram and checks it is w.
func checkOutcome(t *testing.T, c *conn, w outcome) {
	t.Helper()
	msgs, err := recvMessages(c.nl, replyTimeout)
	if err != nil {
		t.Fatalf("waiting for the answer to seq %d: %v", w.seq, err)
	}
	if len(msgs) != 1 {
		t.Fatalf("datagram of %d messages %+v, want 1", len(msgs), msgs)
	}
	m := msgs[0]
	if m.Header.Sequence != w.seq || m.Header.PID != c.pid() {
		t.Fatalf("answer seq %d pid %d, want seq %d pid %d: %+v", m.Header.Sequence, m.Header.PID, w.seq, c.pid(), m)
	}
	if w.typ != 0 {
		if uint16(m.Header.Type) != w.typ {
			if m.Header.Type == netlink.Error {
				a, _ := parseAck(m)
				t.Fatalf("seq %d: error %v %q, want reply type %d", w.seq, a.errno, a.msg, w.typ)
			}
			t.Fatalf("seq %d: message type %d, want %d", w.seq, m.Header.Type, w.typ)
		}
		a, err := parseBody(m)
		if err != nil {
			t.Fatalf("seq %d: %v", w.seq, err)
		}
		if w.check != nil {
			w.check(t, a)
		}
		return
	}
	a, err := parseAck(m)
	if err != nil {
		t.Fatalf("seq %d: %v (message %+v)", w.seq, err, m)
	}
	if a.errno != w.errno || a.msg != w.msg || a.offset != w.offset || a.missType != w.missType ||
		a.policy != w.policy || a.reqSeq != w.seq {
		t.Errorf("seq %d: got errno %v (%d) msg %q offset %d missType %d policy %v for request seq %d;\n"+
			"want errno %v (%d) msg %q offset %d missType %d policy %v",
			w.seq, a.errno, int(a.errno), a.msg, a.offset, a.missType, a.policy, a.reqSeq,
			w.errno, int(w.errno), w.msg, w.offset, w.missType, w.policy)
	}
	// Errors quote the request; acknowledgements do not (NLM_F_CAPPED).
	if a.capped != (w.errno == 0) {
		t.Errorf("seq %d: NLM_F_CAPPED %v, want %v", w.seq, a.capped, w.errno == 0)
	}
	if w.errno != 0 {
		t.Logf("seq %d: %v (%d) %q offset %d missType %d policy %v", w.seq, a.errno, -int(a.errno), a.msg, a.offset, a.missType, a.policy)
	}
}
