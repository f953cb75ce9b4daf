package daemon

import (
	"net"
	"testing"
	"time"
)

// TestTrackingListenerMaxAge: a connection is closed maxAge after it was
// accepted, however busy (max_connection_age: an expired client
// certificate stops working on an open connection).
func TestTrackingListenerMaxAge(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const maxAge = 200 * time.Millisecond
	l := &trackingListener{Listener: inner, conns: &connSet{}, maxAge: maxAge}
	defer l.Close()
	client, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	accepted := time.Now()
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	// Busy: the client writes and the server reads until it is cut.
	go func() {
		for {
			if _, err := client.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	buf := make([]byte, 16)
	var readErr error
	for readErr == nil && time.Since(accepted) < 10*time.Second {
		server.SetReadDeadline(time.Now().Add(time.Second))
		_, readErr = server.Read(buf)
	}
	took := time.Since(accepted)
	if readErr == nil || took < maxAge || took > maxAge+5*time.Second {
		t.Fatalf("server side: read error %v after %v; want the connection closed at %v", readErr, took, maxAge)
	}
	if !isClosed(server) {
		t.Fatal("the connection is not closed after max_connection_age")
	}
}
