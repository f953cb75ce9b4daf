package ctl

import (
	"bufio"
	"fmt"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

func cmdStats(c *cli, args []string) error {
	f := c.flags()
	ns := f.cmd.String("namespace", "", "only this `namespace` (default: every one the caller may reach)")
	asJSON := f.cmd.Bool("json", false, "print JSON")
	if err := f.parseNone(args); err != nil {
		return err
	}
	broker, ctx, done, err := c.unary()
	if err != nil {
		return err
	}
	defer done()
	resp, err := broker.Stats(ctx, &nsbrokerv1.StatsRequest{Namespace: *ns})
	if err != nil {
		return rpcErr(err)
	}
	if *asJSON {
		return writeJSON(c.stdout, statsOut(resp))
	}
	w := bufio.NewWriter(c.stdout)
	for _, s := range resp.GetNamespaces() {
		fmt.Fprintf(w, "%s\n", s.GetNamespace())
		if k := s.GetKernel(); k != nil {
			fmt.Fprintf(w, "  kernel: echo %d, publish %d, delivered %d, no listener %d, overrun %d, rejected %d\n",
				k.GetEcho(), k.GetPublish(), k.GetDelivered(), k.GetNoListener(), k.GetOverrun(), k.GetRejected())
		} else {
			fmt.Fprintf(w, "  kernel: unavailable\n")
		}
		d := s.GetDaemon()
		fmt.Fprintf(w, "  daemon: received %d, delivered %d, overruns %d, overrun lost %d, queue lost %d, subscribers %d\n",
			d.GetReceived(), d.GetDelivered(), d.GetOverruns(), d.GetOverrunLost(), d.GetQueueLost(), d.GetSubscribers())
	}
	fmt.Fprintf(w, "module instances: %d\n", resp.GetModuleInstances())
	return w.Flush()
}

func statsOut(resp *nsbrokerv1.StatsResponse) statsJSON {
	out := statsJSON{Namespaces: []namespaceStatsJSON{}, ModuleInstances: resp.GetModuleInstances()}
	for _, s := range resp.GetNamespaces() {
		n := namespaceStatsJSON{Namespace: s.GetNamespace()}
		if k := s.GetKernel(); k != nil {
			n.Kernel = &kernelJSON{
				Echo: k.GetEcho(), Publish: k.GetPublish(), Delivered: k.GetDelivered(),
				NoListener: k.GetNoListener(), Overrun: k.GetOverrun(), Rejected: k.GetRejected(),
			}
		}
		d := s.GetDaemon()
		n.Daemon = &daemonJSON{
			Received: d.GetReceived(), Delivered: d.GetDelivered(), Overruns: d.GetOverruns(),
			OverrunLost: d.GetOverrunLost(), QueueLost: d.GetQueueLost(), Subscribers: d.GetSubscribers(),
		}
		out.Namespaces = append(out.Namespaces, n)
	}
	return out
}
