package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nsbroker/nsbroker/family"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// fakeBroker answers like nsbrokerd with canned data: namespaces "red"
// and "blue", "red" being the caller's own when a request names none.
type fakeBroker struct {
	nsbrokerv1.UnimplementedBrokerServer

	// Set before the server starts.
	subscribeItems []*nsbrokerv1.SubscribeResponse // sent by Subscribe
	subscribeEnd   error                           // then returned; nil: wait for the client to go
	subscribeAgain []*nsbrokerv1.SubscribeResponse // if set, sent by every later Subscribe, which then waits
	streamLimit    int                             // PublishStream fails after this many; 0: never
	blockEcho      bool                            // Echo waits for the deadline

	mu         sync.Mutex
	seq        map[string]uint64                    // guarded by mu: last seq per "ns/group"
	requests   []proto.Message                      // guarded by mu: every request, in order
	streamed   []*nsbrokerv1.PublishRequest         // guarded by mu: PublishStream requests
	attached   []*nsbrokerv1.AttachNamespaceRequest // guarded by mu
	subscribe  *nsbrokerv1.SubscribeRequest         // guarded by mu: the last one
	subscribes int                                  // guarded by mu: Subscribe calls
	batches    []int                                // guarded by mu: AttachNamespaces request sizes
}

// batchSizes are the encoded sizes of the AttachNamespaces requests.
func (f *fakeBroker) batchSizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.batches...)
}

var namespaces = map[string]*nsbrokerv1.Namespace{
	"blue": {
		Name: "blue", Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: "blue"}},
		Dev: 4, Inode: 4026532002, Cookie: 12, State: nsbrokerv1.NamespaceState_NAMESPACE_STATE_UNAVAILABLE,
		Reason: "module not loaded", AttachedAt: timestamppb.New(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)),
		Epoch: 0,
	},
	"red": {
		Name: "red", Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: 42}},
		Dev: 4, Inode: 4026532001, Cookie: 11, State: nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY,
		AttachedAt: timestamppb.New(time.Date(2026, 11, 27, 9, 30, 0, 500, time.UTC)),
		Epoch:      2, Subscribers: 3,
	},
}

// snapshot returns copies of what the fake recorded.
func (f *fakeBroker) snapshot() (requests []proto.Message, streamed []*nsbrokerv1.PublishRequest,
	attached []*nsbrokerv1.AttachNamespaceRequest, subscribe *nsbrokerv1.SubscribeRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.requests...), append([]*nsbrokerv1.PublishRequest(nil), f.streamed...),
		append([]*nsbrokerv1.AttachNamespaceRequest(nil), f.attached...), f.subscribe
}

func (f *fakeBroker) record(m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, m)
}

func (f *fakeBroker) lookup(name string) (*nsbrokerv1.Namespace, error) {
	if name == "" {
		name = "red"
	}
	ns, ok := namespaces[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "namespace %q not attached", name)
	}
	return ns, nil
}

func (f *fakeBroker) ListNamespaces(_ context.Context, req *nsbrokerv1.ListNamespacesRequest) (*nsbrokerv1.ListNamespacesResponse, error) {
	f.record(req)
	return &nsbrokerv1.ListNamespacesResponse{Namespaces: []*nsbrokerv1.Namespace{namespaces["blue"], namespaces["red"]}}, nil
}

func (f *fakeBroker) GetNamespace(_ context.Context, req *nsbrokerv1.GetNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	f.record(req)
	return f.lookup(req.GetNamespace())
}

func (f *fakeBroker) AttachNamespace(_ context.Context, req *nsbrokerv1.AttachNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	f.mu.Lock()
	f.attached = append(f.attached, req)
	f.mu.Unlock()
	name := req.GetName()
	if name == "" {
		// As the daemon derives it: the name itself, or "path:P", "pid:N".
		name = strings.TrimPrefix(refString(req.GetRef()), "name:")
	}
	if _, ok := namespaces[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "namespace %q already attached", name)
	}
	return &nsbrokerv1.Namespace{Name: name, Ref: req.GetRef(), Inode: 4026532003,
		State: nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY, Epoch: 1}, nil
}

func (f *fakeBroker) AttachNamespaces(ctx context.Context, req *nsbrokerv1.AttachNamespacesRequest) (*nsbrokerv1.AttachNamespacesResponse, error) {
	f.mu.Lock()
	f.batches = append(f.batches, proto.Size(req))
	f.mu.Unlock()
	resp := &nsbrokerv1.AttachNamespacesResponse{}
	for _, one := range req.GetNamespaces() {
		ns, err := f.AttachNamespace(ctx, one)
		st := status.Convert(err)
		resp.Results = append(resp.Results, &nsbrokerv1.AttachResult{Namespace: ns, Code: int32(st.Code()), Message: st.Message()})
	}
	return resp, nil
}

func (f *fakeBroker) DetachNamespace(_ context.Context, req *nsbrokerv1.DetachNamespaceRequest) (*nsbrokerv1.DetachNamespaceResponse, error) {
	f.record(req)
	if _, err := f.lookup(req.GetNamespace()); err != nil {
		return nil, err
	}
	return &nsbrokerv1.DetachNamespaceResponse{}, nil
}

func (f *fakeBroker) WatchNamespaces(req *nsbrokerv1.WatchNamespacesRequest, stream grpc.ServerStreamingServer[nsbrokerv1.NamespaceEvent]) error {
	f.record(req)
	events := []*nsbrokerv1.NamespaceEvent{
		{Kind: nsbrokerv1.NamespaceEvent_KIND_ATTACHED, Namespace: namespaces["red"]},
		{Kind: nsbrokerv1.NamespaceEvent_KIND_GONE, Namespace: namespaces["blue"], Reason: "name unlinked"},
	}
	for _, ev := range events {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (f *fakeBroker) Echo(ctx context.Context, req *nsbrokerv1.EchoRequest) (*nsbrokerv1.EchoResponse, error) {
	f.record(req)
	if f.blockEcho {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	ns, err := f.lookup(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	return &nsbrokerv1.EchoResponse{Payload: req.GetPayload(), NetnsInode: ns.GetInode(), NetnsCookie: ns.GetCookie()}, nil
}

// publish numbers a publish as the module would.
func (f *fakeBroker) publish(req *nsbrokerv1.PublishRequest) (*nsbrokerv1.PublishResponse, error) {
	ns, err := f.lookup(req.GetNamespace())
	if err != nil {
		return nil, err
	}
	if req.GetGroup() < 1 || req.GetGroup() > 32 {
		return nil, status.Error(codes.InvalidArgument, family.GroupRangeError(req.GetGroup()).Error())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seq == nil {
		f.seq = map[string]uint64{}
	}
	key := fmt.Sprintf("%s/%d", ns.GetName(), req.GetGroup())
	f.seq[key]++
	return &nsbrokerv1.PublishResponse{Group: req.GetGroup(), Seq: f.seq[key], Listeners: true}, nil
}

func (f *fakeBroker) Publish(_ context.Context, req *nsbrokerv1.PublishRequest) (*nsbrokerv1.PublishResponse, error) {
	f.record(req)
	return f.publish(req)
}

func (f *fakeBroker) PublishStream(stream grpc.ClientStreamingServer[nsbrokerv1.PublishRequest, nsbrokerv1.PublishStreamResponse]) error {
	resp := &nsbrokerv1.PublishStreamResponse{LastSeq: map[uint32]uint64{}}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(resp)
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.streamed = append(f.streamed, req)
		n := len(f.streamed)
		f.mu.Unlock()
		if f.streamLimit > 0 && n > f.streamLimit {
			return status.Error(codes.ResourceExhausted, "publish rate limit reached")
		}
		pr, err := f.publish(req)
		if err != nil {
			return err
		}
		resp.Published++
		resp.LastSeq[pr.GetGroup()] = pr.GetSeq()
	}
}

func (f *fakeBroker) Subscribe(req *nsbrokerv1.SubscribeRequest, stream grpc.ServerStreamingServer[nsbrokerv1.SubscribeResponse]) error {
	f.mu.Lock()
	f.subscribe = req
	f.subscribes++
	items, end := f.subscribeItems, f.subscribeEnd
	if f.subscribes > 1 && f.subscribeAgain != nil {
		items, end = f.subscribeAgain, nil
	}
	f.mu.Unlock()
	if _, err := f.lookup(req.GetNamespace()); err != nil {
		return err
	}
	for _, item := range items {
		if err := stream.Send(item); err != nil {
			return err
		}
	}
	if end != nil {
		return end
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (f *fakeBroker) Stats(_ context.Context, req *nsbrokerv1.StatsRequest) (*nsbrokerv1.StatsResponse, error) {
	f.record(req)
	red := &nsbrokerv1.NamespaceStats{
		Namespace: "red",
		Kernel:    &nsbrokerv1.KernelCounters{Echo: 1, Publish: 2, Delivered: 3, NoListener: 4, Overrun: 5, Rejected: 6},
		Daemon:    &nsbrokerv1.DaemonCounters{Received: 7, Delivered: 8, Overruns: 9, OverrunLost: 10, QueueLost: 11, Subscribers: 12},
	}
	blue := &nsbrokerv1.NamespaceStats{Namespace: "blue", Daemon: &nsbrokerv1.DaemonCounters{}}
	switch req.GetNamespace() {
	case "":
		return &nsbrokerv1.StatsResponse{Namespaces: []*nsbrokerv1.NamespaceStats{blue, red}, ModuleInstances: 3}, nil
	case "red":
		return &nsbrokerv1.StatsResponse{Namespaces: []*nsbrokerv1.NamespaceStats{red}, ModuleInstances: 3}, nil
	}
	_, err := f.lookup(req.GetNamespace())
	return nil, err
}

// serve runs f on a fresh unix socket and returns its path.
func serve(t *testing.T, f nsbrokerv1.BrokerServer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nsbroker.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, f, l)
	return path
}

func serveOn(t *testing.T, f nsbrokerv1.BrokerServer, l net.Listener) {
	t.Helper()
	g := grpc.NewServer()
	nsbrokerv1.RegisterBrokerServer(g, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := g.Serve(l); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
}

// result is what one nsbrokerctl run did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// ctl runs nsbrokerctl with args and stdin, bounded in time.
func ctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// want fails unless r exited with code and printed exactly stdout and
// stderr.
func (r result) want(t *testing.T, code int, stdout, stderr string) {
	t.Helper()
	if r.code != code || r.stdout != stdout || r.stderr != stderr {
		t.Errorf("got %v\nwant exit %d, stdout %q, stderr %q", r, code, stdout, stderr)
	}
}
