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
	ctx, _, name, err := s.authorizeNamespace(ctx, rpcEcho, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	r, err := s.b.Echo(ctx, name, req.GetPayload())
	if err != nil {
		return nil, ToStatus(err)
	}
	return &nsbrokerv1.EchoResponse{Payload: r.Payload, NetnsInode: uint64(r.NetnsInum), NetnsCookie: r.NetnsCookie}, nil
}

// Publish multicasts a payload to a group of a namespace.
func (s *Server) Publish(ctx context.Context, req *nsbrokerv1.PublishRequest) (*nsbrokerv1.PublishResponse, error) {
	ctx, id, name, err := s.authorizeNamespace(ctx, rpcPublish, req.GetNamespace())
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

// publishWindow bounds the publishes of one PublishStream received but not
// yet answered by the module.
const publishWindow = 64

// PublishStream publishes each request in order; the first failure ends
// the stream. The handler receives the requests and checks each one
// (namespace, rate limit); the stream's publisher sends whatever has been
// received meanwhile to the module at once, one datagram for each run of
// messages to the same namespace (broker.PublishBatch), and reads the
// replies in order, up to publishWindow messages unanswered. A stream is
// so held neither to one round trip nor to one sendmsg per message. The
// error is always that of the first failing message: a request that
// fails its checks ends the stream only after everything received before
// it was answered. A failure the module reports may come after later
// messages were sent (up to publishWindow-1, those of its own datagram
// included, which the module still handles): those may have been
// published.
func (s *Server) PublishStream(stream grpc.ClientStreamingServer[nsbrokerv1.PublishRequest, nsbrokerv1.PublishStreamResponse]) error {
	ctx := stream.Context()
	id, err := s.authorize(ctx, rpcPublishStream)
	if err != nil {
		return err
	}
	p := newStreamPublisher(pinned(ctx, id), s.b)
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			sum, err := p.finish()
			if err != nil {
				return err
			}
			return stream.SendAndClose(sum)
		}
		if err != nil {
			p.finish()
			return err
		}
		name, err := s.resolve(id, req.GetNamespace())
		if err == nil {
			err = s.budget.allowPublish(id)
		}
		if err != nil {
			if _, perr := p.finish(); perr != nil {
				return perr
			}
			return err
		}
		if !p.add(name, broker.Publication{Group: req.GetGroup(), Payload: req.GetPayload()}) {
			_, err := p.finish()
			return err
		}
	}
}

// streamPublisher publishes what one PublishStream received: one
// goroutine (send) sends what has been queued in batches, another
// (settle) reads the replies in order and counts them.
type streamPublisher struct {
	ctx      context.Context // the stream's, pinned to its tenant's namespace
	b        *broker.Broker
	queue    chan queuedPublish // received, not yet sent
	inflight chan sentBatch     // sent, oldest first
	// slots holds a token for every publish received and not yet
	// answered: at most publishWindow.
	slots  chan struct{}
	failed chan struct{} // closed when settle stops at a failure
	sent   chan struct{} // closed when send has returned
	done   chan struct{} // closed when settle has returned

	// Written by settle only, read after done.
	sum *nsbrokerv1.PublishStreamResponse
	err error
}

type queuedPublish struct {
	name string
	pub  broker.Publication
}

// sentBatch is what one batch sent: its publishes in order, and the error
// that stopped the batch before the rest of it was sent.
type sentBatch struct {
	pend []*broker.PendingPublish
	err  error
}

func newStreamPublisher(ctx context.Context, b *broker.Broker) *streamPublisher {
	p := &streamPublisher{
		ctx:      ctx,
		b:        b,
		queue:    make(chan queuedPublish, publishWindow),
		inflight: make(chan sentBatch, publishWindow),
		slots:    make(chan struct{}, publishWindow),
		failed:   make(chan struct{}),
		sent:     make(chan struct{}),
		done:     make(chan struct{}),
		sum:      &nsbrokerv1.PublishStreamResponse{LastSeq: map[uint32]uint64{}},
	}
	go p.send()
	go p.settle()
	return p
}

// add queues a publish, waiting while publishWindow are unanswered. It
// returns false once a publish has failed.
func (p *streamPublisher) add(name string, pub broker.Publication) bool {
	select {
	case <-p.failed:
		return false
	default:
	}
	select {
	case p.slots <- struct{}{}:
	case <-p.failed:
		return false
	}
	p.queue <- queuedPublish{name, pub} // never blocks: slots bound it
	return true
}

// finish waits until everything queued has been answered, or a publish
// failed, and returns the count and the failure. The stream calls it
// once, and add no more after it.
func (p *streamPublisher) finish() (*nsbrokerv1.PublishStreamResponse, error) {
	close(p.queue)
	<-p.sent
	<-p.done
	return p.sum, p.err
}

// send sends what is queued, everything queued at once, until the queue
// is closed, a send fails or settle has seen a failure. A batch holds
// at most publishWindow publishes, and inflight at most publishWindow
// batches, as slots bound the publishes unanswered.
func (p *streamPublisher) send() {
	defer close(p.sent)
	defer close(p.inflight)
	batch := make([]queuedPublish, 0, publishWindow)
	pubs := make([]broker.Publication, 0, publishWindow)
	for q := range p.queue {
		batch = append(batch[:0], q)
	more:
		for len(batch) < publishWindow {
			select {
			case q, ok := <-p.queue:
				if !ok {
					break more
				}
				batch = append(batch, q)
			default:
				break more
			}
		}
		select {
		case <-p.failed:
			return
		default:
		}
		var sb sentBatch
		for i := 0; i < len(batch) && sb.err == nil; {
			name := batch[i].name
			pubs = pubs[:0]
			for ; i < len(batch) && batch[i].name == name; i++ {
				pubs = append(pubs, batch[i].pub)
			}
			pend, err := p.b.PublishBatch(p.ctx, name, pubs)
			sb.pend = append(sb.pend, pend...)
			sb.err = err
		}
		p.inflight <- sb
		if sb.err != nil {
			return
		}
	}
}

// settle reads the replies in the order of the sends and counts them,
// until inflight is closed or a publish failed.
func (p *streamPublisher) settle() {
	defer close(p.done)
	for sb := range p.inflight {
		for _, pp := range sb.pend {
			r, err := pp.Wait(p.ctx)
			if err != nil {
				p.fail(err)
				return
			}
			p.sum.Published++
			p.sum.LastSeq[r.Group] = r.Seq
			<-p.slots
		}
		if sb.err != nil {
			p.fail(sb.err)
			return
		}
	}
}

func (p *streamPublisher) fail(err error) {
	p.err = ToStatus(err)
	close(p.failed)
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
		if !visible(id, in) { // attached anew since resolve looked
			return nil, notFound(name)
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
		// The counters of the namespace described, even if its name
		// was attached anew since.
		st, err := s.b.Stats(broker.WithNamespaceID(ctx, in.ID), in.Name)
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
