package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/family"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationLimitMessages: each limit has one message, whichever
// rpc, and whichever caller, runs into it: INVALID_ARGUMENT with the
// operation and namespace, then "invalid argument: " and the text of the
// limit's one function in family.
func TestIntegrationLimitMessages(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testContext(t)
	a := e.names["A"]
	admin, tenant := e.adminClient(), e.localClient("A")
	big := make([]byte, family.PayloadMax+1)

	// limit returns what follows "invalid argument: " in err's message,
	// after checking the code and the prefix.
	limit := func(what string, err error) string {
		t.Helper()
		st := status.Convert(err)
		const marker = ": invalid argument: "
		i := strings.Index(st.Message(), marker)
		if st.Code() != codes.InvalidArgument || i < 0 {
			t.Fatalf("%s: got %v %q, want InvalidArgument with %q", what, st.Code(), st.Message(), marker)
		}
		return st.Message()[i+len(marker):]
	}
	publishStream := func(c nsbrokerv1.BrokerClient, req *nsbrokerv1.PublishRequest) error {
		s, err := c.PublishStream(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(req); err != nil {
			return err
		}
		_, err = s.CloseAndRecv()
		return err
	}
	subscribe := func(c nsbrokerv1.BrokerClient, req *nsbrokerv1.SubscribeRequest) error {
		s, err := c.Subscribe(ctx, req)
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}

	for _, caller := range []struct {
		name string
		c    nsbrokerv1.BrokerClient
		ns   string
	}{{"admin", admin, a}, {"tenant", tenant, ""}} {
		c, ns := caller.c, caller.ns
		t.Run(caller.name+"/payload", func(t *testing.T) {
			want := family.PayloadSizeError(len(big)).Error()
			for what, err := range map[string]error{
				"Echo": func() error {
					_, err := c.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: ns, Payload: big})
					return err
				}(),
				"Publish": func() error {
					_, err := c.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: ns, Group: 1, Payload: big})
					return err
				}(),
				"PublishStream": publishStream(c, &nsbrokerv1.PublishRequest{Namespace: ns, Group: 1, Payload: big}),
			} {
				if got := limit(what, err); got != want {
					t.Errorf("%s of %d bytes: got %q, want %q", what, len(big), got, want)
				}
			}
		})
		t.Run(caller.name+"/group", func(t *testing.T) {
			for _, g := range []uint32{0, family.Groups + 1} {
				want := family.GroupRangeError(g).Error()
				errs := map[string]error{
					"Publish": func() error {
						_, err := c.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: ns, Group: g})
						return err
					}(),
					"PublishStream": publishStream(c, &nsbrokerv1.PublishRequest{Namespace: ns, Group: g}),
					"Subscribe resume point": subscribe(c, &nsbrokerv1.SubscribeRequest{Namespace: ns, Groups: []uint32{1},
						Resume: []*nsbrokerv1.ResumePoint{{Group: g}}}),
				}
				if g != 0 { // no group at all is a message of its own
					errs["Subscribe"] = subscribe(c, &nsbrokerv1.SubscribeRequest{Namespace: ns, Groups: []uint32{1, g}})
				}
				for what, err := range errs {
					if got := limit(what, err); got != want {
						t.Errorf("%s with group %d: got %q, want %q", what, g, got, want)
					}
				}
			}
		})
	}
}
