package server

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Subscribe streams the events and gaps of groups of a namespace, after
// what was missed since the request's resume points, if any. The
// response headers are sent once the subscription is in place, so a client
// that waits for them knows that every later publish reaches it. The
// stream ends when the client cancels or the subscription ends (ABORTED
// when the namespace is detached or gone, UNAVAILABLE when the server
// shuts down).
//
// An event with several receivers is marshalled once for the streams
// that send it with the same compressor, and most of them send it as a
// *grpc.PreparedMsg; every other message (the first stream's copy, an
// event with one receiver, a gap) is sent as a
// *nsbrokerv1.SubscribeResponse. An interceptor that watches what a
// stream sends sees both.
func (s *Server) Subscribe(req *nsbrokerv1.SubscribeRequest, stream grpc.ServerStreamingServer[nsbrokerv1.SubscribeResponse]) error {
	ctx := stream.Context()
	ctx, id, name, err := s.authorizeNamespace(ctx, rpcSubscribe, req.GetNamespace())
	if err != nil {
		return err
	}
	budget, release := s.budget.queueBudget(id)
	defer release()
	sub, err := s.b.NewSubscriptionAt(ctx, name, req.GetGroups(), budget, resumePointsFromProto(req.GetResume()))
	if err != nil {
		return ToStatus(err)
	}
	defer sub.Close()
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	events := newEventStream(stream)
	for {
		ev, ok := sub.Next()
		if !ok {
			break
		}
		var err error
		switch ev.Kind {
		case broker.KindMessage:
			// Shared with the other streams of this event (eventCache).
			err = s.events.send(events, ev)
		case broker.KindGap:
			err = stream.Send(gapToProto(ev))
		case broker.KindEnd:
			return subscriptionEnd(name, ev.Err)
		}
		if err != nil {
			return err
		}
	}
	return status.FromContextError(ctx.Err()).Err()
}

// resumePointsFromProto converts the resume points of a SubscribeRequest;
// the broker checks them.
func resumePointsFromProto(in []*nsbrokerv1.ResumePoint) []broker.ResumePoint {
	if len(in) == 0 {
		return nil
	}
	out := make([]broker.ResumePoint, len(in))
	for i, p := range in {
		out[i] = broker.ResumePoint{Group: p.GetGroup(), Instance: p.GetInstance(), Seq: p.GetSeq()}
	}
	return out
}

// subscriptionEnd is the status a subscription the broker ended ends its
// stream with.
func subscriptionEnd(name string, err error) error {
	if err == nil {
		return status.Errorf(codes.Aborted, "subscription to namespace %q ended", name)
	}
	return ToStatus(fmt.Errorf("subscription to namespace %q ended: %w", name, err))
}
