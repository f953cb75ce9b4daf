package client_test

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// fakeBroker answers like nsbrokerd: Echo returns its payload (over TLS,
// the client certificate's common name) or, for the namespaces of
// failures, the status named there; Subscribe hands each stream to the
// test through subs.
type fakeBroker struct {
	nsbrokerv1.UnimplementedBrokerServer

	subs chan *fakeSub // every Subscribe stream, once set up

	mu       sync.Mutex
	requests []*nsbrokerv1.SubscribeRequest // guarded by mu
}

// failures are the namespaces Echo and Subscribe fail for, with the
// daemon's messages.
var failures = map[string]*status.Status{
	"missing":   status.New(codes.NotFound, `namespace "missing" not attached`),
	"denied":    status.New(codes.PermissionDenied, "tenants cannot attach namespaces"),
	"busy":      status.New(codes.ResourceExhausted, "tenant acme: --max-streams-per-tenant (64) reached"),
	"released":  status.New(codes.Unavailable, "module released"),
	"bad":       status.New(codes.InvalidArgument, "group out of range: 33, want 1..32"),
	"twice":     status.New(codes.AlreadyExists, `namespace "twice" already attached`),
	"gone":      status.New(codes.Aborted, `namespace "gone" gone: name unlinked`),
	"stranger":  status.New(codes.Unauthenticated, "unknown connection"),
	"overdue":   status.New(codes.DeadlineExceeded, "too late"),
	"unwritten": status.New(codes.Unimplemented, "not here"),
}

func newFake() *fakeBroker { return &fakeBroker{subs: make(chan *fakeSub, 16)} }

func (f *fakeBroker) Echo(ctx context.Context, req *nsbrokerv1.EchoRequest) (*nsbrokerv1.EchoResponse, error) {
	if st, ok := failures[req.GetNamespace()]; ok {
		return nil, st.Err()
	}
	payload := req.GetPayload()
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			payload = []byte(ti.State.PeerCertificates[0].Subject.CommonName)
		}
	}
	return &nsbrokerv1.EchoResponse{Payload: payload, NetnsInode: 4026532001}, nil
}

// fakeSub is one Subscribe stream: the test sends items on it and ends it.
type fakeSub struct {
	req   *nsbrokerv1.SubscribeRequest
	items chan *nsbrokerv1.SubscribeResponse
	end   chan error
	done  chan struct{} // closed when the stream has ended
}

func (f *fakeBroker) Subscribe(req *nsbrokerv1.SubscribeRequest, stream grpc.ServerStreamingServer[nsbrokerv1.SubscribeResponse]) error {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	if st, ok := failures[req.GetNamespace()]; ok {
		return st.Err()
	}
	// As the daemon does: the headers say the subscription is in place.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	sub := &fakeSub{req: req, items: make(chan *nsbrokerv1.SubscribeResponse, 64), end: make(chan error, 1),
		done: make(chan struct{})}
	defer close(sub.done)
	f.subs <- sub
	for {
		select {
		case it := <-sub.items:
			if err := stream.Send(it); err != nil {
				return err
			}
		case err := <-sub.end:
			for { // what was sent before the end goes first
				select {
				case it := <-sub.items:
					if err := stream.Send(it); err != nil {
						return err
					}
					continue
				default:
				}
				return err
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (f *fakeBroker) subscribeRequests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// next returns the next Subscribe stream.
func (f *fakeBroker) next(t *testing.T) *fakeSub {
	t.Helper()
	select {
	case s := <-f.subs:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no Subscribe stream within 10s")
		return nil
	}
}

func event(group uint32, epoch, seq uint64) *nsbrokerv1.SubscribeResponse {
	return &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Event{Event: &nsbrokerv1.Event{
		Namespace: "red", Group: group, Seq: seq, Epoch: epoch, Payload: []byte("x"),
	}}}
}

func gap(group uint32, from, to uint64, r nsbrokerv1.LossReason) *nsbrokerv1.SubscribeResponse {
	return &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Gap{Gap: &nsbrokerv1.Gap{
		Namespace: "red", Group: group, FromSeq: from, ToSeq: to, Reason: r,
	}}}
}

// server is a gRPC server of a fakeBroker on a listener.
type server struct {
	g    *grpc.Server
	done chan struct{}
}

// serveOn serves f on l until stop or the end of the test.
func serveOn(t *testing.T, f nsbrokerv1.BrokerServer, l net.Listener, opts ...grpc.ServerOption) *server {
	t.Helper()
	s := &server{g: grpc.NewServer(opts...), done: make(chan struct{})}
	nsbrokerv1.RegisterBrokerServer(s.g, f)
	go func() {
		defer close(s.done)
		s.g.Serve(l)
	}()
	t.Cleanup(s.stop)
	return s
}

// stop stops the server at once, cutting every connection and stream.
func (s *server) stop() {
	s.g.Stop()
	<-s.done
}

// serve serves f on a fresh unix socket and returns its path.
func serve(t *testing.T, f nsbrokerv1.BrokerServer) (string, *server) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nsbroker.sock")
	return path, serveOn(t, f, listen(t, "unix", path))
}

func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tlsServer serves f over TCP with mutual TLS.
func tlsServer(t *testing.T, f nsbrokerv1.BrokerServer, cfg *tls.Config) string {
	t.Helper()
	l := listen(t, "tcp", "127.0.0.1:0")
	serveOn(t, f, l, grpc.Creds(credentials.NewTLS(cfg)))
	return l.Addr().String()
}
