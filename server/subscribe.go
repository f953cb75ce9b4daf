package server

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Subscribe streams the events and gaps of groups of a namespace. The
// response headers are sent once the subscription is in place, so a client
// that waits for them knows that every later publish reaches it. The
// stream ends when the client cancels or the subscription ends (ABORTED
// when the namespace is detached or gone, UNAVAILABLE when the server
// shuts down).
func (s *Server) Subscribe(req *nsbrokerv1.SubscribeRequest, stream grpc.ServerStreamingServer[nsbrokerv1.SubscribeResponse]) error {
	ctx := stream.Context()
	id, name, err := s.authorizeNamespace(ctx, rpcSubscribe, req.GetNamespace())
	if err != nil {
		return err
	}
	budget, release := s.budget.queueBudget(id)
	defer release()
	sub, err := s.b.NewSubscription(ctx, name, req.GetGroups(), budget)
	if err != nil {
		return ToStatus(err)
	}
	defer sub.Close()
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	for {
		ev, ok := sub.Next()
		if !ok {
			break
		}
		var err error
		switch ev.Kind {
		case broker.KindMessage:
			// Converted once for all the streams of this event; each
			// stream only marshals it.
			err = stream.Send(ev.Shared(sharedEventToProto).(*nsbrokerv1.SubscribeResponse))
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

// sharedEventToProto is eventToProto for broker.Event.Shared: the result
// is sent, read-only, on every stream of the event.
func sharedEventToProto(ev broker.Event) any { return eventToProto(ev) }

// subscriptionEnd is the status a subscription the broker ended ends its
// stream with.
func subscriptionEnd(name string, err error) error {
	if err == nil {
		return status.Errorf(codes.Aborted, "subscription to namespace %q ended", name)
	}
	return ToStatus(fmt.Errorf("subscription to namespace %q ended: %w", name, err))
}
