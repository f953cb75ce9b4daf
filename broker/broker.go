package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/quote"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// Config tunes a Broker. The zero value of every field means its default.
type Config struct {
	// Unit is the module's netlink unit; 0 reads it from
	// /sys/module/nsbroker/parameters/unit, again only after a dial
	// failed or the module was seen unloaded or reloaded.
	Unit int
	// QueueLen bounds each subscriber's queue in events (default 1024).
	QueueLen int
	// QueueBytes bounds each subscriber's queued payload (default 4 MiB).
	QueueBytes int
	// ReadBuffer is the receive buffer of each namespace socket, set with
	// SO_RCVBUFFORCE (default 4 MiB).
	ReadBuffer int
	// RetryInterval is how often unavailable namespaces are re-dialed
	// (default 250 ms).
	RetryInterval time.Duration
	// RetainEvents and RetainBytes bound the retention ring of each group
	// of each namespace: the latest events, replayed to subscribers that
	// resume (NewSubscriptionAt). Bytes count payload plus a fixed
	// overhead per event. Defaults 1024 events and 256 KiB; a negative
	// value turns retention off. A group stays joined, and retained,
	// after its last subscriber leaves, until its namespace is detached.
	RetainEvents int
	RetainBytes  int
	// RetainTotalBytes bounds what the rings of all namespaces and groups
	// hold together (default 32 MiB). A ring that finds it full gives up
	// its own oldest events for its new ones.
	RetainTotalBytes int64
	// Dial opens a connection in a namespace (default: a netlink socket).
	Dial DialFunc
	// ModuleIdentity reports whether the module is loaded and, if it is,
	// an identity that differs at every load (0: unknown). Recovery after
	// Release waits for the module to go and come again, or for the
	// identity to change, which catches an unload and reload quicker than
	// the broker looks. Default: the inode number of /sys/module/nsbroker,
	// which the kernel allocates anew for every load.
	ModuleIdentity func() (id uint64, loaded bool)

	// readUnit reads the loaded module's unit (tests replace it).
	readUnit func() (int, error)
}

func (c *Config) withDefaults() Config {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 1024
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 4 << 20
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 4 << 20
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 250 * time.Millisecond
	}
	if cfg.RetainEvents == 0 {
		cfg.RetainEvents = DefaultRetainEvents
	}
	if cfg.RetainBytes == 0 {
		cfg.RetainBytes = DefaultRetainBytes
	}
	if cfg.RetainTotalBytes == 0 {
		cfg.RetainTotalBytes = DefaultRetainTotalBytes
	}
	if cfg.Dial == nil {
		cfg.Dial = dialFamily
	}
	if cfg.ModuleIdentity == nil {
		cfg.ModuleIdentity = moduleIdentity
	}
	if cfg.readUnit == nil {
		cfg.readUnit = readUnit
	}
	return cfg
}

// The retention defaults (Config.RetainEvents, RetainBytes,
// RetainTotalBytes).
const (
	DefaultRetainEvents     = 1024
	DefaultRetainBytes      = 256 << 10
	DefaultRetainTotalBytes = 32 << 20
)

// retaining reports whether events are retained for resuming subscribers.
func (c *Config) retaining() bool {
	return c.RetainEvents > 0 && c.RetainBytes > 0 && c.RetainTotalBytes > 0
}

const moduleDir = "/sys/module/nsbroker"

func moduleLoaded() bool {
	_, err := os.Stat(moduleDir)
	return err == nil
}

// moduleIdentity is the default Config.ModuleIdentity: kernfs numbers the
// inodes of its directories from a cyclic counter, so the module's sysfs
// directory gets a new inode number at every load.
func moduleIdentity() (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(moduleDir, &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// ErrModuleMissing: the nsbroker module is not loaded.
var ErrModuleMissing = errors.New("nsbroker module not loaded")

// readUnit reads the loaded module's netlink unit from sysfs.
func readUnit() (int, error) {
	b, err := os.ReadFile(filepath.Join(moduleDir, "parameters/unit"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrModuleMissing
	}
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// Info describes an attached namespace.
type Info struct {
	Name       string
	Ref        nsmgr.Ref
	ID         nsmgr.ID
	Inode      uint32
	Cookie     uint64
	State      State
	Reason     string // why it is unavailable
	AttachedAt time.Time
	// Epoch counts successful dials; it grows when the broker re-dials.
	Epoch       uint64
	Subscribers int
	Received    uint64 // events received from the kernel
	Delivered   uint64 // events handed to current subscribers
	Overruns    uint64 // ENOBUFS reported by the kernel socket
	OverrunLost uint64 // events lost to kernel overruns
	QueueLost   uint64 // events current subscribers lost to full queues
	// Forged counts the datagrams dropped because they did not come from
	// the kernel: sent straight to the socket's groups by a process with
	// CAP_NET_ADMIN over the namespace (family.ErrForged).
	Forged uint64
}

// Broker attaches network namespaces and serves requests and
// subscriptions to the nsbroker module inside each of them.
type Broker struct {
	cfg  Config
	wake chan struct{} // capacity 1: something needs re-dialing
	done chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex // guards the fields below
	byName     map[string]*nsConn
	byID       map[nsmgr.ID]*nsConn // the same namespaces, by identity
	watchers   map[*nsWatcher]struct{}
	dirWatches map[string]*dirWatch
	held       bool   // released: wait for the module to be reloaded
	sawAbsent  bool   // while held: the module was seen unloaded
	heldID     uint64 // while held: the module identity at Release
	closed     bool

	// unavailable counts the attached namespaces without a connection
	// (nsConn.lockedCountDown), so that the recovery loop does not walk
	// thousands of connected ones at every tick.
	unavailable atomic.Int64

	// retainBudget bounds the retention rings together
	// (Config.RetainTotalBytes); retainRefused counts the events it had
	// no room for.
	retainBudget  *ByteBudget
	retainRefused atomic.Uint64

	// unit is the module's unit read at the last dial, 0 when it must be
	// read again.
	unitMu sync.Mutex
	unit   int
}

// New starts a Broker. A nil config means defaults.
func New(cfg *Config) *Broker {
	b := &Broker{
		cfg:        cfg.withDefaults(),
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		byName:     make(map[string]*nsConn),
		byID:       make(map[nsmgr.ID]*nsConn),
		watchers:   make(map[*nsWatcher]struct{}),
		dirWatches: make(map[string]*dirWatch),
	}
	b.retainBudget = NewByteBudget(b.cfg.RetainTotalBytes, nil)
	b.wg.Add(1)
	go b.recover()
	return b
}

func (b *Broker) dialConn(ns *nsmgr.Namespace) (*family.Conn, error) {
	if b.cfg.Unit != 0 {
		return b.cfg.Dial(ns, b.cfg.Unit, b.cfg.ReadBuffer)
	}
	unit, cached, err := b.moduleUnit()
	if err != nil {
		return nil, err
	}
	conn, err := b.cfg.Dial(ns, unit, b.cfg.ReadBuffer)
	if err == nil || !cached {
		if err != nil {
			b.forgetUnit()
		}
		return conn, err
	}
	// The module may have been reloaded with another unit since it was
	// read: read it again, and retry if it changed.
	b.forgetUnit()
	fresh, _, uerr := b.moduleUnit()
	if uerr != nil {
		return nil, uerr
	}
	if fresh == unit {
		return nil, err
	}
	conn, err = b.cfg.Dial(ns, fresh, b.cfg.ReadBuffer)
	if err != nil {
		b.forgetUnit()
	}
	return conn, err
}

// moduleUnit returns the module's unit, read from sysfs unless a previous
// dial read it (cached).
func (b *Broker) moduleUnit() (unit int, cached bool, err error) {
	b.unitMu.Lock()
	defer b.unitMu.Unlock()
	if b.unit != 0 {
		return b.unit, true, nil
	}
	unit, err = b.cfg.readUnit()
	if err != nil {
		return 0, false, err
	}
	b.unit = unit
	return unit, false, nil
}

// forgetUnit makes the next dial read the unit again.
func (b *Broker) forgetUnit() {
	b.unitMu.Lock()
	b.unit = 0
	b.unitMu.Unlock()
}

// MaxNameLen is the longest attach name, in bytes. It is that of a name
// under /run/netns (NAME_MAX), so that every namespace there can be
// attached under its own name. Every request that names a namespace is
// refused as invalid when the name is longer, before anything is looked
// up or changed; so is an attach whose derived name would be longer.
const MaxNameLen = nsmgr.NameMax

// CheckName reports whether name can be an attach name: at most
// MaxNameLen bytes. The error matches ErrInvalid and shows only a bounded
// part of name.
func CheckName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: namespace name %s is longer than %d bytes", ErrInvalid, quote.String(name), MaxNameLen)
	}
	return nil
}

// DefaultName is the name a namespace is attached under when none is
// given: its name under /run/netns, or "path:P" / "pid:N".
func DefaultName(ref nsmgr.Ref) string {
	if ref.Name != "" {
		return ref.Name
	}
	return ref.String()
}

// Attach opens the namespace ref names and connects to the module inside
// it under the given name (DefaultName(ref) when empty). A namespace whose
// module is missing is attached all the same, as unavailable, and
// connects by itself once the module is there. A name longer than
// MaxNameLen, given or derived, is refused before ref is opened. An Attach
// whose ctx ends before the namespace is registered attaches nothing and
// returns ctx's error; once registered, the attach completes.
func (b *Broker) Attach(ctx context.Context, name string, ref nsmgr.Ref) (Info, error) {
	if err := ref.Validate(); err != nil {
		return Info{}, opError("attach", name, err)
	}
	derived := name == ""
	if derived {
		name = DefaultName(ref)
	}
	if err := CheckName(name); err != nil {
		if derived {
			err = fmt.Errorf("%w, as derived from the reference: give a shorter name", err)
		}
		return Info{}, opError("attach", "", err)
	}
	if err := ctx.Err(); err != nil {
		return Info{}, opError("attach", name, err)
	}
	ns, err := nsmgr.Open(ref)
	if err != nil {
		return Info{}, opError("attach", name, err)
	}

	b.mu.Lock()
	if err := ctx.Err(); err != nil {
		b.mu.Unlock()
		ns.Close()
		return Info{}, opError("attach", name, err)
	}
	if b.closed {
		b.mu.Unlock()
		ns.Close()
		return Info{}, opError("attach", name, ErrClosed)
	}
	if _, ok := b.byName[name]; ok {
		b.mu.Unlock()
		ns.Close()
		return Info{}, opError("attach", name, ErrExists)
	}
	if other, ok := b.byID[ns.ID()]; ok {
		b.mu.Unlock()
		ns.Close()
		return Info{}, opError("attach", name, fmt.Errorf("%w as %q", ErrExists, other.name))
	}
	c := newNSConn(b, name, ns)
	b.byName[name] = c
	b.byID[ns.ID()] = c
	held := b.held
	b.mu.Unlock()

	if err := b.watchLifetime(c); err != nil {
		b.remove(c, err)
		return Info{}, opError("attach", name, err)
	}
	if !held {
		if err := c.dial(); err != nil {
			c.mu.Lock()
			c.reason = err
			c.mu.Unlock()
			b.kickRecovery()
		}
	}
	// Announce it only now, so that watchers see ATTACHED before any
	// other event of the namespace, and exactly once.
	in := c.info()
	b.mu.Lock()
	if b.byName[c.name] == c {
		c.announced = true
		b.lockedNotify(NamespaceAttached, in, nil)
	}
	b.mu.Unlock()
	return in, nil
}

// Detach closes everything held in the namespace; its subscriptions end
// with ErrDetached.
func (b *Broker) Detach(name string) error {
	c, err := b.lookup(name)
	if err != nil {
		return opError("detach", name, err)
	}
	b.remove(c, ErrDetached)
	return nil
}

// remove takes c out of the registry and closes it.
func (b *Broker) remove(c *nsConn, why error) {
	b.mu.Lock()
	if b.byName[c.name] != c {
		b.mu.Unlock()
		return
	}
	delete(b.byName, c.name)
	delete(b.byID, c.ns.ID())
	announced := c.announced
	b.mu.Unlock()
	in := c.info()
	c.close(why)
	kind := NamespaceDetached
	if errors.Is(why, ErrNamespaceGone) {
		kind = NamespaceGone
	}
	if announced {
		b.mu.Lock()
		b.lockedNotify(kind, in, why)
		b.mu.Unlock()
	}
}

func (b *Broker) lookup(name string) (*nsConn, error) {
	return b.lookupIn(context.Background(), name)
}

// namespaceIDKey is the context key of WithNamespaceID.
type namespaceIDKey struct{}

// WithNamespaceID returns a context under which the broker's operations
// on a namespace by name act only while that name is attached to the
// namespace whose identity is id; otherwise the name is not found. A
// caller that checked who may reach the namespace attached under a name
// passes the identity it checked, so that a detach and re-attach of the
// name in between cannot carry the operation to another namespace.
func WithNamespaceID(ctx context.Context, id nsmgr.ID) context.Context {
	return context.WithValue(ctx, namespaceIDKey{}, id)
}

// lookupIn returns the namespace attached under name, if it is the one
// ctx is pinned to (WithNamespaceID).
func (b *Broker) lookupIn(ctx context.Context, name string) (*nsConn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	c, ok := b.byName[name]
	if !ok {
		return nil, ErrNotFound
	}
	if want, pinned := ctx.Value(namespaceIDKey{}).(nsmgr.ID); pinned && c.ns.ID() != want {
		return nil, ErrNotFound
	}
	return c, nil
}

// Do runs fn on a thread inside the namespace attached under name (see
// WithNamespaceID for ctx), entered through the broker's own handle: the
// namespace it holds, not one opened again by its path, which may since
// name another namespace or none. A namespace detached meanwhile is not
// entered (nsmgr.Namespace.Do).
func (b *Broker) Do(ctx context.Context, name string, fn func() error) error {
	c, err := b.lookupIn(ctx, name)
	if err != nil {
		return opError("enter", name, err)
	}
	return c.ns.Do(fn)
}

// Get describes one attached namespace.
func (b *Broker) Get(name string) (Info, error) {
	c, err := b.lookup(name)
	if err != nil {
		return Info{}, opError("get", name, err)
	}
	return c.info(), nil
}

// List describes every attached namespace, sorted by name.
func (b *Broker) List() []Info {
	b.mu.Lock()
	conns := make([]*nsConn, 0, len(b.byName))
	for _, c := range b.byName {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	infos := make([]Info, 0, len(conns))
	for _, c := range conns {
		infos = append(infos, c.info())
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos
}

// Echo sends payload to the module in the namespace and returns its reply.
func (b *Broker) Echo(ctx context.Context, name string, payload []byte) (*family.EchoReply, error) {
	data, err := family.EncodeEcho(payload)
	if err != nil {
		return nil, opError("echo", name, invalid(err))
	}
	return requestReply[family.EchoReply](ctx, b, "echo", name, family.MsgEcho, data)
}

// Publish multicasts payload to group in the namespace.
func (b *Broker) Publish(ctx context.Context, name string, group uint32, payload []byte) (*family.PublishReply, error) {
	data, err := family.EncodePublish(group, payload)
	if err != nil {
		return nil, opError("publish", name, invalid(err))
	}
	return requestReply[family.PublishReply](ctx, b, "publish", name, family.MsgPublish, data)
}

// Stats returns the module's counters for the namespace.
func (b *Broker) Stats(ctx context.Context, name string) (*family.Stats, error) {
	c, err := b.lookupIn(ctx, name)
	if err != nil {
		return nil, opError("stats", name, err)
	}
	// Through the shared socket: a stats rpc asks every attached
	// namespace, and must not open a request socket in each.
	st, err := c.stats(ctx, c.current())
	if err != nil {
		return nil, opError("stats", name, err)
	}
	return st, nil
}

// requestReply sends a request to the named namespace and returns its
// reply, which must be a *T.
func requestReply[T any](ctx context.Context, b *Broker, op, name string, typ uint16, data []byte) (*T, error) {
	c, err := b.lookupIn(ctx, name)
	if err != nil {
		return nil, opError(op, name, err)
	}
	m, err := c.request(ctx, typ, data)
	if err != nil {
		return nil, opError(op, name, err)
	}
	r, ok := m.Reply.(*T)
	if !ok {
		return nil, opError(op, name, fmt.Errorf("unexpected reply %T", m.Reply))
	}
	return r, nil
}

// NewSubscription subscribes to groups in the namespace: the caller reads
// the events multicast to them (Subscription.Next), with a gap event
// wherever some were lost, until ctx is cancelled or the namespace goes
// away (then a final KindEnd event says why). Its queued events are
// charged to budget besides the subscription's own bounds
// (Config.QueueLen, Config.QueueBytes); nil means no budget.
func (b *Broker) NewSubscription(ctx context.Context, name string, groups []uint32, budget *ByteBudget) (*Subscription, error) {
	return b.NewSubscriptionAt(ctx, name, groups, budget, nil)
}

// NewSubscriptionAt is NewSubscription for a subscriber that resumes: for
// each group with a resume point, it first receives what it missed since
// that point — the events the namespace's ring still retains, and a gap
// with the exact range and reason (LossNotRetained, LossDaemonRestarted,
// LossModuleReloaded, or the loss that happened at the time) for the rest
// — and then live events, with no number twice and none skipped. Replayed
// events are charged to budget and bounded like live ones. A resume point
// must name one of groups, once; one beyond the number the module has
// reached is refused as invalid.
func (b *Broker) NewSubscriptionAt(ctx context.Context, name string, groups []uint32, budget *ByteBudget, from []ResumePoint) (*Subscription, error) {
	groups, err := normalizeGroups(groups)
	if err != nil {
		return nil, opError("subscribe", name, err)
	}
	if err := checkResumePoints(groups, from); err != nil {
		return nil, opError("subscribe", name, err)
	}
	c, err := b.lookupIn(ctx, name)
	if err != nil {
		return nil, opError("subscribe", name, err)
	}
	s := newSubscriber(ctx, name, groups, b.cfg.QueueLen, b.cfg.QueueBytes, budget)
	if err := c.subscribe(ctx, s, groups, from); err != nil {
		return nil, opError("subscribe", name, err)
	}
	return &Subscription{s: s, done: func() { c.unsubscribe(s, groups) }}, nil
}

// checkResumePoints requires every resume point to name a subscribed
// group, at most once.
func checkResumePoints(groups []uint32, from []ResumePoint) error {
	var seen [family.Groups + 1]bool
	for _, p := range from {
		if err := family.CheckGroup(p.Group); err != nil {
			return invalid(err)
		}
		if !slices.Contains(groups, p.Group) {
			return fmt.Errorf("%w: resume point for group %d, which is not subscribed", ErrInvalid, p.Group)
		}
		if seen[p.Group] {
			return fmt.Errorf("%w: two resume points for group %d", ErrInvalid, p.Group)
		}
		seen[p.Group] = true
	}
	return nil
}

func normalizeGroups(groups []uint32) ([]uint32, error) {
	if len(groups) == 0 {
		return nil, fmt.Errorf("%w: no groups", ErrInvalid)
	}
	var seen [family.Groups + 1]bool
	out := make([]uint32, 0, len(groups))
	for _, g := range groups {
		if err := family.CheckGroup(g); err != nil {
			return nil, invalid(err)
		}
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Release closes every connection to the module so that it can be
// unloaded. Subscriptions stay open: they see a gap, and events again once
// the broker has re-dialed. The broker re-dials after it has seen the
// module unloaded and loaded again, or loaded with another identity than
// at Release (Config.ModuleIdentity; the default tells every load apart,
// so an unload and reload between two looks is seen too), or when Resume
// is called.
func (b *Broker) Release() {
	id, _ := b.cfg.ModuleIdentity()
	b.mu.Lock()
	b.held, b.sawAbsent, b.heldID = true, false, id
	conns := b.lockedConns()
	b.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		c.disconnect(conn, errors.New("released"))
	}
	b.kickRecovery()
}

// Resume ends a Release without waiting for a module reload.
func (b *Broker) Resume() {
	b.mu.Lock()
	b.held = false
	b.mu.Unlock()
	b.kickRecovery()
}

func (b *Broker) lockedConns() []*nsConn {
	conns := make([]*nsConn, 0, len(b.byName))
	for _, c := range b.byName {
		conns = append(conns, c)
	}
	return conns
}

func (b *Broker) kickRecovery() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// recover re-dials unavailable namespaces until the broker is closed.
func (b *Broker) recover() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.RetryInterval)
	defer t.Stop()
	// The module's identity at the last look; the first is now, before
	// any dial read the unit, so that it does not count as a reload.
	seenID, _ := b.cfg.ModuleIdentity()
	for {
		select {
		case <-b.done:
			return
		case <-b.wake:
		case <-t.C:
		}
		id, loaded := b.cfg.ModuleIdentity()
		if !loaded || id != seenID {
			// Unloaded or reloaded: its unit may change.
			b.forgetUnit()
			seenID = id
		}
		b.mu.Lock()
		if b.held {
			reloaded := id != 0 && b.heldID != 0 && id != b.heldID
			if !loaded {
				b.sawAbsent = true
			} else if b.sawAbsent || reloaded {
				b.held = false
			}
		}
		held := b.held
		if held || !loaded || b.unavailable.Load() == 0 {
			b.mu.Unlock()
			continue
		}
		// A namespace still being attached is dialed by Attach itself.
		var conns []*nsConn
		for _, c := range b.byName {
			if c.announced {
				conns = append(conns, c)
			}
		}
		b.mu.Unlock()
		for _, c := range conns {
			c.mu.Lock()
			down := c.conn == nil && c.closed == nil
			c.mu.Unlock()
			if !down {
				continue
			}
			if err := c.dial(); err != nil {
				c.mu.Lock()
				c.reason = err
				c.mu.Unlock()
			} else if c.info().State == StateReady {
				b.notify(NamespaceReady, c, nil)
			}
		}
	}
}

// Closed reports whether Close was called.
func (b *Broker) Closed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Close detaches every namespace and stops the broker.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	conns := b.lockedConns()
	b.byName = map[string]*nsConn{}
	b.byID = map[nsmgr.ID]*nsConn{}
	watchers := b.watchers
	b.watchers = map[*nsWatcher]struct{}{}
	dirs := b.dirWatches
	b.dirWatches = map[string]*dirWatch{}
	b.mu.Unlock()

	close(b.done)
	for _, c := range conns {
		c.close(ErrClosed)
	}
	for w := range watchers {
		w.finish(ErrClosed)
	}
	for _, d := range dirs {
		d.w.Close()
	}
	b.wg.Wait()
	return nil
}
