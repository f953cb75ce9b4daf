package isolation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// pollInterval is how often the checker asks the daemon whether
// subscriptions have registered and namespaces are ready: the daemon
// offers no notification for either.
const pollInterval = 10 * time.Millisecond

// Run carries out a check against env and returns its report. An error
// means the check could not be carried out (the daemon unreachable, a
// namespace that cannot be created or attached, a publish refused), so
// nothing was proven either way. Run removes the namespaces it created and
// detaches the ones it attached, also when ctx is cancelled.
func Run(ctx context.Context, cfg *Config, env Env) (*Report, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ch := &checker{
		cfg:     c,
		env:     env,
		admin:   env.Admin(),
		run:     newRunID(),
		tenants: make(map[string]nsbrokerv1.BrokerClient),
		inode:   make(map[string]uint64),
	}
	ch.report = &Report{
		Run: ch.run, Started: time.Now(), Daemon: c.Daemon, Messages: c.Messages,
		Groups: c.Groups, ProbeGroup: c.ProbeGroup, Attached: c.Attached,
	}
	err = ch.check(ctx)
	ch.cleanup()
	if err != nil {
		return nil, err
	}
	ch.report.Duration = time.Since(ch.report.Started)
	ch.report.finish()
	return ch.report, nil
}

// checker is one run of a check.
type checker struct {
	cfg    Config
	env    Env
	admin  nsbrokerv1.BrokerClient
	run    string
	report *Report

	created  []string // namespaces this check created
	attached []string // namespaces this check attached
	closers  []io.Closer
	tenants  map[string]nsbrokerv1.BrokerClient
	inode    map[string]uint64
}

func newRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

// tag is the payload of one test message; it names the run, where and what
// it was published, so that every delivery can be traced to its publish.
func (ch *checker) tag(ns string, group uint32, n string) string {
	return fmt.Sprintf("nsbroker-isolation run=%s ns=%s group=%d n=%s", ch.run, ns, group, n)
}

func (ch *checker) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, ch.cfg.Timeout)
}

// progress tells Config.Progress what the check does now.
func (ch *checker) progress(format string, args ...any) {
	if ch.cfg.Progress != nil {
		ch.cfg.Progress(fmt.Sprintf("[%s] ", durationText(time.Since(ch.report.Started))) + fmt.Sprintf(format, args...))
	}
}

func (ch *checker) check(ctx context.Context) error {
	c := ch.cfg
	if c.Attached {
		ch.progress("using the attached namespaces %s", strings.Join(c.Names, ", "))
	} else {
		ch.progress("creating and attaching %d namespaces: %s .. %s", len(c.Names), c.Names[0], c.Names[len(c.Names)-1])
	}
	if err := ch.setup(ctx); err != nil {
		return err
	}
	ch.progress("connecting a tenant client to each namespace through %s", "its own local socket")
	if err := ch.connectTenants(ctx); err != nil {
		return err
	}
	ch.progress("subscribing every tenant to group(s) %s", groupList(c.Groups))
	subs, err := ch.subscribe(ctx)
	if err != nil {
		return err
	}
	// Probes that name other namespaces run while everyone is subscribed:
	// a publish that got through shows up as a foreign event.
	ch.progress("every tenant names another tenant's namespace")
	ch.report.Probes = append(ch.report.Probes, ch.namingProbes(ctx)...)
	ch.progress("publishing %d messages per namespace and group, then an end marker each", c.Messages)
	pubs, err := ch.publish(ctx, subs)
	if err != nil {
		return err
	}
	ch.report.Publications = pubs
	for _, s := range subs {
		ch.report.Subscriptions = append(ch.report.Subscriptions, s.s)
	}
	ch.report.Judgement = Judge(ch.report.Namespaces, pubs, ch.report.Subscriptions)
	ch.progress("every tenant tries to detach another namespace and to attach one")
	ch.report.Probes = append(ch.report.Probes, ch.adminProbes(ctx)...)
	if !c.SkipListenerProbes {
		ch.progress("NETLINK_LISTEN_ALL_NSID listeners in this namespace, group %d", c.ProbeGroup)
	}
	ch.report.Probes = append(ch.report.Probes, ch.listenerProbes(ctx)...)
	ch.progress("done; cleaning up")
	return nil
}

// setup creates and attaches the namespaces and waits until the daemon is
// connected to the module in each.
func (ch *checker) setup(ctx context.Context) error {
	for _, name := range ch.cfg.Names {
		if !ch.cfg.Attached {
			if err := ch.env.CreateNamespace(name); err != nil {
				return fmt.Errorf("create namespace %s: %w", name, err)
			}
			ch.created = append(ch.created, name)
		}
		inode, err := ch.env.Inode(name)
		if err != nil {
			return fmt.Errorf("namespace %s: %w", name, err)
		}
		ch.inode[name] = inode
		if !ch.cfg.Attached {
			rctx, cancel := ch.rpcCtx(ctx)
			_, err := ch.admin.AttachNamespace(rctx, &nsbrokerv1.AttachNamespaceRequest{
				Name: name, Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}},
			})
			cancel()
			switch status.Code(err) {
			case codes.OK:
				ch.attached = append(ch.attached, name)
			case codes.AlreadyExists:
				ch.report.Notes = append(ch.report.Notes, fmt.Sprintf("%s was attached before the check attached it (the daemon discovers namespaces)", name))
			default:
				return fmt.Errorf("attach %s through the admin socket: %s", name, statusText(err))
			}
		}
		ch.report.Namespaces = append(ch.report.Namespaces, Namespace{Name: name, Inode: inode})
	}
	return ch.waitReady(ctx)
}

// waitReady waits until every namespace is READY and records the daemon's
// view of it.
func (ch *checker) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(ch.cfg.Timeout)
	for i := range ch.report.Namespaces {
		ns := &ch.report.Namespaces[i]
		for {
			rctx, cancel := ch.rpcCtx(ctx)
			got, err := ch.admin.GetNamespace(rctx, &nsbrokerv1.GetNamespaceRequest{Namespace: ns.Name})
			cancel()
			if err != nil {
				return fmt.Errorf("get %s through the admin socket: %s", ns.Name, statusText(err))
			}
			if got.GetState() == nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY {
				ns.Cookie = got.GetCookie()
				if got.GetInode() != ns.Inode {
					return fmt.Errorf("the daemon has %s as inode %d, but the namespace is inode %d", ns.Name, got.GetInode(), ns.Inode)
				}
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is not ready after %v: %s %s", ns.Name, ch.cfg.Timeout, got.GetState(), got.GetReason())
			}
			if err := sleep(ctx, pollInterval); err != nil {
				return err
			}
		}
	}
	return nil
}

// connectTenants connects to every namespace's tenant socket and checks
// that it reaches that namespace and no other.
func (ch *checker) connectTenants(ctx context.Context) error {
	p := Probe{
		Name:     "each tenant socket reaches its own namespace",
		Expected: "an echo through the socket inside a namespace is answered by that namespace's kernel socket, and the tenant lists only its own namespace",
	}
	bad := 0
	for i := range ch.report.Namespaces {
		ns := &ch.report.Namespaces[i]
		cl, closer, err := ch.env.Tenant(ctx, ns.Name)
		if err != nil {
			return fmt.Errorf("connect to the tenant socket in %s: %w", ns.Name, err)
		}
		ch.closers = append(ch.closers, closer)
		ch.tenants[ns.Name] = cl
		rctx, cancel := ch.rpcCtx(ctx)
		echo, err := cl.Echo(rctx, &nsbrokerv1.EchoRequest{Payload: []byte("hello from " + ns.Name)})
		if err != nil {
			cancel()
			return fmt.Errorf("echo through the tenant socket in %s: %s", ns.Name, statusText(err))
		}
		list, err := cl.ListNamespaces(rctx, &nsbrokerv1.ListNamespacesRequest{})
		cancel()
		if err != nil {
			return fmt.Errorf("list namespaces through the tenant socket in %s: %s", ns.Name, statusText(err))
		}
		ns.EchoInode = echo.GetNetnsInode()
		var listed []string
		for _, l := range list.GetNamespaces() {
			listed = append(listed, l.GetName())
		}
		line := fmt.Sprintf("%s (inode %d): echo answered by inode %d; lists %q", ns.Name, ns.Inode, ns.EchoInode, listed)
		if ns.EchoInode != ns.Inode || !slices.Equal(listed, []string{ns.Name}) {
			bad++
			line += " !"
		}
		p.Evidence = append(p.Evidence, line)
	}
	p.Status, p.Observed = StatusHeld, fmt.Sprintf("all %d tenants reached their own namespace only", len(ch.report.Namespaces))
	if bad > 0 {
		p.Status, p.Observed = StatusBroken, fmt.Sprintf("%d of %d tenants reached another namespace or listed more than their own", bad, len(ch.report.Namespaces))
	}
	ch.report.Probes = append(ch.report.Probes, p)
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// cleanup closes the tenant connections, detaches what the check attached
// and deletes what it created. Failures become notes.
func (ch *checker) cleanup() {
	for _, c := range ch.closers {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), ch.cfg.Timeout)
	defer cancel()
	for _, name := range ch.attached {
		_, err := ch.admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name})
		if err != nil && status.Code(err) != codes.NotFound {
			ch.report.Notes = append(ch.report.Notes, fmt.Sprintf("detach %s: %s", name, statusText(err)))
		}
	}
	for _, name := range ch.created {
		if err := ch.env.DeleteNamespace(name); err != nil && !errors.Is(err, context.Canceled) {
			ch.report.Notes = append(ch.report.Notes, fmt.Sprintf("delete namespace %s: %v", name, err))
		}
	}
}
