package kmodtest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/vishvananda/netns"
)

// TestIntegrationEcho sends ECHO from the initial namespace and from three
// new ones: every reply must come from the caller's own namespace (its
// inode and cookie, both checked against what the kernel says about the
// socket without the module) and carry the payload byte for byte.
func TestIntegrationEcho(t *testing.T) {
	unit := testenv.RequireModule(t)

	type target struct {
		name  string
		ns    netns.NsHandle // netns.None(): the test's own namespace
		inode uint32
	}
	targets := []target{{name: "initial", ns: netns.None(), inode: initInode(t)}}
	for i := 1; i <= 3; i++ {
		h := newNetns(t)
		targets = append(targets, target{name: fmt.Sprintf("new-%d", i), ns: h, inode: inode(t, h)})
	}

	inodes := map[uint32]string{}
	cookies := map[uint64]string{}
	for i, tg := range targets {
		c := dial(t, unit, tg.ns)
		// Every byte value, and an odd length so the attribute needs padding.
		payload := []byte(fmt.Sprintf("echo from %s:", tg.name))
		for b := 0; b < 256; b++ {
			payload = append(payload, byte(b+i))
		}
		r := c.echo(payload)

		if got := r.bytes(t, attrPayload); !bytes.Equal(got, payload) {
			t.Errorf("%s: payload echoed as %q, want %q", tg.name, got, payload)
		}
		gotInode := r.u32(t, attrNetnsInum)
		if gotInode != tg.inode {
			t.Errorf("%s: NSB_A_NETNS_INUM = %d, want %d (inode of the caller's namespace)", tg.name, gotInode, tg.inode)
		}
		gotCookie := r.u64(t, attrNetnsCookie)
		if want := c.netnsCookie(); gotCookie != want {
			t.Errorf("%s: NSB_A_NETNS_COOKIE = %d, want %d (SO_NETNS_COOKIE of the socket)", tg.name, gotCookie, want)
		}
		if len(r) != 3 {
			t.Errorf("%s: reply has attributes %v, want exactly PAYLOAD, NETNS_INUM, NETNS_COOKIE", tg.name, r)
		}
		t.Logf("%s namespace: inode %d cookie %d, %d payload bytes echoed", tg.name, gotInode, gotCookie, len(payload))

		if other, dup := inodes[gotInode]; dup {
			t.Errorf("%s and %s answered with the same inode %d", tg.name, other, gotInode)
		}
		if other, dup := cookies[gotCookie]; dup {
			t.Errorf("%s and %s answered with the same cookie %d", tg.name, other, gotCookie)
		}
		inodes[gotInode], cookies[gotCookie] = tg.name, tg.name
	}
}

// TestIntegrationEchoWithoutPayload: an ECHO without NSB_A_PAYLOAD is
// answered without one.
func TestIntegrationEchoWithoutPayload(t *testing.T) {
	unit := testenv.RequireModule(t)
	h := newNetns(t)
	r := dial(t, unit, h).echo(nil)
	if p, ok := r[attrPayload]; ok {
		t.Errorf("reply carries NSB_A_PAYLOAD %q, want none", p)
	}
	if got, want := r.u32(t, attrNetnsInum), inode(t, h); got != want {
		t.Errorf("NSB_A_NETNS_INUM = %d, want %d", got, want)
	}
	r.u64(t, attrNetnsCookie)
}

// TestIntegrationEchoBytes shows one ECHO and its reply byte by byte, as
// docs/protocol.md quotes them, and checks every field of the reply.
func TestIntegrationEchoBytes(t *testing.T) {
	unit := testenv.RequireModule(t)
	c := dial(t, unit, netns.None())
	const seq = 1
	req := nlMsg(msgEcho, 0x1 /* NLM_F_REQUEST */, seq, body(attr(attrPayload, []byte("ping"))))
	if err := sendRaw(c.nl, req); err != nil {
		t.Fatal(err)
	}
	d, err := recvRaw(c.nl, replyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	reply := d.data
	t.Logf("ECHO request, %d bytes:\n%s", len(req), hex.Dump(req))
	t.Logf("ECHO reply to port id %d, %d bytes:\n%s", c.pid(), len(reply), hex.Dump(reply))

	msgs, err := parseMessages(reply)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("reply: %d messages, %v; want 1", len(msgs), err)
	}
	h := msgs[0].Header
	if uint16(h.Type) != msgEcho || h.Flags != 0 || h.Sequence != seq || h.PID != c.pid() {
		t.Errorf("reply header type %d flags %#x seq %d pid %d, want %d 0 %d %d",
			h.Type, h.Flags, h.Sequence, h.PID, msgEcho, seq, c.pid())
	}
	// 16 header + 4 family header + 8 payload + 8 inode + 12 cookie
	if len(reply) != 48 || h.Length != 48 {
		t.Errorf("reply of %d bytes, nlmsg_len %d; want 48 and 48", len(reply), h.Length)
	}
	a, err := parseBody(msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := string(a.bytes(t, attrPayload)); got != "ping" {
		t.Errorf("payload %q, want %q", got, "ping")
	}
	if got, want := a.u32(t, attrNetnsInum), initInode(t); got != want {
		t.Errorf("NSB_A_NETNS_INUM = %d, want %d", got, want)
	}
	if got, want := a.u64(t, attrNetnsCookie), c.netnsCookie(); got != want {
		t.Errorf("NSB_A_NETNS_COOKIE = %d, want %d", got, want)
	}
}
