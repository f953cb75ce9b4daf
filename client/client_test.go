package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/client"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

func ctx10s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, ep client.Endpoint) *client.Client {
	t.Helper()
	c, err := client.New(ctx10s(t), &client.Config{Endpoint: ep})
	if err != nil {
		t.Fatalf("New(%v): %v", ep, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echo checks that c reaches a fakeBroker: it answers with want.
func echo(t *testing.T, c *client.Client, want string) {
	t.Helper()
	resp, err := c.Broker().Echo(ctx10s(t), &nsbrokerv1.EchoRequest{Payload: []byte("hello")})
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if string(resp.GetPayload()) != want {
		t.Errorf("Echo payload = %q, want %q", resp.GetPayload(), want)
	}
}

func TestDialAdminAndSocket(t *testing.T) {
	path, _ := serve(t, newFake())
	echo(t, dial(t, client.Admin(path)), "hello")
	echo(t, dial(t, client.Socket(path)), "hello")
}

func TestDialLocal(t *testing.T) {
	addr := fmt.Sprintf("@nsbroker-client-test-%d", os.Getpid())
	serveOn(t, newFake(), listen(t, "unix", addr))
	echo(t, dial(t, client.Local(addr)), "hello")
}

// The local socket of another namespace: reached from inside it, not
// from the test's own namespace, where nothing listens under that name.
func TestDialLocalIn(t *testing.T) {
	testenv.RequireRoot(t)
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	defer nsmgr.DeleteNamed(name)
	defer ns.Close()
	addr := fmt.Sprintf("@nsbroker-client-test-%d-in", os.Getpid())
	var l net.Listener
	if err := ns.Do(func() (err error) { l, err = net.Listen("unix", addr); return err }); err != nil {
		t.Fatal(err)
	}
	serveOn(t, newFake(), l)

	echo(t, dial(t, client.LocalIn(ns, addr)), "hello")
	_, err = client.New(ctx10s(t), &client.Config{Endpoint: client.Local(addr)})
	if !errors.Is(err, client.ErrDaemonDown) || !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("New(Local(%s)) outside the namespace: got %v, want ErrDaemonDown and ECONNREFUSED", addr, err)
	}
}

func TestDialTLS(t *testing.T) {
	p := newPKI(t)
	addr := tlsServer(t, newFake(), p.serverConfig())
	cfg, err := client.LoadTLS(p.clientFiles("acme"))
	if err != nil {
		t.Fatal(err)
	}
	// The fake answers with the client certificate's common name.
	echo(t, dial(t, client.TLS(addr, cfg)), "acme")

	// Without a client certificate the daemon refuses the handshake.
	noCert := cfg.Clone()
	noCert.Certificates = nil
	_, err = client.New(ctx10s(t), &client.Config{Endpoint: client.TLS(addr, noCert)})
	var cerr *client.ConnectError
	if !errors.As(err, &cerr) || cerr.Addr != addr || !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("New without a client certificate: got %v, want a ConnectError for %s", err, addr)
	}
	// A daemon whose certificate no trusted authority signed.
	other := newPKI(t)
	_, _, otherCA := other.clientFiles("acme")
	cert, key, _ := p.clientFiles("acme")
	untrusting, err := client.LoadTLS(cert, key, otherCA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(ctx10s(t), &client.Config{Endpoint: client.TLS(addr, untrusting)}); err == nil {
		t.Error("New with the wrong authority succeeded")
	}
}

func TestLoadTLSErrors(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := newPKI(t).clientFiles("acme")
	if _, err := client.LoadTLS(filepath.Join(dir, "none.pem"), key, cert); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing certificate: got %v, want ErrNotExist", err)
	}
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, nil, 0o600)
	if _, err := client.LoadTLS(cert, key, empty); err == nil {
		t.Error("an authority file without certificates: got nil error")
	}
}

func TestDialFails(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	_, err := client.New(ctx10s(t), &client.Config{Endpoint: client.Admin(missing)})
	if !errors.Is(err, client.ErrDaemonDown) || !errors.Is(err, client.ErrUnavailable) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing socket: got %v, want ErrDaemonDown, ErrUnavailable and ENOENT", err)
	}
	if want := "cannot connect to " + missing + ": connect: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("message\ngot  %v\nwant %s", err, want)
	}

	// Not a daemon that is down: a path that cannot be a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	_, err = client.New(ctx10s(t), &client.Config{Endpoint: client.Admin(filepath.Join(file, "x.sock"))})
	if errors.Is(err, client.ErrDaemonDown) || !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("below a regular file: got %v, want ENOTDIR and not ErrDaemonDown", err)
	}

	// A peer that accepts and never answers: ctx bounds the wait.
	silent := filepath.Join(dir, "silent.sock")
	l := listen(t, "unix", silent)
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := client.New(ctx, &client.Config{Endpoint: client.Admin(silent)}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("silent peer: got %v, want DeadlineExceeded", err)
	}
}

// Every rpc's error is an *Error that matches its sentinel and keeps the
// status, for unary rpcs and streams alike.
func TestTypedErrors(t *testing.T) {
	path, _ := serve(t, newFake())
	c := dial(t, client.Admin(path))
	for ns, sentinel := range map[string]error{
		"missing":  client.ErrNotFound,
		"denied":   client.ErrPermissionDenied,
		"busy":     client.ErrResourceExhausted,
		"released": client.ErrUnavailable,
		"bad":      client.ErrInvalidArgument,
		"twice":    client.ErrAlreadyExists,
		"gone":     client.ErrAborted,
		"stranger": client.ErrUnauthenticated,
		"overdue":  context.DeadlineExceeded,
	} {
		st := failures[ns]
		want := client.CodeText(st.Code()) + ": " + st.Message()
		_, uerr := c.Broker().Echo(ctx10s(t), &nsbrokerv1.EchoRequest{Namespace: ns})
		_, serr := c.Subscribe(ctx10s(t), &client.SubscribeConfig{Namespace: ns, Groups: []uint32{1}, Once: true})
		for rpc, err := range map[string]error{"Echo": uerr, "Subscribe": serr} {
			var e *client.Error
			if !errors.As(err, &e) || e.Code != st.Code() || e.Message != st.Message() {
				t.Errorf("%s(%s): got %#v, want an *Error with %v %q", rpc, ns, err, st.Code(), st.Message())
				continue
			}
			if !errors.Is(err, sentinel) || status.Code(err) != st.Code() || err.Error() != want {
				t.Errorf("%s(%s) = %q (code %v): want %q, code %v, matching %v", rpc, ns, err, status.Code(err), want, st.Code(), sentinel)
			}
			for _, other := range []error{client.ErrNotFound, client.ErrUnavailable, client.ErrAborted} {
				if other != sentinel && errors.Is(err, other) {
					t.Errorf("%s(%s) matches %v as well", rpc, ns, other)
				}
			}
		}
	}
	// A code without a sentinel is an *Error all the same.
	_, err := c.Broker().Echo(ctx10s(t), &nsbrokerv1.EchoRequest{Namespace: "unwritten"})
	if status.Code(err) != codes.Unimplemented || err.Error() != "unimplemented: not here" {
		t.Errorf("Echo(unwritten) = %v, want unimplemented: not here", err)
	}
}

func TestCodeText(t *testing.T) {
	for c, want := range map[codes.Code]string{
		codes.NotFound:          "not found",
		codes.PermissionDenied:  "permission denied",
		codes.InvalidArgument:   "invalid argument",
		codes.Unavailable:       "unavailable",
		codes.ResourceExhausted: "resource exhausted",
		codes.AlreadyExists:     "already exists",
		codes.Aborted:           "aborted",
		codes.DeadlineExceeded:  "deadline exceeded",
	} {
		if got := client.CodeText(c); got != want {
			t.Errorf("CodeText(%v) = %q, want %q", c, got, want)
		}
	}
}
