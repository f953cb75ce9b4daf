package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	// Clients may compress their messages with gzip (grpc-health-probe
	// -gzip, for one); the server answers in kind.
	_ "google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
	"github.com/nsbroker/nsbroker/server"
)

// Run runs the daemon until ctx is cancelled, then stops gracefully: the
// server-streaming rpcs end with UNAVAILABLE "server shutting down", the
// others get up to ShutdownTimeout to finish. SIGHUP reloads the tenants
// from cfg.ConfigFile and the TLS certificate, key and client CA files,
// all or none. A nil cfg means Defaults. Run returns an error if
// the configuration is invalid, a listener cannot be opened, or serving
// fails; nil after a clean stop.
func Run(ctx context.Context, cfg *Config) error {
	if cfg == nil {
		cfg = Defaults()
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	hup := cfg.hangups
	if hup == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		defer signal.Stop(ch)
		hup = ch
	}
	log := cfg.Logger
	if log == nil {
		log = newLogger(cfg, os.Stderr)
	}
	d := &daemon{cfg: cfg, log: log, handedOver: make(chan struct{}), settling: make(chan chan struct{})}
	return d.run(ctx, hup)
}

// daemon is one Run.
type daemon struct {
	cfg *Config
	log *slog.Logger

	b       *broker.Broker
	m       *metrics
	health  *healthServer
	g       *grpc.Server
	tenants tenants
	tls     *tlsSetup // nil without TCP
	tcp     connSet   // the TCP listener's connections

	serving     sync.WaitGroup   // the fixed listeners' serve loops
	serveErr    chan error       // a serve loop that failed
	metricsHTTP *http.Server     // nil without metrics
	local       *localSockets    // nil without local sockets
	acceptor    *server.Acceptor // accepts on every namespace's local sockets
	state       *stateFile       // nil without a state file
	srv         *server.Server
	budget      *server.Budget

	// Continuity across restarts: what the previous daemon left (nil for
	// nothing), whether the service manager keeps the sockets, and the
	// fixed listeners to hand on.
	inherit        *inherited
	fdStore        bool
	fixed          []fixedListener
	handedOver     chan struct{} // closed once a successor serves
	handedOverOnce sync.Once
	handingOver    atomic.Bool        // the sockets are being (or were) handed over
	settling       chan chan struct{} // the follower's settle requests
}

func (d *daemon) run(ctx context.Context, hup <-chan os.Signal) (err error) {
	cfg := d.cfg
	d.tenants.cur.Store(newTenantTable(cfg.Tenants))
	if cfg.TCPListen != "" {
		if d.tls, err = newTLSSetup(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA); err != nil {
			return err
		}
	}
	d.b = broker.New(cfg.brokerConfig())
	defer d.b.Close()
	d.state = newStateFile(cfg.StateFile, d.b, d.log)
	d.m = newMetrics(d.b)
	d.health = newHealthServer()
	if d.acceptor, err = server.NewAcceptor(); err != nil {
		return err
	}
	d.local = d.newLocalSockets()
	stopping, beginStop := context.WithCancel(context.Background())
	defer beginStop()
	d.g = d.newGRPCServer(stopping)
	defer d.g.Stop() // after a failed start; a no-op after GracefulStop
	// The namespaces' local sockets are served as each opens, through
	// one acceptor; gRPC's stop closes it.
	d.serveErr = make(chan error, 4)
	d.serveOn("local", d.acceptor, d.g.Serve)
	defer d.acceptor.Close() // after a failed start

	pred, err := d.inheritSockets()
	if err != nil {
		return err
	}
	lis, err := d.listen()
	if err != nil {
		if pred != nil {
			pred.close()
		}
		d.inherit.rest()
		return err
	}
	// Follow the attached namespaces before attaching any.
	followCtx, stopFollowing := context.WithCancel(context.Background())
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		d.follower().run(followCtx)
	}()
	attachCtx, stopAttaching := context.WithCancel(ctx)
	defer stopAttaching()
	d.state.restore(attachCtx) // first: under the names the clients know
	attachListed(attachCtx, d.b, d.log, cfg.Attach)
	var disc *discoverer
	if cfg.Discover {
		if disc, err = startDiscovery(attachCtx, d.b, d.log, cfg.DiscoverDirs); err != nil {
			err = fmt.Errorf("discover: %w", err)
		}
	}
	d.state.record(attachCtx)
	defer d.state.stopRecording()
	// The sockets inherited for namespaces not attached again are closed
	// once the follower has given the attached ones theirs.
	d.settle(followed)
	if rest := d.inherit.rest(); len(rest) > 0 {
		d.log.Info("inherited sockets of namespaces no longer attached closed", "from", d.inherit.from, "names", rest)
		if d.fdStore {
			for _, name := range rest {
				sdUnstore(name)
			}
		}
	}
	// Served only now: a client reconnecting after a restart finds the
	// namespaces it had, not NOT_FOUND. Until then, connections wait in
	// the listeners' backlogs.
	d.serve(lis)
	d.storeFixed()
	if pred != nil {
		if perr := pred.ready(); perr != nil {
			d.log.Warn("cannot tell the previous daemon to drain; both serve until it stops", "err", perr)
		} else {
			d.log.Info("took over from the previous daemon; it drains")
		}
	}

	if err == nil {
		d.log.Info("nsbrokerd serving", append(lis.logAttrs(), "local_socket", cfg.LocalSocket, "file_socket_dir", d.local.dir)...)
		if cfg.Ready != nil {
			cfg.Ready(lis.addrs())
		}
		if nerr := sdNotify("READY=1"); nerr != nil {
			d.log.Warn("cannot notify the service manager", "err", nerr)
		}
		err = d.wait(ctx, hup)
	}

	// Stop: health says so, nothing new is attached, server streams end,
	// the rest get a deadline.
	d.log.Info("nsbrokerd stopping")
	sdNotify("STOPPING=1")
	d.health.shutDown()
	stopAttaching()
	if disc != nil {
		disc.stop()
	}
	d.state.stopRecording()
	stopFollowing()
	<-followed
	beginStop()
	d.gracefulStop()
	if lis.handover != nil {
		lis.handover.Close()
	}
	d.closeRest()
	if lis.adminSocket != nil && !d.keepFiles() {
		os.Remove(cfg.AdminSocket)
	}
	if lis.handover != nil && !d.keepFiles() {
		os.Remove(cfg.runPath(cfg.HandoverSocket))
	}
	if err == nil {
		d.log.Info("nsbrokerd stopped")
	}
	if d.handedOverNow() && !cfg.HandoverExit {
		d.log.Info("handed over; idle until stopped")
		<-ctx.Done()
	}
	return err
}

// handedOverNow reports whether a successor serves this daemon's sockets.
func (d *daemon) handedOverNow() bool {
	select {
	case <-d.handedOver:
		return true
	default:
		return false
	}
}

// serveOn serves l with fn on a goroutine of its own, until it is closed.
func (d *daemon) serveOn(name string, l net.Listener, fn func(net.Listener) error) {
	d.serving.Add(1)
	go func() {
		defer d.serving.Done()
		if err := fn(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, http.ErrServerClosed) {
			d.serveErr <- fmt.Errorf("%s listener: %w", name, err)
		}
	}()
}

// serve serves the fixed listeners, each on its own goroutine.
func (d *daemon) serve(lis *listeners) {
	serve := d.serveOn
	if lis.metrics != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(d.m.reg, promhttp.HandlerOpts{Registry: d.m.reg}))
		d.metricsHTTP = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		serve("metrics", lis.metrics, d.metricsHTTP.Serve)
	}
	if lis.admin != nil {
		serve("admin", lis.admin, d.g.Serve)
	}
	if lis.handover != nil {
		go d.serveHandover(lis.handover)
	}
	if lis.tcp != nil {
		serve("tcp", &trackingListener{Listener: lis.tcp, conns: &d.tcp, maxAge: d.cfg.MaxConnectionAge}, d.g.Serve)
	}
}

// follower returns the follower of the attached namespaces, with the
// local sockets when they are on.
func (d *daemon) follower() *follower {
	f := &follower{b: d.b, health: d.health, m: d.m, log: d.log, known: make(map[string]nsmgr.ID),
		retry: d.cfg.RetryInterval, settle: d.settling}
	if d.local.enabled() {
		f.local = d.local
	}
	return f
}

// refused counts a refusal by a limit, and logs a tenant shut out.
func (d *daemon) refused(r server.Refusal) {
	d.m.refused(r)
	if r.ShutOut > 0 {
		d.log.Warn("tenant shut out: it went on opening rpcs after they were refused",
			"tenant", r.Identity.Tenant, "peer", r.Identity.Peer, "for", r.ShutOut)
	}
}

// newLocalSockets returns the namespaces' local sockets as configured.
func (d *daemon) newLocalSockets() *localSockets {
	ls := newLocalSockets(d.cfg.LocalSocket, d.cfg.runPath(d.cfg.FileSocketDir), d.log)
	// The namespace the broker holds, only while the name still names it.
	ls.enter = func(in broker.Info, fn func() error) error {
		return d.b.Do(broker.WithNamespaceID(context.Background(), in.ID), in.Name, fn)
	}
	ls.serve = func(ln *net.UnixListener, wrap func(net.Listener) net.Listener) error {
		return d.acceptor.Add(ln, func(l net.Listener) net.Listener { return d.budget.Gate(wrap(l)) })
	}
	ls.unserve = d.acceptor.Remove
	ls.gauge = func(n int) { d.m.local.Set(float64(n)) }
	ls.squatted = d.m.squat
	ls.changed = func(name string) { d.srv.LocalSocketChanged(name) }
	return ls
}

// localStatus reports a namespace's local sockets to the server.
func (d *daemon) localStatus(in broker.Info) *nsbrokerv1.LocalSocket {
	if !d.local.enabled() {
		return &nsbrokerv1.LocalSocket{State: nsbrokerv1.LocalSocket_STATE_OFF}
	}
	return d.local.status(in)
}

// inheritSockets takes the listening sockets of the previous daemon:
// from the service manager's fd store if it passed any, else from a
// daemon answering on the handover socket, which then waits for this one
// to serve (pred). It also turns on the fd store when the service manager
// offers one.
func (d *daemon) inheritSockets() (pred *predecessor, err error) {
	d.fdStore = fdStoreOn()
	if d.fdStore {
		d.local.store = func(name string, f *os.File) {
			if err := sdStore(name, f); err != nil {
				d.log.Warn("cannot hand a socket to the service manager", "name", name, "err", err)
			}
		}
		d.local.unstore = func(name string) { sdUnstore(name) }
	}
	if d.inherit, err = fromServiceManager(d.log); err != nil {
		d.log.Warn("descriptors from the service manager ignored", "err", err)
	}
	if d.inherit == nil {
		if path := d.cfg.runPath(d.cfg.HandoverSocket); path != "" {
			var names []string
			var files []*os.File
			pred, names, files, err = takeOver(path)
			switch {
			case errors.Is(err, errNoPredecessor):
			case err != nil:
				return nil, fmt.Errorf("handover socket: %w", err)
			default:
				d.inherit = newInherited("handover", names, files, d.log)
			}
		}
	}
	if d.inherit != nil {
		d.log.Info("inherited listening sockets", "from", d.inherit.from, "count", len(d.inherit.files))
	}
	d.local.inherit = d.inherit
	return pred, nil
}

// storeFixed hands the fixed listeners to the fd store.
func (d *daemon) storeFixed() {
	if !d.fdStore {
		return
	}
	for _, fx := range d.fixed {
		f, err := fx.ln.File()
		if err != nil {
			continue
		}
		if err := sdStore(fx.name, f); err != nil {
			d.log.Warn("cannot hand a socket to the service manager", "name", fx.name, "err", err)
		}
		f.Close()
	}
}

// keepFiles reports whether the daemon leaves its socket files in place
// when it stops: a successor serves them, or the service manager holds
// them for the next start.
func (d *daemon) keepFiles() bool {
	// Once the sockets are on their way to a successor, their files are
	// its too, whether or not it has said it serves yet.
	return d.handingOver.Load() || d.handedOverNow() || d.fdStore
}

// refuseDuringHandover turns attaches and detaches away while the
// sockets are being handed over: the successor has read the state file
// already, and would not know of them.
func (d *daemon) refuseDuringHandover(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	switch info.FullMethod {
	case nsbrokerv1.Broker_AttachNamespace_FullMethodName, nsbrokerv1.Broker_AttachNamespaces_FullMethodName,
		nsbrokerv1.Broker_DetachNamespace_FullMethodName:
		if d.handingOver.Load() {
			return nil, status.Error(codes.Unavailable, "handing over to a new daemon: try again")
		}
	}
	return handler(ctx, req)
}

// settle waits until the follower has applied what the broker reported
// so far; followed is closed when the follower stops.
func (d *daemon) settle(followed <-chan struct{}) {
	done := make(chan struct{})
	select {
	case d.settling <- done:
	case <-followed:
		return
	}
	select {
	case <-done:
	case <-followed:
	case <-time.After(settleTimeout):
		d.log.Warn("the attached namespaces' local sockets are not all open yet; going on", "waited", settleTimeout)
	}
}

// settleTimeout bounds how long start-up waits for the follower.
const settleTimeout = time.Minute

// closeRest closes what the gRPC server's stop left open, once the
// follower has stopped.
func (d *daemon) closeRest() {
	d.local.stopAll(d.keepFiles())
	if d.metricsHTTP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d.metricsHTTP.Shutdown(ctx)
		cancel()
	}
	d.serving.Wait()
}

// wait serves until ctx is cancelled or a listener fails, reloading the
// tenants on each SIGHUP.
func (d *daemon) wait(ctx context.Context, hup <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.handedOver:
			return nil
		case err := <-d.serveErr:
			return err
		case <-hup:
			sdNotify(reloadingState())
			d.reload()
			sdNotify("READY=1")
		}
	}
}

// gracefulStop stops the gRPC server, cutting what is still open after
// the shutdown timeout.
func (d *daemon) gracefulStop() {
	done := make(chan struct{})
	go func() {
		d.g.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(d.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		d.log.Warn("shutdown timeout reached; cutting the remaining rpcs", "timeout", d.cfg.ShutdownTimeout)
		d.g.Stop()
		<-done
	}
}

func (d *daemon) newGRPCServer(stopping context.Context) *grpc.Server {
	cfg := d.cfg
	obs := &observer{m: d.m, log: d.log}
	st := &stopper{stopping: stopping}
	budget := server.NewBudget(cfg.limits(), d.refused)
	srv := server.New(d.b, &server.Config{Budget: budget, LocalSocket: d.localStatus})
	d.srv, d.budget = srv, budget
	d.health.reaches = srv.Reaches
	opts := append(budget.GRPCOptions(server.Credentials(d.tlsConfig(), d.tenants.current)),
		grpc.ChainUnaryInterceptor(obs.unary, d.refuseDuringHandover, d.state.unary),
		grpc.ChainStreamInterceptor(obs.stream, st.stream),
		// A peer that connects and says nothing must not hold the
		// connection (or a graceful stop) for gRPC's default 120 s.
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.MaxRecvMsgSize(cfg.MaxMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: cfg.KeepalivePermitWithoutStream,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.KeepaliveTime,
			Timeout: cfg.KeepaliveTimeout,
		}),
	)
	g := grpc.NewServer(opts...)
	srv.Register(g)
	healthpb.RegisterHealthServer(g, d.health)
	reflection.Register(g)
	return g
}

func (d *daemon) tlsConfig() *tls.Config {
	if d.tls == nil {
		return nil
	}
	return d.tls.config
}

// handshakeTimeout bounds a new connection's handshake (credentials and
// HTTP/2 preface).
const handshakeTimeout = 10 * time.Second
