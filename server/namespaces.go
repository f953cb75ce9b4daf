package server

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/internal/quote"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// ListNamespaces lists the attached namespaces the caller may reach.
func (s *Server) ListNamespaces(ctx context.Context, _ *nsbrokerv1.ListNamespacesRequest) (*nsbrokerv1.ListNamespacesResponse, error) {
	id, err := s.authorize(ctx, rpcListNamespaces)
	if err != nil {
		return nil, err
	}
	resp := &nsbrokerv1.ListNamespacesResponse{}
	for _, in := range s.b.List() {
		if visible(id, in) {
			resp.Namespaces = append(resp.Namespaces, s.namespace(in))
		}
	}
	return resp, nil
}

// GetNamespace describes one attached namespace.
func (s *Server) GetNamespace(ctx context.Context, req *nsbrokerv1.GetNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	_, id, name, err := s.authorizeNamespace(ctx, rpcGetNamespace, req.GetNamespace())
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
	return s.namespace(in), nil
}

// AttachNamespace attaches a namespace (admin only).
func (s *Server) AttachNamespace(ctx context.Context, req *nsbrokerv1.AttachNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	if _, err := s.authorize(ctx, rpcAttachNamespace); err != nil {
		return nil, err
	}
	return s.attach(ctx, req)
}

// attach attaches what req names, for an authorized caller. A name or a
// reference over its bound (broker.MaxNameLen, nsmgr.NameMax,
// nsmgr.PathMax) is InvalidArgument before anything is opened.
func (s *Server) attach(ctx context.Context, req *nsbrokerv1.AttachNamespaceRequest) (*nsbrokerv1.Namespace, error) {
	if err := broker.CheckName(req.GetName()); err != nil {
		return nil, ToStatus(err)
	}
	ref := refFromProto(req.GetRef())
	if err := ref.Validate(); err != nil {
		return nil, ToStatus(err)
	}
	in, err := s.b.Attach(ctx, req.GetName(), ref)
	if err != nil {
		return nil, ToStatus(err)
	}
	return s.namespace(in), nil
}

// MaxAttachMany is the most entries one AttachNamespaces request may hold.
const MaxAttachMany = 10000

// AttachNamespaces attaches several namespaces (admin only), each as
// AttachNamespace would. Up to GOMAXPROCS attach at a time: an attach
// spends most of its time in system calls on a thread of its own in the
// namespace, so they overlap. Once the call is cancelled, the entries not
// yet started are not attached and get its status.
func (s *Server) AttachNamespaces(ctx context.Context, req *nsbrokerv1.AttachNamespacesRequest) (*nsbrokerv1.AttachNamespacesResponse, error) {
	if _, err := s.authorize(ctx, rpcAttachMany); err != nil {
		return nil, err
	}
	entries := req.GetNamespaces()
	if len(entries) > MaxAttachMany {
		return nil, status.Errorf(codes.InvalidArgument, "%d namespaces in one request; at most %d", len(entries), MaxAttachMany)
	}
	results := make([]*nsbrokerv1.AttachResult, len(entries))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(entries)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = s.attachOne(ctx, entries[i])
			}
		}()
	}
	for i := range entries {
		if ctx.Err() != nil {
			results[i] = failedAttach(status.FromContextError(ctx.Err()))
			continue
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return &nsbrokerv1.AttachNamespacesResponse{Results: results}, nil
}

// attachOne attaches one entry of AttachNamespaces.
func (s *Server) attachOne(ctx context.Context, req *nsbrokerv1.AttachNamespaceRequest) *nsbrokerv1.AttachResult {
	ns, err := s.attach(ctx, req)
	if err != nil {
		return failedAttach(status.Convert(err))
	}
	return &nsbrokerv1.AttachResult{Namespace: ns}
}

// failedAttach is the result of an entry that was not attached.
func failedAttach(st *status.Status) *nsbrokerv1.AttachResult {
	return &nsbrokerv1.AttachResult{Code: int32(st.Code()), Message: st.Message()}
}

// DetachNamespace detaches a namespace (admin only).
func (s *Server) DetachNamespace(ctx context.Context, req *nsbrokerv1.DetachNamespaceRequest) (*nsbrokerv1.DetachNamespaceResponse, error) {
	_, _, name, err := s.authorizeNamespace(ctx, rpcDetachNamespace, req.GetNamespace())
	if err != nil {
		return nil, err
	}
	if err := s.b.Detach(name); err != nil {
		return nil, ToStatus(err)
	}
	return &nsbrokerv1.DetachNamespaceResponse{}, nil
}

// WatchNamespaces streams the namespaces the caller may reach and their
// changes, including those of their local sockets (KIND_LOCAL_SOCKET). A namespace-local tenant's watch ends, with ABORTED, once its
// own namespace is detached or gone.
func (s *Server) WatchNamespaces(_ *nsbrokerv1.WatchNamespacesRequest, stream grpc.ServerStreamingServer[nsbrokerv1.NamespaceEvent]) error {
	ctx := stream.Context()
	id, err := s.authorize(ctx, rpcWatchNamespaces)
	if err != nil {
		return err
	}
	lw := s.localWatch.add()
	defer s.localWatch.remove(lw)
	events, err := s.b.WatchOnly(ctx, func(in broker.Info) bool { return visible(id, in) })
	if err != nil {
		return ToStatus(err)
	}
watch:
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				break watch
			}
			if err := stream.Send(s.namespaceEvent(ev)); err != nil {
				return err
			}
			if id.netns != (nsmgr.ID{}) && (ev.Kind == broker.NamespaceDetached || ev.Kind == broker.NamespaceGone) {
				return status.Errorf(codes.Aborted, "namespace %s %s", quote.String(ev.Info.Name), ev.Kind)
			}
		case <-lw.wake:
			for _, name := range lw.take() {
				in, err := s.b.Get(name)
				if err != nil || !visible(id, in) {
					continue // detached meanwhile: its event says so
				}
				ev := &nsbrokerv1.NamespaceEvent{Kind: nsbrokerv1.NamespaceEvent_KIND_LOCAL_SOCKET, Namespace: s.namespace(in)}
				if err := stream.Send(ev); err != nil {
					return err
				}
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return s.watchEnd()
}

// watchEnd says why a namespace watch ended without being cancelled: the
// broker closed, or the watcher fell behind.
func (s *Server) watchEnd() error {
	if s.b.Closed() {
		return ErrShuttingDown
	}
	return ToStatus(fmt.Errorf("watch: %w", broker.ErrWatchOverflow))
}
