package nlfuzz

import (
	"math/rand/v2"

	"github.com/nsbroker/nsbroker/family"
	"golang.org/x/sys/unix"
)

// kind is what a fuzzed datagram is made of; the run counts them.
type kind int

const (
	kindValid  kind = iota // well-formed requests
	kindAttrs              // valid headers around mutated attributes
	kindHeader             // a mutated netlink or family header
	kindMulti              // several messages in one datagram
	kindRaw                // random bytes
	numKinds
)

var kindNames = [numKinds]string{"valid", "attrs", "header", "multi", "raw"}

func (k kind) String() string { return kindNames[k] }

// kindWeights: how often each kind is drawn, out of their sum. Mutated
// attributes get most: that is where the module's own parsing runs.
// Batches get the largest share of datagrams: each costs the module as
// many requests as it holds, while a datagram's fixed costs (the send,
// the answers' receive loop, the kernel log read) are paid once.
var kindWeights = [numKinds]int{kindValid: 5, kindAttrs: 25, kindHeader: 12, kindMulti: 50, kindRaw: 8}

// Values at the edges of what the module accepts.
var (
	edgeGroups = []uint32{0, 1, 2, family.Groups - 1, family.Groups, family.Groups + 1,
		64, 1 << 31, 1<<32 - 1}
	// Payload lengths around the limit and around the point where netlink
	// switches from a kmalloc'ed to a vmalloc'ed request buffer.
	edgePayloads = []int{0, 1, 3, 4, 5, 7, 8, 9, 63, 64, 65, 3900, 4000, 4076, 4077, 4096,
		family.PayloadMax - 4, family.PayloadMax - 1, family.PayloadMax,
		family.PayloadMax + 1, family.PayloadMax + 4}
	edgeAttrTypes = []uint16{family.AttrUnspec, family.AttrPad, family.AttrMax, family.AttrMax + 1,
		nlaTypeMask, nlaTypeMask - 1, 0xffff}
	requestTypes = []uint16{family.MsgEcho, family.MsgPublish, family.MsgStats, family.MsgGroups}
)

// generator makes datagrams from one deterministic random stream: the
// same seed and stream give the same datagrams in the same order.
type generator struct {
	r   *rand.Rand
	seq uint32
	// framed: the message being made keeps a true nlmsg_len and its
	// whole length, so that the kernel walks on to the next one.
	framed bool
}

func newGenerator(seed, stream uint64) *generator {
	return &generator{r: rand.New(rand.NewPCG(seed, stream))}
}

// maxDatagram bounds a datagram: far below the default send buffer
// (212992 bytes less 32), and an NLMSG_ERROR quoting it fits the senders'
// receive buffer.
const maxDatagram = 1 << 16

// next returns the next datagram and its kind.
func (g *generator) next() (kind, []byte) {
	for {
		k, b := g.draw()
		if len(b) <= maxDatagram {
			return k, b
		}
	}
}

func (g *generator) draw() (kind, []byte) {
	k := g.pickKind()
	var b []byte
	switch k {
	case kindValid:
		b = g.valid(nil)
	case kindAttrs:
		b = g.mutatedAttrs(nil)
	case kindHeader:
		b = g.mutatedHeader(nil)
	case kindMulti:
		b = g.multi()
	case kindRaw:
		b = g.raw()
	}
	return k, b
}

func (g *generator) pickKind() kind {
	total := 0
	for _, w := range kindWeights {
		total += w
	}
	n := g.r.IntN(total)
	for k, w := range kindWeights {
		if n < w {
			return kind(k)
		}
		n -= w
	}
	panic("unreachable")
}

func (g *generator) chance(percent int) bool { return g.r.IntN(100) < percent }

func (g *generator) nextSeq() uint32 {
	g.seq++
	return g.seq
}

// bytes returns n random bytes; long ones repeat a random word, which is
// all the kernel can tell apart and much cheaper to make.
func (g *generator) bytes(n int) []byte {
	b := make([]byte, n)
	if n <= 64 {
		for i := range b {
			b[i] = byte(g.r.Uint32())
		}
		return b
	}
	var word [8]byte
	ne.PutUint64(word[:], g.r.Uint64())
	for i := range b {
		b[i] = word[i%8]
	}
	return b
}

// message returns one message: a netlink header whose nlmsg_len is
// right, the family header and the attributes, padded to 4 bytes.
func (g *generator) message(b []byte, typ, flags uint16, fam, attrs []byte) []byte {
	b = appendHdr(b, uint32(nlHdrLen+len(fam)+len(attrs)), typ, flags, g.nextSeq())
	b = append(b, fam...)
	return pad4(append(b, attrs...))
}

func (g *generator) requestFlags() uint16 {
	if g.chance(50) {
		return unix.NLM_F_REQUEST | unix.NLM_F_ACK
	}
	return unix.NLM_F_REQUEST
}

func validFamHdr() []byte { return appendFamHdr(nil, family.Version, 0, 0) }

// payloadLen draws a payload length. Few are large: a datagram longer
// than NLMSG_GOODSIZE takes netlink's vmalloc path, which is worth
// reaching but costs a debug kernel (KASAN's vmalloc shadow, TLB
// shootdowns between emulated CPUs) about as much as a hundred small
// requests. Batches keep to small payloads for that reason.
func (g *generator) payloadLen() int {
	n := g.r.IntN(100)
	switch {
	case g.framed && n < 85:
		return g.r.IntN(65)
	case g.framed:
		return g.r.IntN(257)
	case n < 50:
		return g.r.IntN(65)
	case n < 62:
		return edgePayloads[g.r.IntN(len(edgePayloads))]
	case n < 98:
		return g.r.IntN(1025)
	default:
		return g.r.IntN(family.PayloadMax + 64)
	}
}

func (g *generator) group() uint32 {
	if g.chance(60) {
		return edgeGroups[g.r.IntN(len(edgeGroups))]
	}
	if g.chance(50) {
		return 1 + g.r.Uint32N(family.Groups)
	}
	return g.r.Uint32()
}

func u32(v uint32) []byte { return ne.AppendUint32(nil, v) }

// valid appends one well-formed request.
func (g *generator) valid(b []byte) []byte {
	typ := requestTypes[g.r.IntN(len(requestTypes))]
	var attrs []byte
	switch typ {
	case family.MsgEcho:
		if g.chance(80) {
			p := g.bytes(min(g.payloadLen(), family.PayloadMax))
			attrs = appendAttr(attrs, uint16(nlaHdrLen+len(p)), family.AttrPayload, p)
		}
	case family.MsgPublish:
		attrs = appendAttr(attrs, nlaHdrLen+4, family.AttrGroup, u32(1+g.r.Uint32N(family.Groups)))
		if g.chance(70) {
			p := g.bytes(g.r.IntN(129))
			attrs = appendAttr(attrs, uint16(nlaHdrLen+len(p)), family.AttrPayload, p)
		}
	}
	return g.message(b, typ, g.requestFlags(), validFamHdr(), attrs)
}

// mutatedAttrs appends a request with valid headers and mutated
// attributes, sometimes cut short.
func (g *generator) mutatedAttrs(b []byte) []byte {
	typ := requestTypes[g.r.IntN(len(requestTypes))]
	var attrs []byte
	for range 1 + g.r.IntN(5) {
		attrs = g.attr(attrs, 0)
	}
	start := len(b)
	b = g.message(b, typ, g.requestFlags(), validFamHdr(), attrs)
	if !g.framed && g.chance(15) {
		b = g.truncate(b, start)
	}
	return b
}

// attr appends one attribute, well-formed or not; depth bounds nesting.
func (g *generator) attr(b []byte, depth int) []byte {
	switch n := g.r.IntN(100); {
	case n < 30: // a payload of an interesting length; short when nested
		size := g.payloadLen()
		if depth > 0 {
			size = g.r.IntN(65)
		}
		p := g.bytes(size)
		return appendAttr(b, uint16(min(nlaHdrLen+len(p), 0xffff)), g.flagged(family.AttrPayload), p)
	case n < 50: // a group of an interesting value or size
		v := u32(g.group())
		switch g.r.IntN(8) {
		case 0:
			v = nil
		case 1:
			v = v[:2]
		case 2:
			v = append(v, 0, 0, 0, 0)
		}
		return appendAttr(b, uint16(nlaHdrLen+len(v)), g.flagged(family.AttrGroup), v)
	case n < 65: // any type, any short value
		v := g.bytes(g.r.IntN(17))
		return appendAttr(b, uint16(nlaHdrLen+len(v)), g.attrType(), v)
	case n < 75: // nested garbage
		var inner []byte
		if depth < 2 {
			for range g.r.IntN(4) {
				inner = g.attr(inner, depth+1)
			}
		} else {
			inner = g.bytes(g.r.IntN(16))
		}
		return appendAttr(b, uint16(min(nlaHdrLen+len(inner), 0xffff)), g.attrType()|unix.NLA_F_NESTED, inner)
	case n < 85: // a lying nla_len
		v := g.bytes(g.r.IntN(24))
		return appendAttr(b, g.lyingLen(nlaHdrLen+len(v)), g.attrType(), v)
	case n < 95 && len(b) > 0: // a copy of the attribute before
		return append(b, g.lastAttr(b)...)
	default: // bare bytes where an attribute should be
		return append(b, g.bytes(1+g.r.IntN(7))...)
	}
}

// flagged sets NLA_F_NESTED or NLA_F_NET_BYTEORDER on typ now and then.
func (g *generator) flagged(typ uint16) uint16 {
	switch g.r.IntN(20) {
	case 0:
		return typ | unix.NLA_F_NESTED
	case 1:
		return typ | unix.NLA_F_NET_BYTEORDER
	}
	return typ
}

func (g *generator) attrType() uint16 {
	switch n := g.r.IntN(10); {
	case n < 4:
		return uint16(g.r.IntN(int(family.AttrMax) + 3))
	case n < 7:
		return edgeAttrTypes[g.r.IntN(len(edgeAttrTypes))]
	default:
		return uint16(g.r.Uint32())
	}
}

// lyingLen returns an nla_len or nlmsg_len near, but not always at, the
// true length n.
func (g *generator) lyingLen(n int) uint16 {
	switch g.r.IntN(6) {
	case 0:
		return uint16(g.r.IntN(4)) // below a header
	case 1:
		return uint16(n - 1 - g.r.IntN(3))
	case 2:
		return uint16(n + 1 + g.r.IntN(8))
	case 3:
		return 0xffff
	case 4:
		return uint16(g.r.Uint32())
	}
	return uint16(n)
}

// lastAttr returns the attribute that starts where the chain of nla_len
// values from the start of b last led, or the last 8 bytes.
func (g *generator) lastAttr(b []byte) []byte {
	last, off := 0, 0
	for off+nlaHdrLen <= len(b) {
		n := align4(int(ne.Uint16(b[off : off+2])))
		if n < nlaHdrLen || off+n > len(b) {
			break
		}
		last = off
		off += n
	}
	if off == 0 {
		return b[max(0, len(b)-8):]
	}
	return b[last:off]
}

// truncate cuts the message that starts at b[start] short, keeping or
// fixing its nlmsg_len.
func (g *generator) truncate(b []byte, start int) []byte {
	msg := b[start:]
	cut := 1 + g.r.IntN(len(msg)-1)
	msg = msg[:cut]
	if g.chance(50) && cut >= 4 {
		ne.PutUint32(msg[0:4], uint32(cut))
	}
	return b[:start+cut]
}

// mutatedHeader appends a message whose netlink or family header is
// mutated: type, flags, version, header flags and reserved bits, a short
// family header, a lying nlmsg_len.
func (g *generator) mutatedHeader(b []byte) []byte {
	typ := requestTypes[g.r.IntN(len(requestTypes))]
	flags := g.requestFlags()
	fam := validFamHdr()
	switch g.r.IntN(7) {
	case 0:
		typ = g.msgType()
	case 1:
		flags = g.msgFlags()
	case 2:
		fam[0] = []byte{0, 2, 3, 0x7f, 0x80, 0xff}[g.r.IntN(6)]
	case 3:
		fam[1] = byte(1 + g.r.IntN(255))
	case 4:
		ne.PutUint16(fam[2:4], uint16(1+g.r.IntN(0xffff)))
	case 5:
		fam = fam[:g.r.IntN(family.HeaderLen)]
	case 6:
		typ, flags = g.msgType(), g.msgFlags()
		fam = g.bytes(g.r.IntN(9))
	}
	var attrs []byte
	if g.chance(60) {
		attrs = g.attr(nil, 0)
	}
	start := len(b)
	b = g.message(b, typ, flags, fam, attrs)
	if !g.framed && g.chance(25) {
		ne.PutUint32(b[start:start+4], uint32(g.lyingLen(len(b)-start)))
		if g.chance(20) {
			ne.PutUint32(b[start:start+4], g.r.Uint32())
		}
	}
	return b
}

func (g *generator) msgType() uint16 {
	switch n := g.r.IntN(10); {
	case n < 3:
		return uint16(g.r.IntN(int(family.MsgMax) + 4)) // control, reserved, ours, just above
	case n < 5:
		return family.MsgEvent
	case n < 7:
		return []uint16{unix.NLMSG_NOOP, unix.NLMSG_ERROR, unix.NLMSG_DONE, unix.NLMSG_OVERRUN,
			unix.NLMSG_MIN_TYPE - 1, 0x30, 0xffff}[g.r.IntN(7)]
	default:
		return uint16(g.r.Uint32())
	}
}

func (g *generator) msgFlags() uint16 {
	switch g.r.IntN(6) {
	case 0:
		return 0
	case 1:
		return unix.NLM_F_REQUEST | unix.NLM_F_DUMP
	case 2:
		return unix.NLM_F_REQUEST | unix.NLM_F_ECHO
	case 3:
		return unix.NLM_F_ACK
	case 4:
		return unix.NLM_F_REQUEST | 1<<(4+g.r.IntN(12))
	}
	return uint16(g.r.Uint32())
}

// Batches: up to maxBatch messages, ending early past batchBytes, which
// keeps most of them below NLMSG_GOODSIZE (see payloadLen).
const (
	maxBatch   = 32
	batchBytes = 2500
)

// multi is 2 to maxBatch messages of the other structured kinds in one
// datagram. The kernel walks them in order until a header's nlmsg_len
// does not fit (see requests), so only the last may be cut short or lie
// about its length.
func (g *generator) multi() []byte {
	var b []byte
	n := 2 + g.r.IntN(maxBatch-1)
	for i := range n {
		last := i == n-1 || len(b) > batchBytes
		g.framed = !last
		switch g.r.IntN(3) {
		case 0:
			b = g.valid(b)
		case 1:
			b = g.mutatedAttrs(b)
		default:
			b = g.mutatedHeader(b)
		}
		if last {
			break
		}
	}
	g.framed = false
	return b
}

// raw is random bytes: mostly short, sometimes behind a plausible netlink
// header so that they get past the first length check.
func (g *generator) raw() []byte {
	n := g.r.IntN(65)
	if g.chance(10) {
		n = g.r.IntN(4097)
	}
	if !g.chance(40) || n < reqHdrLen {
		return g.bytes(n)
	}
	rest := g.bytes(n - nlHdrLen)
	return append(appendHdr(nil, uint32(n), g.msgType(), g.msgFlags(), g.nextSeq()), rest...)
}
