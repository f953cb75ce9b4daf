package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
	"github.com/nsbroker/nsbroker/server"
)

// Config is the daemon's configuration. Every field with a yaml tag is a
// key of the configuration file and has a command-line flag of the same
// name with dashes (max_msg_size: --max-msg-size), except tenants, which
// only the file sets. Defaults returns the defaults; docs/operations.md
// describes each key.
type Config struct {
	// AdminSocket is the filesystem unix socket for administrators; ""
	// turns it off.
	AdminSocket string `yaml:"admin_socket"`
	// AdminGroup is a group (name or number) whose members may use the
	// admin socket besides root; the socket is then mode 0660 instead of
	// 0600 and owned by that group.
	AdminGroup string `yaml:"admin_group"`
	// LocalSocket is the abstract unix socket ("@name") opened inside each
	// attached namespace for its tenant; "" turns it off.
	LocalSocket string `yaml:"local_socket"`
	// FileSocketDir is the directory of the namespaces' filesystem
	// sockets: DIR/NAME/nsbroker.sock serves the namespace attached as
	// NAME (see FileSocketPath), for a runtime to bind-mount into its
	// containers. A relative path is relative to AdminSocket's
	// directory (off without an admin socket); "" turns them off.
	FileSocketDir string `yaml:"file_socket_dir"`
	// HandoverSocket is where the daemon hands its listening sockets to
	// a successor (a planned upgrade), and where a starting daemon asks
	// its predecessor for them. Relative to AdminSocket's directory like
	// FileSocketDir; "" turns handovers off.
	HandoverSocket string `yaml:"handover_socket"`
	// HandoverExit makes the daemon exit once it has handed its sockets
	// over and drained; false keeps it idle until it is stopped, for a
	// supervisor that restarts what exits (a DaemonSet's kubelet), which
	// would otherwise start it again to take the sockets back.
	HandoverExit bool `yaml:"handover_exit"`

	// TCPListen is the address of the TCP listener for remote tenants
	// (mutual TLS); "" turns it off.
	TCPListen string `yaml:"tcp_listen"`
	// TLSCert and TLSKey are the server's certificate and key (PEM).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TLSClientCA is the PEM bundle client certificates must chain to.
	TLSClientCA string `yaml:"tls_client_ca"`
	// Tenants map client certificates to tenants and their namespaces.
	Tenants []Tenant `yaml:"tenants"`

	// MetricsListen is the address of the HTTP listener serving /metrics;
	// "" turns it off.
	MetricsListen string `yaml:"metrics_listen"`

	// Attach lists namespaces to attach at start-up: NAME, name:NAME,
	// path:PATH or pid:PID.
	Attach []string `yaml:"attach"`
	// Discover attaches every namespace in DiscoverDirs and follows them.
	Discover bool `yaml:"discover"`
	// DiscoverDirs are the directories Discover watches.
	DiscoverDirs []string `yaml:"discover_dir"`
	// StateFile records every attachment, so that a restarted daemon
	// attaches again those whose namespace is provably the same; ""
	// turns it off.
	StateFile string `yaml:"state_file"`

	// LogLevel is debug, info, warn or error; LogFormat is text or json.
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
	// ShutdownTimeout bounds the graceful stop; after it open rpcs are cut.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// MaxMsgSize is the largest request message accepted, in bytes.
	MaxMsgSize int `yaml:"max_msg_size"`
	// MaxConcurrentStreams bounds the concurrent rpcs of one connection.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// The tenant budgets (docs/operations.md adds the defaults up). Each
	// total keeps a reserve for the admin; the admin has no per-tenant
	// bound. MaxConnections bounds the open connections, MaxRequests the
	// rpcs whose request is being read and the unary ones until answered,
	// MaxStreams the open streaming rpcs, MaxQueuedBytes the bytes queued for
	// Subscribe streams, MaxPendingHandshakes the TLS handshakes in
	// progress (in all and per client address).
	MaxConnections           int   `yaml:"max_connections"`
	MaxConnectionsPerTenant  int   `yaml:"max_connections_per_tenant"`
	AdminConnections         int   `yaml:"admin_connections"`
	MaxRequests              int   `yaml:"max_requests"`
	MaxRequestsPerTenant     int   `yaml:"max_requests_per_tenant"`
	AdminRequests            int   `yaml:"admin_requests"`
	MaxStreams               int   `yaml:"max_streams"`
	MaxStreamsPerTenant      int   `yaml:"max_streams_per_tenant"`
	AdminStreams             int   `yaml:"admin_streams"`
	MaxQueuedBytes           int64 `yaml:"max_queued_bytes"`
	MaxQueuedBytesPerTenant  int64 `yaml:"max_queued_bytes_per_tenant"`
	AdminQueuedBytes         int64 `yaml:"admin_queued_bytes"`
	MaxPendingHandshakes     int   `yaml:"max_pending_handshakes"`
	MaxPendingHandshakesAddr int   `yaml:"max_pending_handshakes_per_addr"`
	// PublishRate is each tenant's publishes per second (0: unlimited),
	// with bursts of up to PublishBurst (0: the rate rounded up, at
	// least 1). RequestRate and RequestBurst bound every rpc a tenant
	// starts in the same way. The admin is not limited.
	PublishRate  float64 `yaml:"publish_rate"`
	PublishBurst int     `yaml:"publish_burst"`
	RequestRate  float64 `yaml:"request_rate"`
	RequestBurst int     `yaml:"request_burst"`
	// MaxConnectionAge closes a TCP (TLS) connection this long after it
	// opened, so that a client certificate that has expired stops working
	// on a connection that stays open. The client reconnects and
	// handshakes again.
	MaxConnectionAge time.Duration `yaml:"max_connection_age"`

	// KeepaliveMinTime is the shortest client keepalive interval
	// tolerated; clients pinging more often are disconnected.
	KeepaliveMinTime time.Duration `yaml:"keepalive_min_time"`
	// KeepalivePermitWithoutStream allows client pings on connections
	// without an open rpc.
	KeepalivePermitWithoutStream bool `yaml:"keepalive_permit_without_stream"`
	// KeepaliveTime is how long a connection may be idle before the
	// server pings it; KeepaliveTimeout how long it waits for the answer
	// before closing the connection.
	KeepaliveTime    time.Duration `yaml:"keepalive_time"`
	KeepaliveTimeout time.Duration `yaml:"keepalive_timeout"`

	// Unit is the module's netlink unit; 0 reads it from sysfs.
	Unit int `yaml:"unit"`
	// QueueLen and QueueBytes bound each subscriber's queue in events
	// and in payload bytes.
	QueueLen   int `yaml:"queue_len"`
	QueueBytes int `yaml:"queue_bytes"`
	// RetainEvents and RetainBytes bound the retention ring of each group
	// of each namespace (payload plus a fixed overhead per event), which
	// resuming subscribers are replayed from; RetainTotalBytes bounds all
	// rings together. 0 in any of them turns retention off.
	RetainEvents     int   `yaml:"retain_events"`
	RetainBytes      int   `yaml:"retain_bytes"`
	RetainTotalBytes int64 `yaml:"retain_total_bytes"`
	// ReadBuffer is the receive buffer of each namespace's netlink socket.
	ReadBuffer int `yaml:"read_buffer"`
	// RetryInterval is how often unavailable namespaces are re-dialed.
	RetryInterval time.Duration `yaml:"retry_interval"`

	// ConfigFile is the file the configuration was read from (the
	// --config flag); SIGHUP re-reads its tenants. Not a file key.
	ConfigFile string `yaml:"-"`
	// BrokerConfig, when set, replaces the broker configuration built
	// from Unit, QueueLen, QueueBytes, ReadBuffer, RetryInterval and the
	// retention bounds. It is
	// for tests, which inject a fake kernel (broker/brokertest).
	BrokerConfig *broker.Config `yaml:"-"`
	// Logger, when set, is used instead of a logger on stderr built from
	// LogLevel and LogFormat. For embedding and tests.
	Logger *slog.Logger `yaml:"-"`
	// Ready, when set, is called once every listener is serving, with
	// their addresses. For embedding and tests.
	Ready func(Addrs) `yaml:"-"`

	// hangups delivers SIGHUP; Main sets it so that the handler exists
	// from the first instant. Run installs its own when nil.
	hangups <-chan os.Signal
}

// Tenant maps a client certificate to a tenant of the TCP listener, by
// the certificate's SAN URI or, for a tenant without URI, by its subject
// common name (see server.ClientName).
type Tenant struct {
	// Name names the tenant in logs.
	Name string `yaml:"name"`
	// URI is the SAN URI of the tenant's client certificates, such as a
	// SPIFFE ID; a tenant with a URI has no common name.
	URI string `yaml:"uri"`
	// CommonName is the subject common name of the tenant's client
	// certificates when it has no URI (default: Name).
	CommonName string `yaml:"common_name"`
	// Namespaces are the attach names the tenant may reach.
	Namespaces []string `yaml:"namespaces"`
}

// Addrs are the addresses the daemon listens on; nil when off.
type Addrs struct {
	Admin   net.Addr
	TCP     net.Addr
	Metrics net.Addr
}

// Defaults returns the default configuration.
func Defaults() *Config {
	return &Config{
		AdminSocket:              "/run/nsbroker/nsbroker.sock",
		LocalSocket:              "@nsbroker",
		FileSocketDir:            "ns",
		HandoverSocket:           "handover.sock",
		HandoverExit:             true,
		DiscoverDirs:             []string{nsmgr.NetnsDir},
		StateFile:                DefaultStateFile,
		LogLevel:                 "info",
		LogFormat:                "text",
		ShutdownTimeout:          10 * time.Second,
		MaxMsgSize:               64 << 10,
		MaxConcurrentStreams:     128,
		MaxConnections:           server.DefaultLimits.MaxConnections,
		MaxConnectionsPerTenant:  server.DefaultLimits.MaxConnectionsPerTenant,
		AdminConnections:         server.DefaultLimits.AdminConnections,
		MaxRequests:              server.DefaultLimits.MaxRequests,
		MaxRequestsPerTenant:     server.DefaultLimits.MaxRequestsPerTenant,
		AdminRequests:            server.DefaultLimits.AdminRequests,
		MaxStreams:               server.DefaultLimits.MaxStreams,
		MaxStreamsPerTenant:      server.DefaultLimits.MaxStreamsPerTenant,
		AdminStreams:             server.DefaultLimits.AdminStreams,
		MaxQueuedBytes:           server.DefaultLimits.MaxQueuedBytes,
		MaxQueuedBytesPerTenant:  server.DefaultLimits.MaxQueuedBytesPerTenant,
		AdminQueuedBytes:         server.DefaultLimits.AdminQueuedBytes,
		MaxPendingHandshakes:     server.DefaultLimits.MaxPendingHandshakes,
		MaxPendingHandshakesAddr: server.DefaultLimits.MaxPendingHandshakesPerAddr,
		PublishRate:              server.DefaultLimits.PublishRate,
		RequestRate:              server.DefaultLimits.RequestRate,
		MaxConnectionAge:         time.Hour,
		KeepaliveMinTime:         10 * time.Second,
		KeepaliveTime:            2 * time.Minute,
		KeepaliveTimeout:         20 * time.Second,
		QueueLen:                 1024,
		QueueBytes:               4 << 20,
		RetainEvents:             broker.DefaultRetainEvents,
		RetainBytes:              broker.DefaultRetainBytes,
		RetainTotalBytes:         broker.DefaultRetainTotalBytes,
		ReadBuffer:               4 << 20,
		RetryInterval:            250 * time.Millisecond,
	}
}

// loadFile decodes the YAML file at path over cfg. Unknown keys, values
// of the wrong type and more than one document are errors.
func loadFile(path string, cfg *Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := decodeYAML(data, cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func decodeYAML(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file changes nothing
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document")
	}
	return nil
}

// runPath resolves p, a path relative to the admin socket's directory
// or absolute; "" when off.
func (c *Config) runPath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if c.AdminSocket == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(c.AdminSocket), p)
}

// limits are the server's tenant budgets.
func (c *Config) limits() *server.Limits {
	// In the file and the flags 0 means unlimited; in server.Limits it
	// means the default.
	unlimitedIfZero := func(r float64) float64 {
		if r == 0 {
			return -1
		}
		return r
	}
	return &server.Limits{
		MaxConnections:              c.MaxConnections,
		MaxConnectionsPerTenant:     c.MaxConnectionsPerTenant,
		AdminConnections:            c.AdminConnections,
		MaxRequests:                 c.MaxRequests,
		MaxRequestsPerTenant:        c.MaxRequestsPerTenant,
		AdminRequests:               c.AdminRequests,
		MaxStreams:                  c.MaxStreams,
		MaxStreamsPerTenant:         c.MaxStreamsPerTenant,
		AdminStreams:                c.AdminStreams,
		MaxQueuedBytes:              c.MaxQueuedBytes,
		MaxQueuedBytesPerTenant:     c.MaxQueuedBytesPerTenant,
		AdminQueuedBytes:            c.AdminQueuedBytes,
		MaxPendingHandshakes:        c.MaxPendingHandshakes,
		MaxPendingHandshakesPerAddr: c.MaxPendingHandshakesAddr,
		PublishRate:                 unlimitedIfZero(c.PublishRate),
		PublishBurst:                c.PublishBurst,
		RequestRate:                 unlimitedIfZero(c.RequestRate),
		RequestBurst:                c.RequestBurst,
	}
}

// brokerConfig is the broker's configuration.
func (c *Config) brokerConfig() *broker.Config {
	if c.BrokerConfig != nil {
		return c.BrokerConfig
	}
	cfg := &broker.Config{
		Unit:             c.Unit,
		QueueLen:         c.QueueLen,
		QueueBytes:       c.QueueBytes,
		ReadBuffer:       c.ReadBuffer,
		RetryInterval:    c.RetryInterval,
		RetainEvents:     c.RetainEvents,
		RetainBytes:      c.RetainBytes,
		RetainTotalBytes: c.RetainTotalBytes,
	}
	if c.RetainEvents == 0 || c.RetainBytes == 0 || c.RetainTotalBytes == 0 {
		cfg.RetainEvents = -1 // off; the broker's 0 means its default
	}
	return cfg
}
