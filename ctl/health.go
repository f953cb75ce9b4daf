package ctl

import (
	"fmt"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// cmdHealth asks the daemon's grpc.health.v1 service about the daemon
// (service "") or a namespace (nsbroker.v1.Broker/NAME) and prints the
// status. Anything but SERVING is a failure (exit status 1), so that it
// serves as a probe (the Kubernetes DaemonSet's).
func cmdHealth(c *cli, args []string) error {
	f := c.flags()
	service := f.cmd.String("service", "", "the `service`: empty for the daemon, nsbroker.v1.Broker/NAME for a namespace")
	if err := f.parseNone(args); err != nil {
		return err
	}
	cl, err := c.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := c.withTimeout(c.ctx)
	defer cancel()
	st, err := cl.Health(ctx, *service)
	if err != nil {
		return rpcErr(err)
	}
	fmt.Fprintln(c.stdout, st)
	if st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("not serving: %v", st)
	}
	return nil
}
