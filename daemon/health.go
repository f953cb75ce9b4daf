package daemon

import (
	"context"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// brokerService is the Broker service's name; a namespace's health
// service is brokerService + "/" + its attach name.
var brokerService = nsbrokerv1.Broker_ServiceDesc.ServiceName

func namespaceService(name string) string { return brokerService + "/" + name }

// maxListed bounds the answer of Health.List, as the protocol asks.
const maxListed = 1000

type servingStatus = healthpb.HealthCheckResponse_ServingStatus

// healthServer is grpc.health.v1.Health with what the stock server lacks:
// services can be removed (a detached namespace), and a tenant sees only
// the overall services and its own namespaces, as with the Broker rpcs.
type healthServer struct {
	healthpb.UnimplementedHealthServer

	// reaches is the server's rule for who may reach a namespace
	// (server.Server.Reaches); set before the server serves.
	reaches func(ctx context.Context, name string) bool

	mu       sync.Mutex // guards the fields below
	status   map[string]servingStatus
	watchers map[string]map[chan servingStatus]struct{}
	shutdown bool // every status is NOT_SERVING for good
}

func newHealthServer() *healthServer {
	return &healthServer{
		status: map[string]servingStatus{
			"":            healthpb.HealthCheckResponse_SERVING,
			brokerService: healthpb.HealthCheckResponse_SERVING,
		},
		watchers: make(map[string]map[chan servingStatus]struct{}),
	}
}

// visible reports whether the caller may learn about service: the
// overall ones, and a namespace's by the rule every rpc follows.
func (h *healthServer) visible(ctx context.Context, service string) bool {
	if service == "" || service == brokerService {
		return true
	}
	name, ok := strings.CutPrefix(service, brokerService+"/")
	return ok && h.reaches(ctx, name)
}

// Check implements grpc.health.v1.Health.
func (h *healthServer) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.mu.Lock()
	st, ok := h.status[req.GetService()]
	h.mu.Unlock()
	if !ok || !h.visible(ctx, req.GetService()) {
		return nil, status.Error(codes.NotFound, "unknown service")
	}
	return &healthpb.HealthCheckResponse{Status: st}, nil
}

// List implements grpc.health.v1.Health.
func (h *healthServer) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]*healthpb.HealthCheckResponse)
	for svc, st := range h.status {
		if !h.visible(ctx, svc) {
			continue
		}
		if len(out) == maxListed {
			return nil, status.Errorf(codes.ResourceExhausted, "more than %d services", maxListed)
		}
		out[svc] = &healthpb.HealthCheckResponse{Status: st}
	}
	return &healthpb.HealthListResponse{Statuses: out}, nil
}

// Watch implements grpc.health.v1.Health: the current status, then every
// change; SERVICE_UNKNOWN while the service does not exist.
func (h *healthServer) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	svc := req.GetService()
	ctx := stream.Context()
	updates := make(chan servingStatus, 1)
	if !h.visible(ctx, svc) {
		updates <- healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	} else {
		h.mu.Lock()
		st, ok := h.status[svc]
		if !ok {
			st = healthpb.HealthCheckResponse_SERVICE_UNKNOWN
		}
		updates <- st
		if h.watchers[svc] == nil {
			h.watchers[svc] = make(map[chan servingStatus]struct{})
		}
		h.watchers[svc][updates] = struct{}{}
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			delete(h.watchers[svc], updates)
			if len(h.watchers[svc]) == 0 {
				delete(h.watchers, svc)
			}
			h.mu.Unlock()
		}()
	}
	last := servingStatus(-1)
	for {
		select {
		case st := <-updates:
			if st == last {
				continue
			}
			last = st
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// set sets a service's status.
func (h *healthServer) set(svc string, st servingStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shutdown {
		return
	}
	h.status[svc] = st
	h.lockedNotify(svc, st)
}

// remove forgets a service; its watchers see SERVICE_UNKNOWN.
func (h *healthServer) remove(svc string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shutdown {
		return
	}
	delete(h.status, svc)
	h.lockedNotify(svc, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
}

// shutDown turns every service NOT_SERVING and ignores later changes.
func (h *healthServer) shutDown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shutdown = true
	for svc := range h.status {
		h.status[svc] = healthpb.HealthCheckResponse_NOT_SERVING
		h.lockedNotify(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

// lockedNotify hands st to svc's watchers, replacing an update they have
// not sent yet: a slow watcher sees the latest status, not every one.
func (h *healthServer) lockedNotify(svc string, st servingStatus) {
	for ch := range h.watchers[svc] {
		select {
		case <-ch:
		default:
		}
		ch <- st
	}
}
