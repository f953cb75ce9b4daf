package daemon

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Flags that have no configuration key.
const (
	flagConfig        = "config"
	flagNoLocalSocket = "no-local-socket"
	flagPrintConfig   = "print-config"
	flagPrintMemory   = "print-memory-budget"
)

// options are the flags that are not configuration.
type options struct {
	configFile    string
	noLocalSocket bool
	printConfig   bool
	printMemory   bool
}

// newFlagSet binds the flags to cfg and opts; cfg's values are the
// defaults the usage message shows.
func newFlagSet(cfg *Config, opts *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("nsbrokerd", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: nsbrokerd [flags]\n\n"+
			"Serves the nsbroker gRPC API for the attached network namespaces.\n"+
			"Settings come from the defaults, then the --config file, then flags.\n\nFlags:\n")
		fs.PrintDefaults()
	}

	fs.StringVar(&opts.configFile, flagConfig, "", "read settings from this YAML `file` (flags override it)")
	fs.BoolVar(&opts.noLocalSocket, flagNoLocalSocket, false, "open no namespace-local sockets (same as --local-socket '')")
	fs.BoolVar(&opts.printConfig, flagPrintConfig, false, "print the effective configuration as YAML and exit")
	fs.BoolVar(&opts.printMemory, flagPrintMemory, false, "print what the daemon can hold with every limit filled at once, and exit")

	fs.StringVar(&cfg.AdminSocket, "admin-socket", cfg.AdminSocket, "admin unix socket `path` ('' turns it off)")
	fs.StringVar(&cfg.AdminGroup, "admin-group", cfg.AdminGroup, "`group` (name or gid) allowed on the admin socket besides root")
	fs.StringVar(&cfg.LocalSocket, "local-socket", cfg.LocalSocket, "abstract socket `@name` opened in each attached namespace ('' turns it off)")
	fs.StringVar(&cfg.FileSocketDir, "file-socket-dir", cfg.FileSocketDir, "`directory` of the namespaces' filesystem sockets, relative to the admin socket's ('' turns them off)")
	fs.StringVar(&cfg.HandoverSocket, "handover-socket", cfg.HandoverSocket, "unix socket `path` where the daemon hands its sockets to a successor, relative to the admin socket's directory ('' turns handovers off)")
	fs.BoolVar(&cfg.HandoverExit, "handover-exit", cfg.HandoverExit, "exit once the sockets are handed over and drained (false: stay idle until stopped, for a supervisor that restarts what exits)")
	fs.StringVar(&cfg.TCPListen, "tcp-listen", cfg.TCPListen, "TCP `address` for remote tenants, with mutual TLS")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "server certificate `file` (PEM)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "server private key `file` (PEM)")
	fs.StringVar(&cfg.TLSClientCA, "tls-client-ca", cfg.TLSClientCA, "CA bundle `file` (PEM) client certificates must chain to")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, "HTTP `address` serving Prometheus /metrics")
	fs.Var(&listFlag{list: &cfg.Attach}, "attach", "attach the namespace `ref` (NAME, name:NAME, path:PATH or pid:PID) at start-up (repeatable)")
	fs.BoolVar(&cfg.Discover, "discover", cfg.Discover, "attach every namespace in the discover directories and follow them")
	fs.Var(&listFlag{list: &cfg.DiscoverDirs}, "discover-dir", "`directory` watched by --discover (repeatable)")
	fs.StringVar(&cfg.StateFile, "state-file", cfg.StateFile, "record the attachments in this `file` and attach them again at start-up ('' turns it off)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log `level`: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "log `format`: text or json")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long the graceful stop may take (`duration`); open rpcs are cut after it")
	fs.IntVar(&cfg.MaxMsgSize, "max-msg-size", cfg.MaxMsgSize, "largest request message accepted, in `bytes`")
	fs.Var((*uint32Flag)(&cfg.MaxConcurrentStreams), "max-concurrent-streams", "at most `n` concurrent rpcs per connection")
	fs.IntVar(&cfg.MaxConnections, "max-connections", cfg.MaxConnections, "at most `n` open connections in all, --admin-connections of them the admin's alone")
	fs.IntVar(&cfg.MaxConnectionsPerTenant, "max-connections-per-tenant", cfg.MaxConnectionsPerTenant, "at most `n` open connections per tenant")
	fs.IntVar(&cfg.AdminConnections, "admin-connections", cfg.AdminConnections, "`n` of --max-connections only the admin may use")
	fs.IntVar(&cfg.MaxRequests, "max-requests", cfg.MaxRequests, "at most `n` rpcs being read or answered (every unary rpc, each streaming one until it starts) in all, --admin-requests of them the admin's alone")
	fs.IntVar(&cfg.MaxRequestsPerTenant, "max-requests-per-tenant", cfg.MaxRequestsPerTenant, "at most `n` rpcs being read or answered per tenant")
	fs.IntVar(&cfg.AdminRequests, "admin-requests", cfg.AdminRequests, "`n` of --max-requests only the admin may use")
	fs.IntVar(&cfg.MaxStreams, "max-streams", cfg.MaxStreams, "at most `n` open streaming rpcs in all, --admin-streams of them the admin's alone")
	fs.IntVar(&cfg.MaxStreamsPerTenant, "max-streams-per-tenant", cfg.MaxStreamsPerTenant, "at most `n` open streaming rpcs per tenant")
	fs.IntVar(&cfg.AdminStreams, "admin-streams", cfg.AdminStreams, "`n` of --max-streams only the admin may use")
	fs.Int64Var(&cfg.MaxQueuedBytes, "max-queued-bytes", cfg.MaxQueuedBytes, "at most this many `bytes` queued for Subscribe streams in all, --admin-queued-bytes of them the admin's alone")
	fs.Int64Var(&cfg.MaxQueuedBytesPerTenant, "max-queued-bytes-per-tenant", cfg.MaxQueuedBytesPerTenant, "at most this many `bytes` queued for one tenant's Subscribe streams")
	fs.Int64Var(&cfg.AdminQueuedBytes, "admin-queued-bytes", cfg.AdminQueuedBytes, "`bytes` of --max-queued-bytes only the admin may use")
	fs.IntVar(&cfg.MaxPendingHandshakes, "max-pending-handshakes", cfg.MaxPendingHandshakes, "at most `n` TLS handshakes in progress in all")
	fs.IntVar(&cfg.MaxPendingHandshakesAddr, "max-pending-handshakes-per-addr", cfg.MaxPendingHandshakesAddr, "at most `n` TLS handshakes in progress per client address")
	fs.Float64Var(&cfg.PublishRate, "publish-rate", cfg.PublishRate, "each tenant's publishes per second, a `rate` (0: unlimited; the admin is not limited)")
	fs.IntVar(&cfg.PublishBurst, "publish-burst", cfg.PublishBurst, "`n` publishes a tenant may make at once (0: --publish-rate rounded up, at least 1)")
	fs.Float64Var(&cfg.RequestRate, "request-rate", cfg.RequestRate, "each tenant's rpcs per second, a `rate` (0: unlimited; the admin is not limited)")
	fs.IntVar(&cfg.RequestBurst, "request-burst", cfg.RequestBurst, "`n` rpcs a tenant may start at once (0: --request-rate rounded up, at least 1)")
	fs.DurationVar(&cfg.MaxConnectionAge, "max-connection-age", cfg.MaxConnectionAge, "close a TCP connection this `duration` after it opened, so that expired certificates stop working")
	fs.DurationVar(&cfg.KeepaliveMinTime, "keepalive-min-time", cfg.KeepaliveMinTime, "disconnect clients pinging more often than this `duration`")
	fs.BoolVar(&cfg.KeepalivePermitWithoutStream, "keepalive-permit-without-stream", cfg.KeepalivePermitWithoutStream, "allow client keepalive pings without an open rpc")
	fs.DurationVar(&cfg.KeepaliveTime, "keepalive-time", cfg.KeepaliveTime, "ping a connection idle for this `duration`")
	fs.DurationVar(&cfg.KeepaliveTimeout, "keepalive-timeout", cfg.KeepaliveTimeout, "close a connection whose ping is unanswered after this `duration`")
	fs.IntVar(&cfg.Unit, "unit", cfg.Unit, "the module's netlink `unit` (0: read it from sysfs)")
	fs.IntVar(&cfg.QueueLen, "queue-len", cfg.QueueLen, "at most `n` events queued per subscriber; more are lost (with a gap)")
	fs.IntVar(&cfg.QueueBytes, "queue-bytes", cfg.QueueBytes, "at most this many payload `bytes` queued per subscriber; more are lost (with a gap)")
	fs.IntVar(&cfg.RetainEvents, "retain-events", cfg.RetainEvents, "at most `n` events retained per namespace and group for subscribers that resume (0: no retention)")
	fs.IntVar(&cfg.RetainBytes, "retain-bytes", cfg.RetainBytes, "at most this many `bytes` retained per namespace and group (0: no retention)")
	fs.Int64Var(&cfg.RetainTotalBytes, "retain-total-bytes", cfg.RetainTotalBytes, "at most this many `bytes` retained in all namespaces and groups together (0: no retention)")
	fs.IntVar(&cfg.ReadBuffer, "read-buffer", cfg.ReadBuffer, "receive buffer of each namespace's netlink socket, in `bytes`")
	fs.DurationVar(&cfg.RetryInterval, "retry-interval", cfg.RetryInterval, "how often unavailable namespaces are re-dialed")
	return fs
}

// listFlag is a repeatable flag. The first use on the command line
// replaces the list (from the defaults or the file); later uses append.
type listFlag struct {
	list *[]string
	set  bool
}

func (f *listFlag) String() string {
	if f == nil || f.list == nil {
		return ""
	}
	return strings.Join(*f.list, ",")
}

func (f *listFlag) Set(s string) error {
	if !f.set {
		*f.list, f.set = nil, true
	}
	if s == "" {
		return errors.New("empty value")
	}
	*f.list = append(*f.list, s)
	return nil
}

// uint32Flag is a flag holding a uint32.
type uint32Flag uint32

func (f *uint32Flag) String() string {
	if f == nil {
		return "0"
	}
	return strconv.FormatUint(uint64(*f), 10)
}

func (f *uint32Flag) Set(s string) error {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return errors.New("not a number from 0 to 4294967295")
	}
	*f = uint32Flag(v)
	return nil
}

// parseArgs builds the configuration: the defaults, then the file named
// by --config, then the flags given. Errors are usage errors; flag.ErrHelp
// means help was asked for and printed.
func parseArgs(args []string, stderr io.Writer) (*Config, options, error) {
	// The first pass finds --config and rejects bad flags; the second
	// applies the flags over the file.
	var opts options
	first := newFlagSet(Defaults(), &opts, stderr)
	if err := first.Parse(args); err != nil {
		return nil, opts, err
	}
	if first.NArg() > 0 {
		return nil, opts, fmt.Errorf("unexpected argument %q", first.Arg(0))
	}
	set := make(map[string]bool)
	first.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set[flagNoLocalSocket] && set["local-socket"] {
		return nil, opts, errors.New("--no-local-socket and --local-socket exclude each other")
	}

	cfg := Defaults()
	if opts.configFile != "" {
		if err := loadFile(opts.configFile, cfg); err != nil {
			return nil, opts, err
		}
		cfg.ConfigFile = opts.configFile
	}
	second := newFlagSet(cfg, &opts, io.Discard)
	if err := second.Parse(args); err != nil {
		return nil, opts, err
	}
	if opts.noLocalSocket {
		cfg.LocalSocket = ""
	}
	if err := cfg.Validate(); err != nil {
		return nil, opts, err
	}
	return cfg, opts, nil
}
