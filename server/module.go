package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// ReleaseModule closes the broker's connection in every attached
// namespace so that the module can be unloaded (admin only).
func (s *Server) ReleaseModule(ctx context.Context, _ *nsbrokerv1.ReleaseModuleRequest) (*nsbrokerv1.ReleaseModuleResponse, error) {
	if _, err := s.authorize(ctx, rpcReleaseModule); err != nil {
		return nil, err
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	s.b.Release()
	return &nsbrokerv1.ReleaseModuleResponse{Namespaces: s.namespaces()}, nil
}

// ResumeModule ends a release without waiting for a module reload (admin
// only); with wait set it returns once every attached namespace is ready.
func (s *Server) ResumeModule(ctx context.Context, req *nsbrokerv1.ResumeModuleRequest) (*nsbrokerv1.ResumeModuleResponse, error) {
	if _, err := s.authorize(ctx, rpcResumeModule); err != nil {
		return nil, err
	}
	if !req.GetWait() {
		if err := s.open(); err != nil {
			return nil, err
		}
		s.b.Resume()
		return &nsbrokerv1.ResumeModuleResponse{Namespaces: s.namespaces()}, nil
	}
	// Watch before resuming, so that no change between the two is missed.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes, err := s.b.Watch(ctx)
	if err != nil {
		return nil, ToStatus(err)
	}
	s.b.Resume()
	for {
		if all := s.namespaces(); allReady(all) {
			return &nsbrokerv1.ResumeModuleResponse{Namespaces: all}, nil
		}
		if _, ok := <-changes; !ok {
			if err := ctx.Err(); err != nil {
				return nil, status.FromContextError(err).Err()
			}
			if err := s.open(); err != nil {
				return nil, err
			}
			return nil, ToStatus(fmt.Errorf("resume: %w", broker.ErrWatchOverflow))
		}
	}
}

// open returns ErrShuttingDown once the broker is closed: releasing or
// resuming it then means nothing.
func (s *Server) open() error {
	if s.b.Closed() {
		return ErrShuttingDown
	}
	return nil
}

// namespaces describes every attached namespace, sorted by name.
func (s *Server) namespaces() []*nsbrokerv1.Namespace {
	var out []*nsbrokerv1.Namespace
	for _, in := range s.b.List() {
		out = append(out, s.namespace(in))
	}
	return out
}

func allReady(nss []*nsbrokerv1.Namespace) bool {
	for _, ns := range nss {
		if ns.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY {
			return false
		}
	}
	return true
}
