package isolation

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// refusalWait bounds how long a refused subscription may take to end; a
// refusal needs no event to arrive, so it comes at once.
const refusalWait = 5 * time.Second

// namingCall is one rpc a tenant makes naming a namespace; accepted
// describes what came back if the daemon did not refuse.
type namingCall struct {
	rpc  string
	call func(ctx context.Context, cl nsbrokerv1.BrokerClient, target string) (accepted string, err error)
}

func (ch *checker) namingCalls() []namingCall {
	return []namingCall{
		{"GetNamespace", func(ctx context.Context, cl nsbrokerv1.BrokerClient, target string) (string, error) {
			r, err := cl.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: target})
			return fmt.Sprintf("described %q, inode %d", r.GetName(), r.GetInode()), err
		}},
		{"Echo", func(ctx context.Context, cl nsbrokerv1.BrokerClient, target string) (string, error) {
			r, err := cl.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: target, Payload: []byte("probe")})
			return fmt.Sprintf("echo answered by inode %d", r.GetNetnsInode()), err
		}},
		{"Publish", func(ctx context.Context, cl nsbrokerv1.BrokerClient, target string) (string, error) {
			g := ch.cfg.Groups[0]
			r, err := cl.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: target, Group: g, Payload: []byte(ch.tag(target, g, "cross"))})
			return fmt.Sprintf("published as seq %d of group %d", r.GetSeq(), g), err
		}},
		{"Subscribe", func(ctx context.Context, cl nsbrokerv1.BrokerClient, target string) (string, error) {
			ctx, cancel := context.WithTimeout(ctx, min(refusalWait, ch.cfg.Timeout))
			defer cancel()
			stream, err := cl.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: target, Groups: ch.cfg.Groups})
			if err != nil {
				return "", err
			}
			r, err := stream.Recv()
			if status.Code(err) == codes.DeadlineExceeded {
				return "the subscription was accepted and stayed open", nil
			}
			if ev := r.GetEvent(); ev != nil {
				return fmt.Sprintf("delivered seq %d from inode %d", ev.GetSeq(), ev.GetNetnsInode()), nil
			}
			return "delivered a gap", err
		}},
		{"Stats", func(ctx context.Context, cl nsbrokerv1.BrokerClient, target string) (string, error) {
			r, err := cl.Stats(ctx, &nsbrokerv1.StatsRequest{Namespace: target})
			return fmt.Sprintf("returned the counters of %d namespace(s)", len(r.GetNamespaces())), err
		}},
	}
}

// namingProbes has every tenant name its neighbour (another tenant's
// namespace) and a namespace that does not exist in each rpc that takes a
// namespace. Both must be refused with NOT_FOUND and the same message, so
// that a tenant cannot even learn that the other namespace exists.
func (ch *checker) namingProbes(ctx context.Context) []Probe {
	names := ch.cfg.Names
	missing := ch.cfg.Prefix + "missing-" + ch.run
	var probes []Probe
	for _, nc := range ch.namingCalls() {
		p := Probe{
			Name:     "a tenant names another tenant's namespace: " + nc.rpc,
			Expected: fmt.Sprintf("NOT_FOUND, with the same message as for a namespace that does not exist (%s)", missing),
		}
		refused := 0
		for i, name := range names {
			other := names[(i+1)%len(names)]
			rctx, cancel := ch.rpcCtx(ctx)
			accepted, errOther := nc.call(rctx, ch.tenants[name], other)
			_, errMissing := nc.call(rctx, ch.tenants[name], missing)
			cancel()
			so, sm := status.Convert(errOther), status.Convert(errMissing)
			same := normalize(so.Message(), other) == normalize(sm.Message(), missing)
			switch {
			case errOther == nil:
				p.Evidence = append(p.Evidence, fmt.Sprintf("%s named %s: accepted: %s !", name, other, accepted))
			case so.Code() != codes.NotFound || sm.Code() != codes.NotFound || !same:
				p.Evidence = append(p.Evidence, fmt.Sprintf("%s named %s: %s; named %s: %s !", name, other, statusText(errOther), missing, statusText(errMissing)))
			default:
				refused++
				if refused == 1 {
					p.Evidence = append(p.Evidence, fmt.Sprintf("%s named %s: %s; named %s: %s", name, other, statusText(errOther), missing, statusText(errMissing)))
				}
			}
		}
		p.Observed = fmt.Sprintf("%d of %d tenants refused with NOT_FOUND, indistinguishable from a namespace that does not exist", refused, len(names))
		p.Status = StatusHeld
		if refused != len(names) {
			p.Status = StatusBroken
		}
		probes = append(probes, p)
	}
	return probes
}

// normalize replaces name in an error message by a placeholder, so that
// the answers for two names can be compared.
func normalize(msg, name string) string {
	msg = strings.ReplaceAll(msg, strconv.Quote(name), `"<namespace>"`)
	return strings.ReplaceAll(msg, name, "<namespace>")
}

// adminProbes has every tenant try to detach its neighbour's namespace and
// to attach one, which only the admin may do. They run after the traffic,
// since a detach that got through would end the neighbour's subscriptions.
func (ch *checker) adminProbes(ctx context.Context) []Probe {
	names := ch.cfg.Names
	detach := Probe{
		Name:     "a tenant detaches another tenant's namespace",
		Expected: "PERMISSION_DENIED, and the namespace stays attached",
	}
	attach := Probe{
		Name:     "a tenant attaches a namespace",
		Expected: "PERMISSION_DENIED",
	}
	detachRefused, attachRefused := 0, 0
	for i, name := range names {
		other := names[(i+1)%len(names)]
		rctx, cancel := ch.rpcCtx(ctx)
		_, err := ch.tenants[name].DetachNamespace(rctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: other})
		_, stillThere := ch.admin.GetNamespace(rctx, &nsbrokerv1.GetNamespaceRequest{Namespace: other})
		line := fmt.Sprintf("%s detaching %s: %s; %s is attached: %v", name, other, statusText(err), other, stillThere == nil)
		if status.Code(err) == codes.PermissionDenied && stillThere == nil {
			detachRefused++
			if detachRefused == 1 {
				detach.Evidence = append(detach.Evidence, line)
			}
		} else {
			detach.Evidence = append(detach.Evidence, line+" !")
		}

		newName := fmt.Sprintf("%sattach-%s-%d", ch.cfg.Prefix, ch.run, i)
		_, err = ch.tenants[name].AttachNamespace(rctx, &nsbrokerv1.AttachNamespaceRequest{
			Name: newName, Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: other}},
		})
		line = fmt.Sprintf("%s attaching %s as %s: %s", name, other, newName, statusText(err))
		if status.Code(err) == codes.PermissionDenied {
			attachRefused++
			if attachRefused == 1 {
				attach.Evidence = append(attach.Evidence, line)
			}
		} else {
			attach.Evidence = append(attach.Evidence, line+" !")
			if err == nil {
				_, _ = ch.admin.DetachNamespace(rctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: newName})
			}
		}
		cancel()
	}
	detach.Observed = fmt.Sprintf("%d of %d tenants refused with PERMISSION_DENIED", detachRefused, len(names))
	attach.Observed = fmt.Sprintf("%d of %d tenants refused with PERMISSION_DENIED", attachRefused, len(names))
	detach.Status, attach.Status = StatusHeld, StatusHeld
	if detachRefused != len(names) {
		detach.Status = StatusBroken
	}
	if attachRefused != len(names) {
		attach.Status = StatusBroken
	}
	return []Probe{detach, attach}
}
