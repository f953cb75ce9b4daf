package isolation

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// subscriber is one tenant subscription being recorded.
type subscriber struct {
	s   Subscription
	end string // the payload of its namespace's end marker for its group
	// reached is closed when the end marker arrived or the stream ended;
	// finished when the receiving goroutine returned (s is then final).
	reached  chan struct{}
	finished chan struct{}
	cancel   context.CancelFunc
}

// subscribe subscribes every tenant to every group, through its own
// socket, and waits until the daemon has registered the subscriptions.
func (ch *checker) subscribe(ctx context.Context) ([]*subscriber, error) {
	base := make(map[string]uint32)
	for _, ns := range ch.report.Namespaces {
		got, err := ch.getNamespace(ctx, ns.Name)
		if err != nil {
			return nil, err
		}
		base[ns.Name] = got.GetSubscribers()
	}
	var subs []*subscriber
	for _, ns := range ch.report.Namespaces {
		for _, g := range ch.cfg.Groups {
			sctx, cancel := context.WithCancel(ctx)
			stream, err := ch.tenants[ns.Name].Subscribe(sctx, &nsbrokerv1.SubscribeRequest{Groups: []uint32{g}})
			if err != nil {
				cancel()
				stopAll(subs)
				return nil, fmt.Errorf("subscribe to group %d in %s: %s", g, ns.Name, statusText(err))
			}
			sub := &subscriber{
				s:       Subscription{Namespace: ns.Name, Group: g, Items: []Item{}},
				end:     ch.tag(ns.Name, g, "end"),
				reached: make(chan struct{}), finished: make(chan struct{}), cancel: cancel,
			}
			go sub.receive(sctx, stream)
			subs = append(subs, sub)
		}
	}
	if err := ch.waitSubscribed(ctx, subs, base); err != nil {
		stopAll(subs)
		return nil, err
	}
	return subs, nil
}

// receive records everything the stream delivers until it ends.
func (sub *subscriber) receive(ctx context.Context, stream nsbrokerv1.Broker_SubscribeClient) {
	defer close(sub.finished)
	var once sync.Once
	reach := func() { once.Do(func() { close(sub.reached) }) }
	defer reach()
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				sub.s.Err = statusText(err)
			}
			return
		}
		if ev := resp.GetEvent(); ev != nil {
			sub.s.Items = append(sub.s.Items, Item{
				Namespace: ev.GetNamespace(), Group: ev.GetGroup(), Seq: ev.GetSeq(),
				Inode: ev.GetNetnsInode(), Payload: string(ev.GetPayload()),
			})
			if string(ev.GetPayload()) == sub.end {
				reach()
			}
		} else if gap := resp.GetGap(); gap != nil {
			sub.s.Items = append(sub.s.Items, Item{
				Gap: true, Namespace: gap.GetNamespace(), Group: gap.GetGroup(),
				From: gap.GetFromSeq(), To: gap.GetToSeq(), Reason: gap.GetReason().String(),
			})
		}
	}
}

// stopAll ends the subscriptions and waits until their records are final.
func stopAll(subs []*subscriber) {
	for _, s := range subs {
		s.cancel()
	}
	for _, s := range subs {
		<-s.finished
	}
}

// waitSubscribed waits until the daemon counts every new subscription.
func (ch *checker) waitSubscribed(ctx context.Context, subs []*subscriber, base map[string]uint32) error {
	want := uint32(len(ch.cfg.Groups))
	deadline := time.Now().Add(ch.cfg.Timeout)
	for {
		for _, s := range subs {
			select {
			case <-s.finished:
				return fmt.Errorf("the subscription to group %d in %s ended at once: %s", s.s.Group, s.s.Namespace, s.s.Err)
			default:
			}
		}
		pending := ""
		for _, ns := range ch.report.Namespaces {
			got, err := ch.getNamespace(ctx, ns.Name)
			if err != nil {
				return err
			}
			if got.GetSubscribers() < base[ns.Name]+want {
				pending = fmt.Sprintf("%s has %d subscriber(s), want %d", ns.Name, got.GetSubscribers(), base[ns.Name]+want)
				break
			}
		}
		if pending == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("subscriptions not registered after %v: %s", ch.cfg.Timeout, pending)
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return err
		}
	}
}

func (ch *checker) getNamespace(ctx context.Context, name string) (*nsbrokerv1.Namespace, error) {
	rctx, cancel := ch.rpcCtx(ctx)
	defer cancel()
	got, err := ch.admin.GetNamespace(rctx, &nsbrokerv1.GetNamespaceRequest{Namespace: name})
	if err != nil {
		return nil, fmt.Errorf("get %s through the admin socket: %s", name, statusText(err))
	}
	return got, nil
}

// publish has every tenant publish its messages to every group, all
// tenants at once, then one end marker per namespace and group once every
// message is acknowledged, and waits for each subscriber's end marker.
//
// The end markers are what makes "nothing else arrived" observable: the
// module multicasts an event before it answers the publish, and the daemon
// queues it for subscribers as it reads it, before the reply. Every
// message is acknowledged before the first end marker is published, so a
// message leaked to a subscriber is queued before that subscriber's own
// end marker and is seen. (Another namespace's end marker, published after
// a subscriber's own, may leak unseen; end markers are fences, not the
// test data.)
func (ch *checker) publish(ctx context.Context, subs []*subscriber) ([]Publication, error) {
	defer stopAll(subs)
	var (
		mu       sync.Mutex
		pubs     []Publication
		firstErr error
		wg       sync.WaitGroup
	)
	record := func(p Publication, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			return
		}
		pubs = append(pubs, p)
	}
	for _, ns := range ch.report.Namespaces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= ch.cfg.Messages; k++ {
				for _, g := range ch.cfg.Groups {
					p, err := ch.publishOne(ctx, ns.Name, g, strconv.Itoa(k))
					record(p, err)
					if err != nil {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for _, ns := range ch.report.Namespaces {
		for _, g := range ch.cfg.Groups {
			p, err := ch.publishOne(ctx, ns.Name, g, "end")
			if err != nil {
				return nil, err
			}
			p.End = true
			pubs = append(pubs, p)
		}
	}
	timer := time.NewTimer(ch.cfg.Timeout)
	defer timer.Stop()
	for _, s := range subs {
		select {
		case <-s.reached:
		case <-timer.C:
			// The judgement reports what is missing.
			return pubs, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return pubs, nil
}

// publishOne publishes one tagged message through ns's tenant socket.
func (ch *checker) publishOne(ctx context.Context, ns string, group uint32, n string) (Publication, error) {
	payload := ch.tag(ns, group, n)
	rctx, cancel := ch.rpcCtx(ctx)
	defer cancel()
	resp, err := ch.tenants[ns].Publish(rctx, &nsbrokerv1.PublishRequest{Group: group, Payload: []byte(payload)})
	if err != nil {
		return Publication{}, fmt.Errorf("publish to group %d through the tenant socket in %s: %s", group, ns, statusText(err))
	}
	return Publication{Namespace: ns, Group: group, Seq: resp.GetSeq(), Payload: payload}, nil
}

// statusText renders a gRPC error as its code and message, the evidence a
// report quotes: NOT_FOUND "namespace \"x\" not attached".
func statusText(err error) string {
	if err == nil {
		return "OK"
	}
	s := status.Convert(err)
	return fmt.Sprintf("%s %q", codeName(s.Code()), s.Message())
}

// codeName spells a gRPC code as the protocol does: NOT_FOUND.
func codeName(c codes.Code) string {
	name := c.String()
	out := make([]byte, 0, len(name)+4)
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch >= 'A' && ch <= 'Z' {
			if i > 0 && name[i-1] >= 'a' && name[i-1] <= 'z' {
				out = append(out, '_')
			}
		} else if ch >= 'a' && ch <= 'z' {
			ch -= 'a' - 'A'
		}
		out = append(out, ch)
	}
	return string(out)
}
