package server

import (
	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Config configures a Server. A nil Config means defaults.
type Config struct {
	// Budget bounds what tenants can make the server hold; nil means a
	// budget with DefaultLimits. The gRPC server in front of the Server
	// must be built with Budget.GRPCOptions.
	Budget *Budget
	// LocalSocket, when set, reports each namespace's local sockets in
	// the Namespace messages; the daemon calls LocalSocketChanged when
	// they change state.
	LocalSocket LocalSocketFunc
}

// Server implements nsbrokerv1.BrokerServer over a broker.Broker, with the
// tenancy rules: who may call which rpc on which namespace, and what each
// tenant may make the server hold.
type Server struct {
	nsbrokerv1.UnimplementedBrokerServer

	b           *broker.Broker
	budget      *Budget
	localSocket LocalSocketFunc
	localWatch  localWatchers
	events      *eventCache // messages in wire form, shared by their streams
}

// New returns a Server over b. A nil cfg means defaults.
func New(b *broker.Broker, cfg *Config) *Server {
	s := &Server{b: b, events: new(eventCache)}
	if cfg != nil {
		s.budget = cfg.Budget
		s.localSocket = cfg.LocalSocket
	}
	if s.budget == nil {
		s.budget = NewBudget(nil, nil)
	}
	return s
}

// Budget returns the budget the server enforces.
func (s *Server) Budget() *Budget { return s.budget }

// Register registers the Broker service on g.
func (s *Server) Register(g *grpc.Server) {
	nsbrokerv1.RegisterBrokerServer(g, s)
}
