package server

import (
	"math"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Config sets the server's limits. The zero value of a field means its
// default. Limits count per tenant name: the tenant of a namespace-local
// socket is named after its namespace.
type Config struct {
	// MaxSubscribersPerTenant bounds the open Subscribe streams of one
	// tenant (default 64); the admin has no such bound.
	MaxSubscribersPerTenant int
	// MaxSubscribers bounds the open Subscribe streams of everyone,
	// admin included (default 4096).
	MaxSubscribers int
	// PublishRate is how many publishes per second each tenant may make,
	// Publish and every message of PublishStream alike (0: unlimited). The
	// admin is not limited.
	PublishRate float64
	// PublishBurst is how many publishes a tenant may make at once
	// (default: PublishRate rounded up, at least 1).
	PublishBurst int
}

// Defaults of Config.
const (
	DefaultMaxSubscribersPerTenant = 64
	DefaultMaxSubscribers          = 4096
)

func (c *Config) withDefaults() Config {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	if cfg.MaxSubscribersPerTenant <= 0 {
		cfg.MaxSubscribersPerTenant = DefaultMaxSubscribersPerTenant
	}
	if cfg.MaxSubscribers <= 0 {
		cfg.MaxSubscribers = DefaultMaxSubscribers
	}
	if cfg.PublishRate < 0 {
		cfg.PublishRate = 0
	}
	if cfg.PublishBurst <= 0 {
		cfg.PublishBurst = max(1, int(math.Ceil(cfg.PublishRate)))
	}
	return cfg
}

// Server implements nsbrokerv1.BrokerServer over a broker.Broker, with the
// tenancy rules: who may call which rpc on which namespace, and the limits
// on subscribers and publish rate.
type Server struct {
	nsbrokerv1.UnimplementedBrokerServer

	b     *broker.Broker
	cfg   Config
	subs  *subscriberCount
	rates *rateLimits
}

// New returns a Server over b. A nil cfg means defaults.
func New(b *broker.Broker, cfg *Config) *Server {
	c := cfg.withDefaults()
	return &Server{
		b:     b,
		cfg:   c,
		subs:  newSubscriberCount(c.MaxSubscribers, c.MaxSubscribersPerTenant),
		rates: newRateLimits(c.PublishRate, c.PublishBurst),
	}
}

// Register registers the Broker service on g.
func (s *Server) Register(g *grpc.Server) {
	nsbrokerv1.RegisterBrokerServer(g, s)
}
