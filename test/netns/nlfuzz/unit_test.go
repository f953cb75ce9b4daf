package nlfuzz

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/nsbroker/nsbroker/family"
	"golang.org/x/sys/unix"
)

// The generator, the answer checks and the kernel log parsing, tested on
// the host: the VM run can only show that they did not find a bug.

func TestGeneratorDeterministic(t *testing.T) {
	a, b, other := newGenerator(7, 1), newGenerator(7, 1), newGenerator(7, 2)
	same := 0
	for i := range 2000 {
		ka, da := a.next()
		kb, db := b.next()
		if ka != kb || !bytes.Equal(da, db) {
			t.Fatalf("datagram %d: %v % x and %v % x from the same seed and stream", i, ka, da[:min(len(da), 32)], kb, db[:min(len(db), 32)])
		}
		if _, do := other.next(); bytes.Equal(da, do) {
			same++
		}
	}
	// Short raw datagrams can coincide; most must differ.
	if same > 20 {
		t.Errorf("streams 1 and 2 gave %d identical datagrams of 2000, want nearly none", same)
	}
}

func TestGeneratorKindMix(t *testing.T) {
	const n = 20000
	g := newGenerator(1, 0)
	got := map[kind]int{}
	largest := 0
	for range n {
		k, d := g.next()
		got[k]++
		largest = max(largest, len(d))
	}
	total := 0
	for _, w := range kindWeights {
		total += w
	}
	for k := range numKinds {
		want := float64(n) * float64(kindWeights[k]) / float64(total)
		if math.Abs(float64(got[k])-want) > 0.1*want {
			t.Errorf("%v: %d of %d datagrams, want about %.0f", k, got[k], n, want)
		}
	}
	if largest <= family.PayloadMax || largest > maxDatagram {
		t.Errorf("largest datagram %d bytes, want above %d (a payload beyond the limit) and at most %d",
			largest, family.PayloadMax, maxDatagram)
	}
}

// attrs splits well-formed attributes; ok is false if they are not.
func attrs(b []byte) (map[uint16][][]byte, bool) {
	m := map[uint16][][]byte{}
	for len(b) > 0 {
		if len(b) < nlaHdrLen {
			return nil, false
		}
		n := int(ne.Uint16(b[0:2]))
		if n < nlaHdrLen || n > len(b) {
			return nil, false
		}
		m[ne.Uint16(b[2:4])] = append(m[ne.Uint16(b[2:4])], b[nlaHdrLen:n])
		b = b[min(align4(n), len(b)):]
	}
	return m, true
}

// TestGeneratorValid checks that the valid kind is what the module
// accepts: one request with right lengths, header and attributes.
func TestGeneratorValid(t *testing.T) {
	g := newGenerator(3, 0)
	for i := range 3000 {
		b := g.valid(nil)
		n := int(ne.Uint32(b[0:4]))
		typ, flags := ne.Uint16(b[4:6]), ne.Uint16(b[6:8])
		if align4(n) != len(b) || n < reqHdrLen {
			t.Fatalf("datagram %d: nlmsg_len %d in %d bytes", i, n, len(b))
		}
		if !slices.Contains(requestTypes, typ) || flags&^uint16(unix.NLM_F_ACK) != unix.NLM_F_REQUEST {
			t.Fatalf("datagram %d: type %#x flags %#x", i, typ, flags)
		}
		if !bytes.Equal(b[nlHdrLen:reqHdrLen], validFamHdr()) {
			t.Fatalf("datagram %d: family header % x", i, b[nlHdrLen:reqHdrLen])
		}
		a, ok := attrs(b[reqHdrLen:n])
		if !ok {
			t.Fatalf("datagram %d: malformed attributes % x", i, b[reqHdrLen:n])
		}
		for typ, vals := range a {
			for _, v := range vals {
				switch {
				case typ == family.AttrPayload && len(v) <= family.PayloadMax:
				case typ == family.AttrGroup && len(v) == 4 && ne.Uint32(v) >= 1 && ne.Uint32(v) <= family.Groups:
				default:
					t.Fatalf("datagram %d: attribute %d of %d bytes is not valid", i, typ, len(v))
				}
			}
		}
		if _, ok := a[family.AttrGroup]; ok != (typ == family.MsgPublish) {
			t.Fatalf("datagram %d: type %#x with group attribute %v", i, typ, ok)
		}
	}
}

// TestGeneratorEdges checks that mutated attributes reach the edge values
// the module's policies and handlers must reject or accept.
func TestGeneratorEdges(t *testing.T) {
	g := newGenerator(5, 0)
	groups := map[uint32]bool{}
	payloads := map[int]bool{}
	var nested, lying bool
	for range 30000 {
		b := g.mutatedAttrs(nil)
		n := min(int(ne.Uint32(b[0:4])), len(b))
		if n < reqHdrLen {
			continue
		}
		a, ok := attrs(b[reqHdrLen:n])
		if !ok {
			lying = true
			continue
		}
		for typ, vals := range a {
			for _, v := range vals {
				if typ&unix.NLA_F_NESTED != 0 {
					nested = true
				}
				switch typ & nlaTypeMask {
				case family.AttrGroup:
					if len(v) == 4 {
						groups[ne.Uint32(v)] = true
					}
				case family.AttrPayload:
					payloads[len(v)] = true
				}
			}
		}
	}
	for _, want := range []uint32{0, 1, family.Groups, family.Groups + 1, math.MaxUint32} {
		if !groups[want] {
			t.Errorf("no NSB_A_GROUP %d among the mutated attributes", want)
		}
	}
	for _, want := range []int{0, family.PayloadMax - 1, family.PayloadMax, family.PayloadMax + 1} {
		if !payloads[want] {
			t.Errorf("no NSB_A_PAYLOAD of %d bytes among the mutated attributes", want)
		}
	}
	if !nested || !lying {
		t.Errorf("NLA_F_NESTED seen %v, malformed attributes seen %v; want both", nested, lying)
	}
}

func TestCheckDatagram(t *testing.T) {
	const inum = 4026531840
	errMsg := func(errno unix.Errno) []byte {
		b := appendHdr(nil, nlHdrLen+4+nlHdrLen, unix.NLMSG_ERROR, 0, 1)
		b = ne.AppendUint32(b, uint32(-int32(errno)))
		return appendHdr(b, 20, family.MsgEcho, unix.NLM_F_REQUEST, 1)
	}
	reply := func(typ uint16, version byte, attrs []byte) []byte {
		b := appendHdr(nil, uint32(reqHdrLen+len(attrs)), typ, 0, 1)
		return append(appendFamHdr(b, version, 0, 0), attrs...)
	}
	inumAttr := func(v uint32) []byte { return appendAttr(nil, 8, family.AttrNetnsInum, u32(v)) }
	for _, tc := range []struct {
		name    string
		b       []byte
		cross   bool
		wantErr bool
	}{
		{"ack", errMsg(0), false, false},
		{"EINVAL", errMsg(unix.EINVAL), false, false},
		{"EAGAIN", errMsg(unix.EAGAIN), false, false},
		{"ENOMEM", errMsg(unix.ENOMEM), false, true},
		{"EMSGSIZE", errMsg(unix.EMSGSIZE), false, true},
		{"echo in its namespace", reply(family.MsgEcho, 1, inumAttr(inum)), false, false},
		{"echo naming another namespace", reply(family.MsgEcho, 1, inumAttr(inum+1)), false, true},
		{"event from another namespace by nsid", reply(family.MsgEvent, 1, inumAttr(inum+1)), true, false},
		{"publish reply without a namespace", reply(family.MsgPublish, 1, appendAttr(nil, 8, family.AttrGroup, u32(3))), false, false},
		{"wrong version", reply(family.MsgStats, 2, nil), false, true},
		{"NLMSG_DONE", reply(unix.NLMSG_DONE, 1, nil), false, true},
		{"two messages", append(errMsg(0), reply(family.MsgEcho, 1, inumAttr(inum))...), false, false},
		{"trailing bytes", append(errMsg(0), 1, 2, 3), false, true},
		{"nlmsg_len beyond the end", errMsg(0)[:20], false, true},
		{"malformed attributes", reply(family.MsgEcho, 1, []byte{2, 0, 5, 0}), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkDatagram(tc.b, inum, tc.cross)
			if (err != nil) != tc.wantErr {
				t.Errorf("checkDatagram(% x) = %v, want error %v", tc.b, err, tc.wantErr)
			}
		})
	}
}

func TestRecordText(t *testing.T) {
	rec := []byte("4,1234,5678901,-;BUG: KASAN: slab-out-of-bounds in nsb_echo+0x1/0x2 [nsbroker]\n SUBSYSTEM=x\n")
	if got, want := recordText(rec), "BUG: KASAN: slab-out-of-bounds in nsb_echo+0x1/0x2 [nsbroker]"; got != want {
		t.Errorf("recordText = %q, want %q", got, want)
	}
}

func TestReportPatternAndTIDs(t *testing.T) {
	for _, tc := range []struct {
		lines  []string
		report bool
		tids   []int
	}{
		{[]string{"BUG: KASAN: stack-out-of-bounds in nsb_echo+0x2a1/0x5c0 [nsbroker]",
			"Write of size 17 at addr ffff88800a1cf9f0 by task nlfuzz.test/214"}, true, []int{214}},
		{[]string{"UBSAN: array-index-out-of-bounds in /tmp/plant/kmod/netlink.c:170:32",
			"CPU: 1 PID: 97 Comm: nlfuzz.test Not tainted 6.1.192-nsb-debug #1"}, true, []int{97}},
		{[]string{"WARNING: CPU: 0 PID: 51 at net/netlink/af_netlink.c:1 x+0x1/0x2"}, true, []int{51}},
		{[]string{"WARNING: possible circular locking dependency detected",
			"nlfuzz.test/88 is trying to acquire lock:"}, true, []int{88}},
		{[]string{"netlink: 'nlfuzz.test': attribute type 3 has an invalid length."}, false, nil},
		{[]string{"netlink: 8 bytes leftover after parsing attributes in process `nlfuzz.test'."}, false, nil},
	} {
		if got := reportPattern.MatchString(tc.lines[0]); got != tc.report {
			t.Errorf("%q: report %v, want %v", tc.lines[0], got, tc.report)
		}
		if got := reportTIDs(tc.lines); !slices.Equal(got, tc.tids) {
			t.Errorf("%q: threads %v, want %v", tc.lines, got, tc.tids)
		}
	}
}

// TestRequests checks the count of what the module is handed against
// hand-made datagrams, the way netlink_rcv_skb() walks them.
func TestRequests(t *testing.T) {
	req := func(typ, flags uint16, payload int) []byte {
		return pad4(append(appendHdr(nil, uint32(nlHdrLen+payload), typ, flags, 1), make([]byte, payload)...))
	}
	echo := req(family.MsgEcho, unix.NLM_F_REQUEST, 4)
	for _, c := range []struct {
		name            string
		data            []byte
		walked, handled int
	}{
		{"empty", nil, 0, 0},
		{"one request", echo, 1, 1},
		{"three requests", slices.Concat(echo, echo, echo), 3, 3},
		{"not a request", req(family.MsgEcho, unix.NLM_F_ACK, 4), 1, 0},
		{"control type", req(unix.NLMSG_NOOP, unix.NLM_F_REQUEST, 0), 1, 0},
		{"short tail", slices.Concat(echo, echo[:nlHdrLen-1]), 1, 1},
		{"nlmsg_len beyond the datagram", slices.Concat(echo, appendHdr(nil, 1000, family.MsgEcho, unix.NLM_F_REQUEST, 2), echo), 1, 1},
		{"nlmsg_len below a header", slices.Concat(appendHdr(nil, 8, family.MsgEcho, unix.NLM_F_REQUEST, 2), echo), 0, 0},
		{"unaligned last", slices.Concat(echo, appendHdr(nil, nlHdrLen+1, family.MsgStats, unix.NLM_F_REQUEST, 2), []byte{0}), 2, 2},
	} {
		walked, handled := requests(c.data)
		if walked != c.walked || handled != c.handled {
			t.Errorf("%s: walked %d, handled %d; want %d, %d", c.name, walked, handled, c.walked, c.handled)
		}
	}
}

// goodSize is NLMSG_GOODSIZE on x86-64: longer datagrams are vmalloc'ed.
const goodSize = 4096 - 320

// TestGeneratorBatches checks that batches carry many requests each and
// that few datagrams take the costly vmalloc path: the fuzzer's rate
// depends on both.
func TestGeneratorBatches(t *testing.T) {
	const n = 5000
	g := newGenerator(3, 0)
	var datagrams, handled, large int
	for range n {
		k, d := g.next()
		if len(d) > goodSize {
			large++
		}
		if k != kindMulti {
			continue
		}
		_, h := requests(d)
		datagrams++
		handled += h
	}
	t.Logf("%d of %d datagrams longer than NLMSG_GOODSIZE", large, n)
	if large == 0 || large > n*4/100 {
		t.Errorf("%d of %d datagrams longer than %d bytes, want some but at most 4%%", large, n, goodSize)
	}
	mean := float64(handled) / float64(datagrams)
	t.Logf("%d batches, %.1f requests each on average", datagrams, mean)
	if mean < 10 {
		t.Errorf("batches hand the module %.1f requests each on average, want at least 10", mean)
	}
}

// TestOpenSockUnprivileged opens sockets with every option the generator
// draws, as nobody, on a routing socket: options the kernel refuses an
// unprivileged caller must not fail the socket (a CI run's unprivileged
// sender once stopped the fuzzer on NETLINK_LISTEN_ALL_NSID's EPERM).
func TestOpenSockUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop privileges on one thread")
	}
	refused := make(map[string]int)
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked: once it is nobody, it must exit with
		// this goroutine instead of going back to the runtime.
		runtime.LockOSThread()
		if err := dropPrivileges(); err != nil {
			errc <- err
			return
		}
		for seed := range uint64(300) {
			s, err := openSock(unix.NETLINK_ROUTE, rand.New(rand.NewPCG(seed, 7)))
			if err != nil {
				errc <- fmt.Errorf("seed %d: %w", seed, err)
				return
			}
			unix.Close(s.fd)
			for _, o := range strings.Split(s.opts, ",") {
				if strings.HasSuffix(o, "(refused)") {
					refused[o]++
				}
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if refused["listen_all_nsid(refused)"] == 0 {
		t.Errorf("300 sockets never tried NETLINK_LISTEN_ALL_NSID as nobody: %v", refused)
	}
}
