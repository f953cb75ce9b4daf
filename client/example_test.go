package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/client"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// exampleDaemon stands in for nsbrokerd, on a socket in a temporary
// directory: its first Subscribe stream sends two events and is then cut,
// as by a daemon restarting; while the subscriber is away, seq 3..5 are
// published; the next stream sends seq 6. It returns the socket and a
// function that stops it.
func exampleDaemon() (string, func()) {
	dir, err := os.MkdirTemp("", "nsbroker-example")
	if err != nil {
		panic(err)
	}
	path := filepath.Join(dir, "nsbroker.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		panic(err)
	}
	f := newFake()
	g := grpc.NewServer()
	nsbrokerv1.RegisterBrokerServer(g, f)
	go g.Serve(l)
	go func() {
		first := <-f.subs
		first.items <- event(1, 1, 1)
		first.items <- event(1, 1, 2)
		first.end <- status.Error(codes.Unavailable, "server shutting down")
		(<-f.subs).items <- event(1, 1, 6)
	}()
	return path, func() { g.Stop(); os.RemoveAll(dir) }
}

// A subscriber that outlives a daemon restart: the Subscription
// reconnects by itself and reports what it missed meanwhile as a gap.
func ExampleClient_Subscribe() {
	socket, stop := exampleDaemon() // client.Admin("") in real life
	defer stop()

	ctx := context.Background()
	c, err := client.New(ctx, &client.Config{Endpoint: client.Admin(socket)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, &client.SubscribeConfig{Namespace: "red", Groups: []uint32{1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close()
	for range 4 {
		it, err := sub.Recv()
		if err != nil {
			fmt.Println(err)
			return
		}
		switch {
		case it.Event != nil:
			fmt.Printf("event group=%d seq=%d\n", it.Event.GetGroup(), it.Event.GetSeq())
		case it.Gap != nil:
			fmt.Printf("gap group=%d seq=%d-%d count=%d reconnect=%t\n",
				it.Gap.Group, it.Gap.From, it.Gap.To, it.Gap.Count(), it.Gap.Reconnect)
		}
	}
	fmt.Println(sub.ResumePoint())
	// Output:
	// event group=1 seq=1
	// event group=1 seq=2
	// gap group=1 seq=3-5 count=3 reconnect=true
	// event group=1 seq=6
	// map[1:{0 1 6}]
}

// Errors match sentinel errors, whatever the rpc.
func ExampleError() {
	socket, stop := exampleDaemon()
	defer stop()

	ctx := context.Background()
	c, err := client.New(ctx, &client.Config{Endpoint: client.Admin(socket)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	_, err = c.Broker().Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: "missing", Payload: []byte("hi")})
	fmt.Println(errors.Is(err, client.ErrNotFound), err)

	_, err = client.New(ctx, &client.Config{Endpoint: client.Admin(socket + ".old")})
	fmt.Println(errors.Is(err, client.ErrDaemonDown))
	// Output:
	// true not found: namespace "missing" not attached
	// true
}
