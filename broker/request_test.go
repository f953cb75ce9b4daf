package broker

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRequestSocket: a namespace's first request opens its request
// socket, which the requests after it reuse; detaching closes it.
func TestRequestSocket(t *testing.T) {
	b, k, names, _ := fakeSetup(t, 1, nil)
	if n := k.OpenSockets(); n != 1 {
		t.Fatalf("%d sockets open after attach, want 1 (no request socket before a request)", n)
	}
	ctx := context.Background()
	for i := range 3 {
		r, err := b.Echo(ctx, names[0], []byte("ping"))
		if err != nil || string(r.Payload) != "ping" {
			t.Fatalf("echo %d: %+v, %v", i, r, err)
		}
		if n := k.OpenSockets(); n != 2 {
			t.Fatalf("%d sockets open after echo %d, want 2 (the shared one and the request socket)", n, i)
		}
	}
	if r, err := b.Publish(ctx, names[0], 3, []byte("x")); err != nil || r.Seq != 1 {
		t.Fatalf("publish: %+v, %v", r, err)
	}
	if st, err := b.Stats(ctx, names[0]); err != nil || st.NetnsInum == 0 {
		t.Fatalf("stats: %+v, %v", st, err)
	}
	if n := k.OpenSockets(); n != 2 {
		t.Fatalf("%d sockets open after publish and stats, want 2", n)
	}
	if err := b.Detach(names[0]); err != nil {
		t.Fatal(err)
	}
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("%d sockets open after detach, want 0", n)
	}
}

// TestRequestSocketNoReply: a request whose reply does not come ends
// with its context, and its socket is dropped (the reply may still
// arrive on it); the next request opens another.
func TestRequestSocketNoReply(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	k.HoldReplies(inums[0], 1<<20) // never
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Echo(ctx, names[0], []byte("lost")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("echo without a reply: %v, want context.DeadlineExceeded", err)
	}
	if n := k.OpenSockets(); n != 1 {
		t.Fatalf("%d sockets open after a request without a reply, want 1 (its request socket dropped)", n)
	}
	k.HoldReplies(inums[0], 0)
	if r, err := b.Echo(context.Background(), names[0], []byte("again")); err != nil || string(r.Payload) != "again" {
		t.Fatalf("echo after the lost one: %+v, %v", r, err)
	}
	if n := k.OpenSockets(); n != 2 {
		t.Fatalf("%d sockets open, want 2", n)
	}
}

// TestRequestSocketBusy: a request that finds the request socket in use
// goes through the shared socket instead of waiting for it.
func TestRequestSocketBusy(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	c, err := b.lookup(names[0])
	if err != nil {
		t.Fatal(err)
	}
	k.HoldReplies(inums[0], 2) // the two replies come together, reversed
	before, _ := k.Requests(inums[0])
	first := make(chan error, 1)
	go func() {
		_, err := b.Echo(context.Background(), names[0], []byte("first"))
		first <- err
	}()
	waitUntil(t, func() bool { d, _ := k.Requests(inums[0]); return d > before })
	if c.reqMu.TryLock() {
		c.reqMu.Unlock()
		t.Fatal("the first request, waiting for its reply, does not hold the request socket")
	}
	// The second request must not wait behind the first: its reply
	// releases both.
	r, err := b.Echo(context.Background(), names[0], []byte("second"))
	if err != nil || string(r.Payload) != "second" {
		t.Fatalf("second echo: %+v, %v", r, err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first echo: %v", err)
	}
}

// TestRequestSocketReplacedOnReconnect: after the broker reconnects (a
// release and a module reload), the request socket of the old connection
// is closed, and the next request opens one for the new.
func TestRequestSocketReplacedOnReconnect(t *testing.T) {
	b, k, names, _ := identitySetup(t)
	if _, err := b.Echo(context.Background(), names[0], nil); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("%d sockets open after Release, want 0: the request socket holds the module", n)
	}
	k.Reload()
	waitState(t, b, names[0], StateReady)
	if r, err := b.Echo(context.Background(), names[0], []byte("new")); err != nil || string(r.Payload) != "new" {
		t.Fatalf("echo after the reload: %+v, %v", r, err)
	}
	if n := k.OpenSockets(); n != 2 {
		t.Fatalf("%d sockets open after the reload and an echo, want 2", n)
	}
}
