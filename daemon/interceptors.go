package daemon

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
	"github.com/nsbroker/nsbroker/server"
)

// observer counts, times and logs every rpc.
type observer struct {
	m   *metrics
	log *slog.Logger
}

// rpcName is the method without its leading slash:
// "nsbroker.v1.Broker/Echo".
func rpcName(fullMethod string) string { return strings.TrimPrefix(fullMethod, "/") }

// requestNamespace is the namespace a request addresses, as the server
// resolves it; "" when there is none.
func requestNamespace(ctx context.Context, req any) string {
	r, ok := req.(interface{ GetNamespace() string })
	if !ok {
		return ""
	}
	return server.RequestedNamespace(ctx, r.GetNamespace())
}

func (o *observer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	rpc := rpcName(info.FullMethod)
	ns := requestNamespace(ctx, req)
	start := time.Now()
	o.m.started(rpc, ns)
	resp, err := handler(ctx, req)
	o.done(ctx, rpc, ns, start, err)
	return resp, err
}

func (o *observer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	rpc := rpcName(info.FullMethod)
	w := &observedStream{ServerStream: ss, o: o, rpc: rpc}
	start := time.Now()
	err := handler(srv, w)
	w.start("") // for a stream that ended before its first message
	o.done(ss.Context(), rpc, w.ns, start, err)
	return err
}

// done records and logs the end of an rpc.
func (o *observer) done(ctx context.Context, rpc, ns string, start time.Time, err error) {
	took := time.Since(start)
	code := status.Code(err)
	o.m.finished(rpc, ns, code, took)

	level := slog.LevelDebug
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelWarn
	}
	if !o.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("rpc", rpc), slog.String("code", code.String()), slog.Duration("took", took)}
	if ns != "" {
		attrs = append(attrs, slog.String("namespace", ns))
	}
	if id, ok := server.IdentityFromContext(ctx); ok {
		if id.Tenant != "" {
			attrs = append(attrs, slog.String("tenant", id.Tenant))
		}
		attrs = append(attrs, slog.String("peer", id.Peer))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", status.Convert(err).Message()))
	}
	o.log.LogAttrs(ctx, level, "rpc", attrs...)
}

// observedStream learns a stream's namespace from its first request and
// counts what a Subscribe stream sends.
type observedStream struct {
	grpc.ServerStream
	o    *observer
	rpc  string
	once sync.Once
	ns   string // set by once

	delivered prometheus.Counter // this stream's delivered-events counter
}

func (s *observedStream) start(ns string) {
	s.once.Do(func() {
		s.ns = ns
		s.o.m.started(s.rpc, ns)
	})
}

func (s *observedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.start(requestNamespace(s.Context(), m))
	}
	return err
}

func (s *observedStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *nsbrokerv1.SubscribeResponse:
		s.o.m.sent(m, &s.delivered)
	case *grpc.PreparedMsg:
		// Subscribe sends most copies of a shared event prepared;
		// they are events of the stream's namespace.
		s.o.m.deliveredTo(s.ns, &s.delivered)
	}
	return nil
}

// stopper ends server-streaming rpcs (Subscribe, WatchNamespaces, health
// Watch), which would otherwise never finish, when the daemon stops, so
// that the graceful stop does not wait for them until its deadline.
// Client-streaming rpcs finish when their clients close them.
type stopper struct {
	stopping context.Context // cancelled when the daemon begins to stop
}

func (st *stopper) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.IsClientStream || !info.IsServerStream {
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stop := context.AfterFunc(st.stopping, cancel)
	defer stop()
	err := handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	if st.stopping.Err() != nil && ss.Context().Err() == nil {
		return server.ErrShuttingDown
	}
	return err
}

// ctxStream replaces a stream's context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
