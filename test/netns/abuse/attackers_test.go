package abuse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The attacker side of the TestIntegrationAttack* tests: this test binary
// started again by startAttacker, as uid and gid 65534 inside a tenant
// namespace, with the attack named in its environment. It reaches nothing
// but the namespace's @nsbroker, says "attack-ready ..." on its standard
// output once the attack is established, and then holds everything it
// opened until it is killed.

// Environment of an attacker process.
const (
	envAttack = "NSB_ATTACK"     // which attack: one of the attack* constants
	envCount  = "NSB_ATTACK_N"   // how many (connections, streams), where the attack has a count
	envFor    = "NSB_ATTACK_FOR" // how long the attack may keep opening or sending (a duration)
)

// The attacks.
const (
	attackHeaderFlood    = "header-flood"
	attackAcceptEncoding = "accept-encoding"
	attackConnections    = "connections"
	attackWatchStreams   = "watch-streams"
	attackRPCFlood       = "rpc-flood"
	attackStuck          = "stuck-subscribers"
	attackSubscribers    = "subscribers"
)

// readyPrefix starts the line an attacker writes once its attack is
// established.
const readyPrefix = "attack-ready "

const (
	echoPath      = "/nsbroker.v1.Broker/Echo"
	watchPath     = "/nsbroker.v1.Broker/WatchNamespaces"
	subscribePath = "/nsbroker.v1.Broker/Subscribe"
)

// TestAttackerHelper is not a test: it is the attacker process that the
// attack tests start. Run directly, it skips.
func TestAttackerHelper(t *testing.T) {
	kind := os.Getenv(envAttack)
	if kind == "" {
		t.Skip("the attacker process of the TestIntegrationAttack* tests; runs only when they start it")
	}
	if err := runAttacker(kind); err != nil {
		fmt.Fprintf(os.Stderr, "attacker %s: %v\n", kind, err)
		os.Exit(1)
	}
}

func runAttacker(kind string) error {
	if uid, gid := os.Getuid(), os.Getgid(); uid != nobody || gid != nobody {
		return fmt.Errorf("running as uid %d gid %d, want %d", uid, gid, nobody)
	}
	// As high as the hard limit lets an unprivileged process go (the Go
	// runtime already does this; said here so the attack does not depend
	// on it).
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	count, _ := strconv.Atoi(os.Getenv(envCount))
	dur, err := time.ParseDuration(os.Getenv(envFor))
	if err != nil {
		return fmt.Errorf("%s: %v", envFor, err)
	}
	deadline := time.Now().Add(dur)
	switch kind {
	case attackHeaderFlood:
		err = headerFlood(deadline)
	case attackAcceptEncoding:
		err = acceptEncodingFlood(deadline)
	case attackConnections:
		err = holdConnections(count, deadline)
	case attackWatchStreams:
		err = holdWatches(count, deadline)
	case attackRPCFlood:
		err = rpcFlood(count, deadline)
	case attackStuck:
		err = stuckSubscribers(count, deadline)
	case attackSubscribers:
		err = holdSubscribers(count, deadline)
	default:
		err = fmt.Errorf("unknown attack %q", kind)
	}
	if err != nil {
		return err
	}
	for { // hold it all until killed
		time.Sleep(time.Hour)
	}
}

func ready(format string, args ...any) {
	fmt.Printf(readyPrefix+format+"\n", args...)
}

// dialNsbroker connects to @nsbroker in this process's namespace, trying
// again while the listener's backlog is full, until deadline.
func dialNsbroker(deadline time.Time) (net.Conn, error) {
	for {
		c, err := net.Dial("unix", "@nsbroker")
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// h2conn is a bare HTTP/2 client connection to the daemon: it writes
// whatever header blocks it is given, as a hostile client can, without
// grpc-go's client-side checks.
type h2conn struct {
	conn net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	next uint32 // the next stream id
}

// dialH2 connects, writes the client preface and a SETTINGS frame.
func dialH2(deadline time.Time, settings ...http2.Setting) (*h2conn, error) {
	c, err := dialNsbroker(deadline)
	if err != nil {
		return nil, err
	}
	h := &h2conn{conn: c, fr: http2.NewFramer(c, c), next: 1}
	h.enc = hpack.NewEncoder(&h.hbuf)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		c.Close()
		return nil, err
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		c.Close()
		return nil, err
	}
	return h, nil
}

// discard reads and drops everything the server sends.
func (h *h2conn) discard() { go io.Copy(io.Discard, h.conn) }

// request opens a stream to path with extra header fields after gRPC's,
// split into HEADERS and CONTINUATION frames of at most the default
// frame size. With a body, it sends body as one gRPC message and ends the
// stream; without, the stream stays open and the server waits for its
// request.
func (h *h2conn) request(path string, extra []hpack.HeaderField, body []byte) error {
	h.hbuf.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"},
		{Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: "nsbroker"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "te", Value: "trailers"},
	} {
		h.enc.WriteField(f)
	}
	writeFields(h.enc, &h.hbuf, extra)
	const maxFrame = 16384
	block := h.hbuf.Bytes()
	id := h.next
	h.next += 2
	n := min(len(block), maxFrame)
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:n], EndHeaders: n == len(block)}); err != nil {
		return err
	}
	for rest := block[n:]; len(rest) > 0; rest = rest[n:] {
		n = min(len(rest), maxFrame)
		if err := h.fr.WriteContinuation(id, n == len(rest), rest[:n]); err != nil {
			return err
		}
	}
	if body == nil {
		return nil
	}
	msg := make([]byte, 5+len(body))
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(body)))
	copy(msg[5:], body)
	return h.fr.WriteData(id, true, msg)
}

// writeFields HPACK-encodes fields into buf, which enc writes to, as
// enc.WriteField would one after another, at the cost of one WriteField
// per run of equal fields rather than one per field: the encoder hashes
// each field's value to look it up, which for the header floods'
// thousands of 2-3 KB values costs the attacker far more CPU than the
// bytes it sends. A field's second occurrence in a run is written as an
// indexed field or a literal not indexed (RFC 7541, section 6), neither
// of which changes the encoder's state, so the rest of the run repeats
// those bytes.
func writeFields(enc *hpack.Encoder, buf *bytes.Buffer, fields []hpack.HeaderField) {
	for i := 0; i < len(fields); {
		run := 1
		for i+run < len(fields) && fields[i+run] == fields[i] {
			run++
		}
		enc.WriteField(fields[i])
		if run > 1 {
			start := buf.Len()
			enc.WriteField(fields[i])
			again := bytes.Clone(buf.Bytes()[start:])
			for range run - 2 {
				buf.Write(again)
			}
		}
		i += run
	}
}

// answers reads frames until n streams have response headers or ended
// without them (a refusal), or deadline passes; it returns how many were
// accepted and how many refused.
func (h *h2conn) answers(n int, deadline time.Time) (accepted, refused int, err error) {
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.conn.SetReadDeadline(deadline)
	defer h.conn.SetReadDeadline(time.Time{})
	seen := map[uint32]bool{}
	for len(seen) < n {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return accepted, refused, err
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if seen[f.StreamID] {
				continue // trailers
			}
			seen[f.StreamID] = true
			if f.PseudoValue("status") == "200" && !hasField(f, "grpc-status") {
				accepted++
			} else {
				refused++
			}
		case *http2.RSTStreamFrame:
			if !seen[f.StreamID] {
				seen[f.StreamID] = true
				refused++
			}
		case *http2.GoAwayFrame:
			return accepted, refused, fmt.Errorf("GOAWAY %v", f.ErrCode)
		}
	}
	return accepted, refused, nil
}

// headerFlood opens a connection every 250 ms, each with 20 Echo streams
// whose header block repeats one HPACK-indexed binary header 4,100
// times: about 7 KB on the wire per stream, which the server decodes into
// 4,100 values of 2 KB each. The streams never send their request, so the
// server holds what it decoded.
func headerFlood(deadline time.Time) error {
	const (
		streams = 20
		repeats = 4100
		rounds  = 100
	)
	value := strings.Repeat("QUFB", 725) // 2,900 base64 characters: 2,175 bytes decoded
	fields := make([]hpack.HeaderField, repeats)
	for i := range fields {
		fields[i] = hpack.HeaderField{Name: "x-a-bin", Value: value}
	}
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for round := 0; round < rounds && time.Now().Before(deadline); round++ {
		h, err := dialH2(deadline)
		if err != nil {
			failed.Add(1)
			time.Sleep(250 * time.Millisecond)
			continue
		}
		h.discard()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range streams {
				if err := h.request(echoPath, fields, nil); err != nil {
					failed.Add(1)
					return
				}
				sent.Add(1)
			}
		}()
		if round == 0 {
			ready("header flood: %d streams of %d repeated x-a-bin headers per connection, a connection every 250 ms", streams, repeats)
		}
		time.Sleep(250 * time.Millisecond)
	}
	wg.Wait()
	fmt.Printf("header flood: %d streams sent, %d connections or streams failed\n", sent.Load(), failed.Load())
	return nil
}

// acceptEncodingFlood sends requests whose grpc-accept-encoding header
// repeats one HPACK-indexed 3,000-byte value 3,500 times (about 6.5 KB on
// the wire), on 4 connections, one more request per connection every 2
// seconds.
func acceptEncodingFlood(deadline time.Time) error {
	const (
		conns   = 4
		repeats = 3500
		every   = 2 * time.Second
	)
	value := strings.Repeat("x", 3000)
	fields := make([]hpack.HeaderField, repeats)
	for i := range fields {
		fields[i] = hpack.HeaderField{Name: "grpc-accept-encoding", Value: value}
	}
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		h, err := dialH2(deadline)
		if err != nil {
			return err
		}
		h.discard()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := h.request(echoPath, fields, nil); err != nil {
					failed.Add(1)
					return
				}
				sent.Add(1)
				time.Sleep(every)
			}
		}()
	}
	ready("accept-encoding flood: %d connections, %d repeated values per request, a request per connection every %v", conns, repeats, every)
	wg.Wait()
	fmt.Printf("accept-encoding flood: %d requests sent, %d connections failed\n", sent.Load(), failed.Load())
	return nil
}

// holdConnections opens n connections, each with the HTTP/2 preface and
// SETTINGS so that the server sets up a full transport for it, and holds
// them. 16 goroutines dial at once.
func holdConnections(n int, deadline time.Time) error {
	const dialers = 16
	hello := []byte(http2.ClientPreface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00") // preface, empty SETTINGS
	var (
		mu      sync.Mutex // guards the fields below
		held    []net.Conn
		failed  int
		lastErr error
	)
	var wg sync.WaitGroup
	var want atomic.Int64
	want.Store(int64(n))
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for want.Add(-1) >= 0 && time.Now().Before(deadline) {
				c, err := dialNsbroker(deadline)
				if err == nil {
					if _, err = c.Write(hello); err != nil {
						c.Close()
					}
				}
				mu.Lock()
				if err != nil {
					failed++
					lastErr = err
				} else {
					held = append(held, c)
				}
				mu.Unlock()
				if errors.Is(err, syscall.EMFILE) {
					return // this process's own limit
				}
				if err != nil {
					want.Add(1) // try again
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	ready("connections: %d held of %d, %d attempts failed (last: %v)", len(held), n, failed, lastErr)
	return nil
}

// holdWatches opens n WatchNamespaces streams spread over 20 connections,
// reading (and dropping) what they are sent.
func holdWatches(n int, deadline time.Time) error {
	const conns = 20
	var opened atomic.Int64
	var lastErr atomic.Value
	var wg sync.WaitGroup
	for i := range conns {
		per := n / conns
		if i < n%conns {
			per++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := dialH2(deadline, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			if err == nil {
				err = h.fr.WriteWindowUpdate(0, 1<<30)
			}
			if err != nil {
				lastErr.Store(err.Error())
				return
			}
			h.discard()
			// Written in batches: a syscall per frame costs the
			// attacker more than the server.
			bw := bufio.NewWriterSize(h.conn, 64<<10)
			h.fr = http2.NewFramer(bw, h.conn)
			for j := range per {
				if err := h.request(watchPath, nil, []byte{}); err != nil {
					lastErr.Store(err.Error())
					return
				}
				if j%100 == 99 || j == per-1 {
					if err := bw.Flush(); err != nil {
						lastErr.Store(err.Error())
						return
					}
					opened.Add(int64(min(100, j%100+1)))
				}
			}
		}()
	}
	wg.Wait()
	ready("watch streams: %d of %d requested on %d connections (last error: %v)", opened.Load(), n, conns, lastErr.Load())
	return nil
}

// rpcFlood opens Echo rpcs as fast as it can write them, on conns
// connections, until deadline, and never stops for a refusal: a client
// that ignores RESOURCE_EXHAUSTED. A connection the server closes is
// dialled again.
func rpcFlood(conns int, deadline time.Time) error {
	body, err := proto.Marshal(&nsbrokerv1.EchoRequest{Payload: []byte("flood")})
	if err != nil {
		return err
	}
	var opened, dials, failed atomic.Int64
	var lastErr atomic.Value
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				h, err := dialH2(deadline, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
				if err != nil {
					failed.Add(1)
					lastErr.Store(err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				dials.Add(1)
				h.discard()
				bw := bufio.NewWriterSize(h.conn, 64<<10)
				h.fr = http2.NewFramer(bw, h.conn)
				for time.Now().Before(deadline) && h.next < 1<<30 {
					err := h.request(echoPath, nil, body)
					if err == nil && h.next%200 == 1 {
						err = bw.Flush()
					}
					if err != nil {
						lastErr.Store(err.Error())
						break
					}
					opened.Add(1)
				}
				h.conn.Close()
			}
		}()
	}
	ready("rpc flood: %d connections opening Echo rpcs without pause until %v", conns, deadline.Format(time.TimeOnly))
	wg.Wait()
	fmt.Printf("rpc flood: %d rpcs opened on %d connections, %d dials failed (last error: %v)\n", opened.Load(), dials.Load(), failed.Load(), lastErr.Load())
	return nil
}

// stuckSubscribers opens n Subscribe streams on one connection that never
// gives the server flow-control credit, so that nothing past the first
// 64 KiB reaches it: subscribers that never read. After each stream is
// answered, it publishes 300 payloads of 16 KiB to their group, through
// the daemon, so that each stream holds different events.
func stuckSubscribers(n int, deadline time.Time) error {
	const (
		publishes  = 300
		publishers = 4
		size       = 16 << 10
		group      = 1
	)
	h, err := dialH2(deadline)
	if err != nil {
		return err
	}
	req, err := proto.Marshal(&nsbrokerv1.SubscribeRequest{Groups: []uint32{group}})
	if err != nil {
		return err
	}
	answered := make(chan bool, n) // accepted or refused
	go func() {
		h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		seen := map[uint32]bool{}
		for {
			f, err := h.fr.ReadFrame() // frames, never WINDOW_UPDATE
			if err != nil {
				return
			}
			if f, ok := f.(*http2.MetaHeadersFrame); ok && !seen[f.StreamID] {
				seen[f.StreamID] = true
				answered <- f.PseudoValue("status") == "200" && !hasField(f, "grpc-status")
			}
		}
	}()

	conn, err := grpc.NewClient("passthrough:///nsbroker",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return dialNsbroker(deadline) }))
	if err != nil {
		return err
	}
	c := nsbrokerv1.NewBrokerClient(conn)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	payload := make([]byte, size)
	var accepted, refused, published int
	var lastErr error
	for range n {
		if err := h.request(subscribePath, nil, req); err != nil {
			lastErr = err
			break
		}
		select {
		case ok := <-answered:
			if ok {
				accepted++
			} else {
				refused++
			}
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			lastErr = ctx.Err()
			break
		}
		// On parallel streams, the faster to fill every queue.
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := publishStream(ctx, c, group, payload, publishes/publishers)
				mu.Lock()
				defer mu.Unlock()
				published += n
				if err != nil {
					lastErr = err
				}
			}()
		}
		wg.Wait()
		if lastErr != nil {
			break
		}
	}
	ready("stuck subscribers: %d accepted, %d refused; %d publishes of %d bytes (want %d); last error: %v",
		accepted, refused, published, size, n*publishes, lastErr)
	return nil
}

// publishStream publishes n payloads on one PublishStream and returns how
// many the daemon published.
func publishStream(ctx context.Context, c nsbrokerv1.BrokerClient, group uint32, payload []byte, n int) (int, error) {
	ps, err := c.PublishStream(ctx)
	if err != nil {
		return 0, err
	}
	for range n {
		if err := ps.Send(&nsbrokerv1.PublishRequest{Group: group, Payload: payload}); err != nil {
			break // CloseAndRecv has the status
		}
	}
	resp, err := ps.CloseAndRecv()
	return int(resp.GetPublished()), err
}

// holdSubscribers opens n Subscribe streams on one connection and keeps
// reading them, as n well-behaved subscribers of one pod would.
func holdSubscribers(n int, deadline time.Time) error {
	h, err := dialH2(deadline)
	if err != nil {
		return err
	}
	req, err := proto.Marshal(&nsbrokerv1.SubscribeRequest{Groups: []uint32{1}})
	if err != nil {
		return err
	}
	for range n {
		if err := h.request(subscribePath, nil, req); err != nil {
			return err
		}
	}
	accepted, refused, err := h.answers(n, deadline)
	ready("subscribers: %d accepted, %d refused (%v)", accepted, refused, err)
	go func() {
		for {
			if _, err := h.fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	return nil
}

// hasField reports whether a header block has a regular field name: a
// grpc-status in the first block of a stream is a trailers-only refusal.
func hasField(f *http2.MetaHeadersFrame, name string) bool {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return true
		}
	}
	return false
}

// procIDs returns the real, effective, saved and filesystem uids (or
// gids, with field "Gid") of a process.
func procIDs(pid int, field string) ([]int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			var ids []int
			for _, w := range strings.Fields(rest) {
				id, err := strconv.Atoi(w)
				if err != nil {
					return nil, err
				}
				ids = append(ids, id)
			}
			return ids, nil
		}
	}
	return nil, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// TestWriteFieldsMatchesEncoder: the header floods' shortcut writes the
// bytes the encoder writes, field by field, for a first request on a
// connection and for the ones after it, and for fields too large to index.
func TestWriteFieldsMatchesEncoder(t *testing.T) {
	big := hpack.HeaderField{Name: "x-a-bin", Value: strings.Repeat("QUFB", 725)}
	huge := hpack.HeaderField{Name: "x-b", Value: strings.Repeat("y", 5000)} // over the table's 4,096 bytes
	small := hpack.HeaderField{Name: "x-c", Value: "z"}
	requests := [][]hpack.HeaderField{
		{small, big, big, big, big, small, small, huge, huge, huge, big},
		slices.Repeat([]hpack.HeaderField{big}, 100),
		{huge, huge, small},
		{big},
	}
	var want, got bytes.Buffer
	wantEnc, gotEnc := hpack.NewEncoder(&want), hpack.NewEncoder(&got)
	for i, fields := range requests {
		want.Reset()
		got.Reset()
		for _, f := range fields {
			wantEnc.WriteField(f)
		}
		writeFields(gotEnc, &got, fields)
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("request %d: writeFields wrote %d bytes, the encoder %d; want the same bytes", i, got.Len(), want.Len())
		}
	}
}
