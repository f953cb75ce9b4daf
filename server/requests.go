package server

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Echo sends a payload to the module in a namespace.
func (s *Server) Echo(ctx context.Context, req *nsbrokerv1.EchoRequest) (*nsbrokerv1.EchoResponse, error) {
	_, name, err := s.authorizeNamespace(ctx, rpcEcho, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	r, err := s.b.Echo(ctx, name, req.GetPayload())
	if err != nil {
		return nil, ToStatus(err)
	}
	return &nsbrokerv1.EchoResponse{Payload: r.Payload, NetnsInode: r.NetnsInum, NetnsCookie: r.NetnsCookie}, nil
}

// Publish multicasts a payload to a group of a namespace.
func (s *Server) Publish(ctx context.Context, req *nsbrokerv1.PublishRequest) (*nsbrokerv1.PublishResponse, error) {
	id, name, err := s.authorizeNamespace(ctx, rpcPublish, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	return s.publish(ctx, id, name, req)
}

func (s *Server) publish(ctx context.Context, id Identity, name string, req *nsbrokerv1.PublishRequest) (*nsbrokerv1.PublishResponse, error) {
	if err := s.budget.allowPublish(id); err != nil {
		return nil, err
	}
	r, err := s.b.Publish(ctx, name, req.GetGroup(), req.GetPayload())
	if err != nil {
		return nil, ToStatus(err)
	}
	return &nsbrokerv1.PublishResponse{Group: r.Group, Seq: r.Seq, Listeners: r.Listeners}, nil
}

// publishWindow bounds the publishes of one PublishStream waiting for the
// module's reply.
const publishWindow = 64

// PublishStream publishes each request in order; the first failure ends
// the stream. Publishes are pipelined: up to publishWindow are sent before
// the reply to the oldest is read, so a stream is not held to one round
// trip per message. Replies are still read in order, and a request that
// fails before it is sent (namespace, rate limit, payload) ends the stream
// only after the publishes before it have been answered, so the error is
// always that of the first failing message. A failure the module reports
// may come after later messages were sent: those may have been published.
func (s *Server) PublishStream(stream grpc.ClientStreamingServer[nsbrokerv1.PublishRequest, nsbrokerv1.PublishStreamResponse]) error {
	ctx := stream.Context()
	id, err := s.authorize(ctx, rpcPublishStream)
	if err != nil {
		return err
	}
	sum := &nsbrokerv1.PublishStreamResponse{LastSeq: map[uint32]uint64{}}
	inflight := make(chan *broker.PendingPublish, publishWindow) // oldest first
	// settle waits for the oldest publish in flight and counts it.
	settle := func() error {
		r, err := (<-inflight).Wait(ctx)
		if err != nil {
			return ToStatus(err)
		}
		sum.Published++
		sum.LastSeq[r.Group] = r.Seq
		return nil
	}
	// fail ends the stream with err, unless a publish in flight, sent
	// before the request that failed, failed first.
	fail := func(err error) error {
		for len(inflight) > 0 {
			if serr := settle(); serr != nil {
				return serr
			}
		}
		return err
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if err := fail(nil); err != nil {
				return err
			}
			return stream.SendAndClose(sum)
		}
		if err != nil {
			return err
		}
		name, err := s.resolve(id, req.GetNamespace())
		if err != nil {
			return fail(err)
		}
		if err := s.budget.allowPublish(id); err != nil {
			return fail(err)
		}
		if len(inflight) == cap(inflight) {
			if err := settle(); err != nil {
				return err
			}
		}
		p, err := s.b.PublishAsync(name, req.GetGroup(), req.GetPayload())
		if err != nil {
			return fail(ToStatus(err))
		}
		inflight <- p
	}
}

// Stats returns the counters of one namespace, or of every namespace the
// caller may reach.
func (s *Server) Stats(ctx context.Context, req *nsbrokerv1.StatsRequest) (*nsbrokerv1.StatsResponse, error) {
	id, err := s.authorize(ctx, rpcStats)
	if err != nil {
		return nil, err
	}
	var infos []broker.Info
	if req.GetNamespace() != "" {
		name, err := s.resolve(id, req.GetNamespace())
		if err != nil {
			return nil, err
		}
		in, err := s.b.Get(name)
		if err != nil {
			return nil, ToStatus(err)
		}
		infos = append(infos, in)
	} else {
		for _, in := range s.b.List() {
			if visible(id, in) {
				infos = append(infos, in)
			}
		}
	}
	resp := &nsbrokerv1.StatsResponse{}
	for _, in := range infos {
		ns := &nsbrokerv1.NamespaceStats{Namespace: in.Name, Daemon: daemonCountersToProto(in)}
		st, err := s.b.Stats(ctx, in.Name)
		switch {
		case err == nil:
			ns.Kernel = kernelCountersToProto(st)
			if id.Role == RoleAdmin {
				resp.ModuleInstances = st.Instances
			}
		case errors.Is(err, broker.ErrUnavailable):
			// No kernel counters while the module is missing.
		case req.GetNamespace() == "" && isDetached(err):
			continue // detached meanwhile: no longer in the list
		default:
			return nil, ToStatus(err)
		}
		resp.Namespaces = append(resp.Namespaces, ns)
	}
	return resp, nil
}

// isDetached reports whether err says the namespace left while a request
// for it was made.
func isDetached(err error) bool {
	return errors.Is(err, broker.ErrNotFound) || errors.Is(err, broker.ErrDetached) || errors.Is(err, broker.ErrNamespaceGone)
}
