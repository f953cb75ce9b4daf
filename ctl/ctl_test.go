package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

func TestUsageErrors(t *testing.T) {
	// Nothing listens there: a command that got as far as connecting would
	// exit 3, not 2.
	sock := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		args []string
		msg  string
	}{
		{nil, "nsbrokerctl: no command given"},
		{[]string{"frob"}, `nsbrokerctl: unknown command "frob"`},
		{[]string{"--bogus", "echo", "x"}, "nsbrokerctl: flag provided but not defined: -bogus"},
		{[]string{"ns"}, "nsbrokerctl: ns: ns needs a subcommand: list, get, attach, detach or watch"},
		{[]string{"ns", "frob"}, `nsbrokerctl: unknown command "ns frob"`},
		{[]string{"ns", "list", "extra"}, `nsbrokerctl: ns list: unexpected argument "extra"`},
		{[]string{"ns", "get", "a", "b"}, `nsbrokerctl: ns get: unexpected argument "b"`},
		{[]string{"ns", "attach"}, "nsbrokerctl: ns attach: want one or more REFs (NAME, name:NAME, path:PATH or pid:PID), got none"},
		{[]string{"ns", "attach", "--name", "x", "a", "b"}, "nsbrokerctl: ns attach: --name names one namespace; got 2 REFs"},
		{[]string{"ns", "attach", "pid:abc"}, `nsbrokerctl: ns attach: invalid namespace reference: "pid:abc": pid is not a number`},
		{[]string{"ns", "detach"}, "nsbrokerctl: ns detach: want exactly one NAME, got 0 arguments"},
		{[]string{"ns", "watch", "--count", "x"}, `nsbrokerctl: ns watch: invalid value "x" for flag -count: parse error`},
		{[]string{"echo"}, "nsbrokerctl: echo: PAYLOAD missing"},
		{[]string{"echo", "--frob", "x"}, "nsbrokerctl: echo: flag provided but not defined: -frob"},
		{[]string{"publish", "x"}, "nsbrokerctl: publish: want exactly one --group, got 0"},
		{[]string{"publish", "--group", "1,2", "x"}, "nsbrokerctl: publish: want exactly one --group, got 2"},
		{[]string{"publish", "--group", "one", "x"}, `nsbrokerctl: publish: invalid value "one" for flag -group: group "one" is not a number`},
		{[]string{"subscribe"}, "nsbrokerctl: subscribe: --group is required"},
		{[]string{"subscribe", "--group", "1", "x"}, `nsbrokerctl: subscribe: unexpected argument "x"`},
		{[]string{"stats", "x"}, `nsbrokerctl: stats: unexpected argument "x"`},
		{[]string{"echo", "--timeout", "soon", "x"}, `nsbrokerctl: echo: invalid value "soon" for flag -timeout: parse error`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := ctl(t, "", append([]string{"--socket", sock}, tt.args...)...)
			if r.code != ExitUsage || r.stdout != "" {
				t.Fatalf("got %v, want exit %d and no output", r, ExitUsage)
			}
			first, _, _ := strings.Cut(r.stderr, "\n")
			if first != tt.msg {
				t.Errorf("stderr starts with %q, want %q", first, tt.msg)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}} {
		r := ctl(t, "", args...)
		if r.code != ExitOK || !strings.HasPrefix(r.stdout, "Usage: nsbrokerctl [options] COMMAND") || r.stderr != "" {
			t.Errorf("%q: got %v, want exit 0 and the usage on stdout", args, r)
		}
		for _, cmd := range commands {
			if !strings.Contains(r.stdout, "\n  "+cmd.name+" ") {
				t.Errorf("%q: usage does not list %q", args, cmd.name)
			}
		}
	}
	r := ctl(t, "", "subscribe", "--help")
	if r.code != ExitOK || !strings.HasPrefix(r.stdout, "Usage: nsbrokerctl subscribe [--namespace N] --group G[,G...]") ||
		!strings.Contains(r.stdout, "\n  --count K\n") {
		t.Errorf("subscribe --help: got %v", r)
	}
}

func TestCannotConnect(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	ctl(t, "", "--socket", missing, "echo", "x").want(t, ExitConnect, "",
		"nsbrokerctl: cannot connect to "+missing+": connect: no such file or directory\n")

	notSocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctl(t, "", "--socket", notSocket, "ns", "list").want(t, ExitConnect, "",
		"nsbrokerctl: cannot connect to "+notSocket+": connect: connection refused\n")

	// A daemon refusing the peer (wrong uid on the admin socket) accepts
	// and closes at once.
	closing := filepath.Join(dir, "closing.sock")
	l, err := net.Listen("unix", closing)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctl(t, "", "--socket", closing, "stats").want(t, ExitConnect, "",
		"nsbrokerctl: cannot connect to "+closing+": the connection was closed before the daemon answered\n")

	// A peer that accepts and never answers: --timeout bounds the wait.
	silent := filepath.Join(dir, "silent.sock")
	sl, err := net.Listen("unix", silent)
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				close(held)
				return
			}
			held <- c
		}
	}()
	defer func() {
		sl.Close()
		for c := range held {
			c.Close()
		}
	}()
	ctl(t, "", "--socket", silent, "--timeout", "300ms", "ns", "list").want(t, ExitConnect, "",
		"nsbrokerctl: cannot connect to "+silent+": context deadline exceeded\n")

	ctl(t, "", "--local", "--local-socket", fmt.Sprintf("@nsbrokerctl-test-%d-none", os.Getpid()), "echo", "x").want(t, ExitConnect, "",
		fmt.Sprintf("nsbrokerctl: cannot connect to @nsbrokerctl-test-%d-none: connect: connection refused\n", os.Getpid()))
}

func TestEcho(t *testing.T) {
	f := &fakeBroker{}
	sock := serve(t, f)
	// Flags may follow the arguments; the arguments are joined as echo(1) does.
	ctl(t, "", "--socket", sock, "echo", "hello", "world", "--namespace", "red").want(t, ExitOK,
		"echo inode=4026532001 cookie=11 payload=\"hello world\"\n", "")
	ctl(t, "", "echo", "--socket", sock, "--json", "hi").want(t, ExitOK,
		`{"payload":"aGk=","netns_inode":4026532001,"netns_cookie":11}`+"\n", "")
	ctl(t, "", "--socket", sock, "echo", "--namespace", "x", "hi").want(t, ExitFailed, "",
		"nsbrokerctl: echo: not found: namespace \"x\" not attached\n")
	// After "--" everything is payload.
	ctl(t, "", "--socket", sock, "echo", "--", "--json").want(t, ExitOK,
		"echo inode=4026532001 cookie=11 payload=\"--json\"\n", "")

	want := []*nsbrokerv1.EchoRequest{
		{Namespace: "red", Payload: []byte("hello world")},
		{Payload: []byte("hi")},
		{Namespace: "x", Payload: []byte("hi")},
		{Payload: []byte("--json")},
	}
	var got []*nsbrokerv1.EchoRequest
	requests, _, _, _ := f.snapshot()
	for _, m := range requests {
		got = append(got, m.(*nsbrokerv1.EchoRequest))
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("echo requests (-want +got):\n%s", diff)
	}
}

func TestLocal(t *testing.T) {
	addr := fmt.Sprintf("@nsbrokerctl-test-%d", os.Getpid())
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, &fakeBroker{}, l)
	// --local wins over --socket.
	ctl(t, "", "--local", "--local-socket", addr, "--socket", "/nonexistent", "echo", "x").want(t, ExitOK,
		"echo inode=4026532001 cookie=11 payload=\"x\"\n", "")
}

func TestTimeout(t *testing.T) {
	sock := serve(t, &fakeBroker{blockEcho: true})
	start := time.Now()
	// The message is the client's own, or the server's reset of the
	// stream when that arrives first; the code is the same.
	r := ctl(t, "", "--socket", sock, "--timeout", "200ms", "echo", "x")
	if r.code != ExitFailed || r.stdout != "" || !strings.HasPrefix(r.stderr, "nsbrokerctl: echo: deadline exceeded: ") {
		t.Errorf("got exit %d, stdout %q, stderr %q; want exit %d, no output, stderr \"nsbrokerctl: echo: deadline exceeded: ...\"", r.code, r.stdout, r.stderr, ExitFailed)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v with --timeout 200ms", took)
	}
}

func TestPublishArgs(t *testing.T) {
	f := &fakeBroker{}
	sock := serve(t, f)
	ctl(t, "", "--socket", sock, "publish", "--group", "3", "a", "b").want(t, ExitOK,
		"published group=3 seq=1 listeners=true\npublished group=3 seq=2 listeners=true\n", "")
	ctl(t, "", "--socket", sock, "publish", "--group", "3", "--json", "--namespace", "red", "c").want(t, ExitOK,
		`{"group":3,"seq":3,"listeners":true}`+"\n", "")
	ctl(t, "", "--socket", sock, "publish", "--group", "33", "d").want(t, ExitFailed, "",
		"nsbrokerctl: publish: invalid argument: group out of range: 33, want 1..32\n")
	want := []*nsbrokerv1.PublishRequest{
		{Group: 3, Payload: []byte("a")},
		{Group: 3, Payload: []byte("b")},
		{Namespace: "red", Group: 3, Payload: []byte("c")},
		{Group: 33, Payload: []byte("d")},
	}
	var got []*nsbrokerv1.PublishRequest
	requests, streamed, _, _ := f.snapshot()
	for _, m := range requests {
		got = append(got, m.(*nsbrokerv1.PublishRequest))
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("publish requests (-want +got):\n%s", diff)
	}
	if len(streamed) != 0 {
		t.Errorf("payloads on the command line went through PublishStream: %v", streamed)
	}
}

func TestPublishStdin(t *testing.T) {
	f := &fakeBroker{}
	sock := serve(t, f)
	// One message per line; an empty line is an empty message; the last
	// line needs no newline.
	ctl(t, "a\nbb\n\nccc", "--socket", sock, "publish", "--namespace", "blue", "--group", "7").want(t, ExitOK,
		"published 4 group=7 last_seq=4\n", "")
	ctl(t, "x\n", "--socket", sock, "publish", "--group", "7", "--json", "-").want(t, ExitOK,
		`{"published":1,"last_seq":{"7":1}}`+"\n", "")
	want := []*nsbrokerv1.PublishRequest{
		{Namespace: "blue", Group: 7, Payload: []byte("a")},
		{Namespace: "blue", Group: 7, Payload: []byte("bb")},
		{Namespace: "blue", Group: 7},
		{Namespace: "blue", Group: 7, Payload: []byte("ccc")},
		{Group: 7, Payload: []byte("x")},
	}
	requests, streamed, _, _ := f.snapshot()
	if diff := cmp.Diff(want, streamed, protocmp.Transform()); diff != "" {
		t.Errorf("streamed requests (-want +got):\n%s", diff)
	}
	if len(requests) != 0 {
		t.Errorf("stdin went through unary rpcs: %v", requests)
	}
}

func TestPublishStdinFails(t *testing.T) {
	f := &fakeBroker{streamLimit: 2}
	sock := serve(t, f)
	lines := strings.Repeat("m\n", 1000)
	ctl(t, lines, "--socket", sock, "publish", "--group", "1").want(t, ExitFailed, "",
		"nsbrokerctl: publish: resource exhausted: publish rate limit reached\n")
	if _, streamed, _, _ := f.snapshot(); len(streamed) < 3 {
		t.Errorf("the daemon saw %d requests, want at least the 3 up to the failure", len(streamed))
	}
}

func subscribeItems() []*nsbrokerv1.SubscribeResponse {
	ts := timestamppb.New(time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC))
	ev := func(seq uint64, payload string) *nsbrokerv1.SubscribeResponse {
		return &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Event{Event: &nsbrokerv1.Event{
			Namespace: "red", Group: 2, Seq: seq, Payload: []byte(payload), NetnsInode: 4026532001,
			SenderPortid: 77, Timestamp: ts, Epoch: 1,
		}}}
	}
	gap := func(from, to uint64, r nsbrokerv1.LossReason) *nsbrokerv1.SubscribeResponse {
		return &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Gap{Gap: &nsbrokerv1.Gap{
			Namespace: "red", Group: 2, FromSeq: from, ToSeq: to, Reason: r,
		}}}
	}
	return []*nsbrokerv1.SubscribeResponse{
		ev(1, "one"),
		gap(2, 4, nsbrokerv1.LossReason_LOSS_REASON_QUEUE_FULL),
		ev(5, "five"),
		gap(6, 0, nsbrokerv1.LossReason_LOSS_REASON_RELEASED),
		ev(1, "again"),
		ev(2, "never printed"),
	}
}

func TestSubscribeCount(t *testing.T) {
	f := &fakeBroker{subscribeItems: subscribeItems()}
	sock := serve(t, f)
	// --count counts events, not gaps.
	ctl(t, "", "--socket", sock, "subscribe", "--namespace", "red", "--group", "2,1", "--group", "9", "--count", "3").want(t, ExitOK,
		`event ns=red group=2 seq=1 inode=4026532001 sender=77 epoch=1 time=2026-11-27T12:00:00.123456789Z payload="one"
gap ns=red group=2 seq=2-4 count=3 reason=queue_full
event ns=red group=2 seq=5 inode=4026532001 sender=77 epoch=1 time=2026-11-27T12:00:00.123456789Z payload="five"
gap ns=red group=2 seq=6- count=unknown reason=released
event ns=red group=2 seq=1 inode=4026532001 sender=77 epoch=1 time=2026-11-27T12:00:00.123456789Z payload="again"
`, "")
	want := &nsbrokerv1.SubscribeRequest{Namespace: "red", Groups: []uint32{2, 1, 9}}
	_, _, _, got := f.snapshot()
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("subscribe request (-want +got):\n%s", diff)
	}
}

// TestSubscribeResume: --resume GROUP:INSTANCE:SEQ becomes the request's
// resume points; a malformed one is a usage error.
func TestSubscribeResume(t *testing.T) {
	f := &fakeBroker{subscribeItems: subscribeItems()[:1]}
	sock := serve(t, f)
	if r := ctl(t, "", "--socket", sock, "subscribe", "--group", "2,3", "--resume", "2:0x1f:41", "--resume", "3:7:0", "--count", "1"); r.code != ExitOK {
		t.Fatalf("got %v, want exit 0", r)
	}
	want := &nsbrokerv1.SubscribeRequest{Groups: []uint32{2, 3}, Resume: []*nsbrokerv1.ResumePoint{
		{Group: 2, Instance: 0x1f, Seq: 41}, {Group: 3, Instance: 7}}}
	_, _, _, got := f.snapshot()
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("subscribe request (-want +got):\n%s", diff)
	}
	if r := ctl(t, "", "--socket", sock, "subscribe", "--group", "2", "--resume", "2:41"); r.code != ExitUsage {
		t.Fatalf("malformed --resume: got %v, want exit %d", r, ExitUsage)
	}
}

// --follow: the daemon cuts the stream (as when it restarts); nsbrokerctl
// subscribes again and prints a gap for what it missed meanwhile.
func TestSubscribeFollow(t *testing.T) {
	items := subscribeItems()
	shutdown := status.Error(codes.Unavailable, "server shutting down")
	// The second stream starts at seq 9: 6..8 were published meanwhile.
	nine := proto.Clone(items[2]).(*nsbrokerv1.SubscribeResponse)
	nine.GetEvent().Seq = 9
	f := &fakeBroker{subscribeItems: items[:3], subscribeEnd: shutdown, subscribeAgain: []*nsbrokerv1.SubscribeResponse{nine}}
	sock := serve(t, f)
	ctl(t, "", "--socket", sock, "subscribe", "--group", "2", "--follow", "--count", "3").want(t, ExitOK,
		`event ns=red group=2 seq=1 inode=4026532001 sender=77 epoch=1 time=2026-11-27T12:00:00.123456789Z payload="one"
gap ns=red group=2 seq=2-4 count=3 reason=queue_full
event ns=red group=2 seq=5 inode=4026532001 sender=77 epoch=1 time=2026-11-27T12:00:00.123456789Z payload="five"
gap ns=red group=2 seq=6-8 count=3 reason=reconnect
event ns=red group=2 seq=9 inode=4026532001 sender=77 epoch=1 time=2026-11-27T12:00:00.123456789Z payload="five"
`, "")
	f.mu.Lock()
	calls := f.subscribes
	f.mu.Unlock()
	if calls != 2 {
		t.Errorf("%d Subscribe calls, want 2", calls)
	}

	// Without --follow the stream's end is the command's.
	f = &fakeBroker{subscribeItems: items[:1], subscribeEnd: shutdown, subscribeAgain: items[2:3]}
	sock = serve(t, f)
	ctl(t, "", "--socket", sock, "subscribe", "--group", "2", "--json").want(t, ExitFailed,
		`{"event":{"namespace":"red","group":2,"seq":1,"payload":"b25l","netns_inode":4026532001,"sender_portid":77,"timestamp":"2026-11-27T12:00:00.123456789Z","epoch":1,"instance":0}}
`, "nsbrokerctl: subscribe: unavailable: server shutting down\n")
}

func TestSubscribeJSON(t *testing.T) {
	sock := serve(t, &fakeBroker{subscribeItems: subscribeItems()[:2]})
	ctl(t, "", "--socket", sock, "subscribe", "--group", "2", "--json", "--count", "1").want(t, ExitOK,
		`{"event":{"namespace":"red","group":2,"seq":1,"payload":"b25l","netns_inode":4026532001,"sender_portid":77,"timestamp":"2026-11-27T12:00:00.123456789Z","epoch":1,"instance":0}}`+"\n", "")
	// Without --count the stream runs until it ends; here the daemon
	// ends it as when the namespace goes away.
	f := &fakeBroker{subscribeItems: subscribeItems()[:2], subscribeEnd: status.Error(codes.Aborted, `namespace "red" gone: name unlinked`)}
	sock = serve(t, f)
	r := ctl(t, "", "--socket", sock, "subscribe", "--group", "2", "--json")
	r.want(t, ExitFailed,
		`{"event":{"namespace":"red","group":2,"seq":1,"payload":"b25l","netns_inode":4026532001,"sender_portid":77,"timestamp":"2026-11-27T12:00:00.123456789Z","epoch":1,"instance":0}}
{"gap":{"namespace":"red","group":2,"from_seq":2,"to_seq":4,"reason":"queue_full","instance":0}}
`, "nsbrokerctl: subscribe: aborted: namespace \"red\" gone: name unlinked\n")
	// Each line stands alone and decodes to what the daemon sent.
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var first subscribeJSON
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first.Event == nil || string(first.Event.Payload) != "one" || first.Gap != nil {
		t.Errorf("first line decodes to %+v, want the event with payload \"one\"", first)
	}
}

func TestSubscribeNotFound(t *testing.T) {
	sock := serve(t, &fakeBroker{})
	ctl(t, "", "--socket", sock, "subscribe", "--namespace", "green", "--group", "1").want(t, ExitFailed, "",
		"nsbrokerctl: subscribe: not found: namespace \"green\" not attached\n")
}

// lineWriter signals on its channel whenever a write happens.
type lineWriter struct {
	strings.Builder
	wrote chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n, err := w.Builder.Write(p)
	w.wrote <- struct{}{}
	return n, err
}

func TestSubscribeInterrupted(t *testing.T) {
	sock := serve(t, &fakeBroker{subscribeItems: subscribeItems()[:1]})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := &lineWriter{wrote: make(chan struct{}, 1)}
	var stderr strings.Builder
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"--socket", sock, "subscribe", "--group", "2"}, strings.NewReader(""), out, &stderr)
	}()
	select {
	case <-out.wrote:
	case <-ctx.Done():
		t.Fatal("no event printed")
	}
	cancel() // as SIGINT does
	if got := <-code; got != ExitOK || stderr.String() != "" {
		t.Errorf("interrupted subscribe: exit %d, stderr %q; want 0 and nothing", got, stderr.String())
	}
	if !strings.Contains(out.String(), `payload="one"`) {
		t.Errorf("stdout %q lacks the event", out.String())
	}
}

func TestNamespaces(t *testing.T) {
	f := &fakeBroker{}
	sock := serve(t, f)
	ctl(t, "", "--socket", sock, "ns", "list").want(t, ExitOK,
		`NAME  STATE        INODE       EPOCH  SUBSCRIBERS  REF        ATTACHED
blue  unavailable  4026532002  0      0            name:blue  2026-11-27T10:00:00Z
red   ready        4026532001  2      3            pid:42     2026-11-27T09:30:00.0000005Z
`, "")
	ctl(t, "", "--socket", sock, "ns", "list", "--json").want(t, ExitOK,
		`{"namespaces":[{"name":"blue","ref":"name:blue","dev":4,"inode":4026532002,"cookie":12,"state":"unavailable","reason":"module not loaded","attached_at":"2026-11-27T10:00:00Z","epoch":0,"subscribers":0},`+
			`{"name":"red","ref":"pid:42","dev":4,"inode":4026532001,"cookie":11,"state":"ready","attached_at":"2026-11-27T09:30:00.0000005Z","epoch":2,"subscribers":3}]}`+"\n", "")
	ctl(t, "", "--socket", sock, "ns", "get", "blue").want(t, ExitOK,
		`name:        blue
ref:         name:blue
state:       unavailable
reason:      module not loaded
dev:         4
inode:       4026532002
cookie:      12
attached:    2026-11-27T10:00:00Z
epoch:       0
subscribers: 0
`, "")
	ctl(t, "", "--socket", sock, "ns", "get", "--json").want(t, ExitOK,
		`{"name":"red","ref":"pid:42","dev":4,"inode":4026532001,"cookie":11,"state":"ready","attached_at":"2026-11-27T09:30:00.0000005Z","epoch":2,"subscribers":3}`+"\n", "")
	ctl(t, "", "--socket", sock, "ns", "get", "green").want(t, ExitFailed, "",
		"nsbrokerctl: ns get: not found: namespace \"green\" not attached\n")
	ctl(t, "", "--socket", sock, "ns", "detach", "blue").want(t, ExitOK, "", "")
	ctl(t, "", "--socket", sock, "ns", "detach", "green").want(t, ExitFailed, "",
		"nsbrokerctl: ns detach: not found: namespace \"green\" not attached\n")
	ctl(t, "", "--socket", sock, "ns", "watch", "--count", "2").want(t, ExitOK,
		"attached ns=red state=ready inode=4026532001 epoch=2 ref=pid:42\n"+
			"gone ns=blue state=unavailable inode=4026532002 epoch=0 ref=name:blue reason=\"name unlinked\"\n", "")
	ctl(t, "", "--socket", sock, "ns", "watch", "--count", "1", "--json").want(t, ExitOK,
		`{"kind":"attached","namespace":{"name":"red","ref":"pid:42","dev":4,"inode":4026532001,"cookie":11,"state":"ready","attached_at":"2026-11-27T09:30:00.0000005Z","epoch":2,"subscribers":3}}`+"\n", "")
}

func TestAttach(t *testing.T) {
	f := &fakeBroker{}
	sock := serve(t, f)
	ctl(t, "", "--socket", sock, "ns", "attach", "--name", "green", "pid:17", "--json").want(t, ExitOK,
		`{"name":"green","ref":"pid:17","dev":0,"inode":4026532003,"cookie":0,"state":"ready","epoch":1,"subscribers":0}`+"\n", "")
	ctl(t, "", "--socket", sock, "ns", "attach", "red").want(t, ExitFailed, "",
		"nsbrokerctl: ns attach: already exists: namespace \"red\" already attached\n")
	r := ctl(t, "", "--socket", sock, "ns", "attach", "path:ns/x")
	if r.code != ExitOK {
		t.Errorf("attach path:ns/x: %v", r)
	}
	ctl(t, "", "--socket", sock, "ns", "attach", "name:a:b").want(t, ExitOK, `name:        a:b
ref:         name:a:b
state:       ready
dev:         0
inode:       4026532003
cookie:      0
epoch:       1
subscribers: 0
`, "")
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	ref := func(r *nsbrokerv1.NamespaceRef) *nsbrokerv1.NamespaceRef { return r }
	want := []*nsbrokerv1.AttachNamespaceRequest{
		{Name: "green", Ref: ref(&nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: 17}})},
		{Ref: ref(&nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: "red"}})},
		// A relative path is resolved here, not in the daemon's directory.
		{Ref: ref(&nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Path{Path: filepath.Join(wd, "ns/x")}})},
		{Ref: ref(&nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: "a:b"}})},
	}
	_, _, attached, _ := f.snapshot()
	if diff := cmp.Diff(want, attached, protocmp.Transform()); diff != "" {
		t.Errorf("attach requests (-want +got):\n%s", diff)
	}
}

func TestAttachMany(t *testing.T) {
	f := &fakeBroker{}
	sock := serve(t, f)
	ctl(t, "", "--socket", sock, "ns", "attach", "green", "pid:17").want(t, ExitOK,
		"REF     NAME    STATE  INODE       ERROR\n"+
			"green   green   ready  4026532003  -\n"+
			"pid:17  pid:17  ready  4026532003  -\n", "")
	ctl(t, "", "--socket", sock, "ns", "attach", "cyan", "red", "--json").want(t, ExitFailed,
		`{"results":[{"ref":"cyan","namespace":{"name":"cyan","ref":"name:cyan","dev":0,"inode":4026532003,"cookie":0,"state":"ready","epoch":1,"subscribers":0}},`+
			`{"ref":"red","error":"already exists: namespace \"red\" already attached"}]}`+"\n",
		"nsbrokerctl: ns attach: 1 of 2 namespaces not attached\n")
	// More than one request's worth goes in batches, every REF once, in order.
	var refs []string
	for i := range attachBatch + 5 {
		refs = append(refs, fmt.Sprintf("pid:%d", 1000+i))
	}
	if r := ctl(t, "", append([]string{"--socket", sock, "ns", "attach"}, refs...)...); r.code != ExitOK {
		t.Fatalf("attach %d namespaces: %v", len(refs), r)
	}
	_, _, attached, _ := f.snapshot()
	attached = attached[4:]
	if len(attached) != len(refs) {
		t.Fatalf("%d attach requests for %d REFs", len(attached), len(refs))
	}
	for i, req := range attached {
		if got := refString(req.GetRef()); got != refs[i] || req.GetName() != "" {
			t.Fatalf("request %d: %v, want ref %s and no name", i, req, refs[i])
		}
	}

	// Long paths: batches stay under the daemon's 64 KiB request limit.
	f = &fakeBroker{}
	sock = serve(t, f)
	refs = nil
	for i := range 100 {
		refs = append(refs, fmt.Sprintf("path:/run/netns/%s-%d", strings.Repeat("n", 2000), i))
	}
	if r := ctl(t, "", append([]string{"--socket", sock, "ns", "attach"}, refs...)...); r.code != ExitOK {
		t.Fatalf("attach %d namespaces with long paths: %v", len(refs), r)
	}
	batches := f.batchSizes()
	if len(batches) < 2 {
		t.Fatalf("100 refs of 2 KB in %d batch(es), want several under 64 KiB each", len(batches))
	}
	for i, n := range batches {
		if n > 64<<10 {
			t.Errorf("batch %d: %d bytes, over the daemon's 64 KiB", i, n)
		}
	}
}

func TestPermissionDenied(t *testing.T) {
	sock := serve(t, &denyingBroker{})
	ctl(t, "", "--socket", sock, "ns", "attach", "x").want(t, ExitFailed, "",
		"nsbrokerctl: ns attach: permission denied: tenants cannot attach namespaces\n")
}

// denyingBroker refuses everything, as for a tenant.
type denyingBroker struct{ fakeBroker }

func (*denyingBroker) AttachNamespace(context.Context, *nsbrokerv1.AttachNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	return nil, status.Error(codes.PermissionDenied, "tenants cannot attach namespaces")
}

func TestStats(t *testing.T) {
	f := &fakeBroker{}
	sock := serve(t, f)
	ctl(t, "", "--socket", sock, "stats").want(t, ExitOK, `blue
  kernel: unavailable
  daemon: received 0, delivered 0, overruns 0, overrun lost 0, queue lost 0, subscribers 0
red
  kernel: echo 1, publish 2, delivered 3, no listener 4, overrun 5, rejected 6
  daemon: received 7, delivered 8, overruns 9, overrun lost 10, queue lost 11, subscribers 12
module instances: 3
`, "")
	ctl(t, "", "--socket", sock, "stats", "--namespace", "red", "--json").want(t, ExitOK,
		`{"namespaces":[{"namespace":"red","kernel":{"echo":1,"publish":2,"delivered":3,"no_listener":4,"overrun":5,"rejected":6},`+
			`"daemon":{"received":7,"delivered":8,"overruns":9,"overrun_lost":10,"queue_lost":11,"subscribers":12}}],"module_instances":3}`+"\n", "")
	ctl(t, "", "--socket", sock, "stats", "--namespace", "green").want(t, ExitFailed, "",
		"nsbrokerctl: stats: not found: namespace \"green\" not attached\n")
}

// brokenWriter fails every write, as a closed pipe does.
type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriteError(t *testing.T) {
	sock := serve(t, &fakeBroker{subscribeItems: subscribeItems()})
	var stderr strings.Builder
	code := Run(context.Background(), []string{"--socket", sock, "subscribe", "--group", "2"},
		strings.NewReader(""), brokenWriter{}, &stderr)
	if code != ExitFailed || stderr.String() != "nsbrokerctl: subscribe: io: read/write on closed pipe\n" {
		t.Errorf("got exit %d, stderr %q; want exit 1 and the write error", code, stderr.String())
	}
}
