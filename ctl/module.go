package ctl

import (
	"fmt"
	"text/tabwriter"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// cmdModuleRelease closes the daemon's module connections so that the
// module can be unloaded.
func cmdModuleRelease(c *cli, args []string) error {
	f := c.flags()
	asJSON := f.cmd.Bool("json", false, "print JSON")
	if err := f.parseNone(args); err != nil {
		return err
	}
	broker, ctx, done, err := c.unary()
	if err != nil {
		return err
	}
	defer done()
	resp, err := broker.ReleaseModule(ctx, &nsbrokerv1.ReleaseModuleRequest{})
	if err != nil {
		return rpcErr(err)
	}
	return c.printModuleNamespaces(resp.GetNamespaces(), *asJSON)
}

// cmdModuleResume ends a release; with --wait it returns once every
// namespace is ready, within --timeout.
func cmdModuleResume(c *cli, args []string) error {
	f := c.flags()
	wait := f.cmd.Bool("wait", false, "wait until every namespace is ready again (bounded by --timeout)")
	asJSON := f.cmd.Bool("json", false, "print JSON")
	if err := f.parseNone(args); err != nil {
		return err
	}
	broker, ctx, done, err := c.unary()
	if err != nil {
		return err
	}
	defer done()
	resp, err := broker.ResumeModule(ctx, &nsbrokerv1.ResumeModuleRequest{Wait: *wait})
	if err != nil {
		return rpcErr(err)
	}
	return c.printModuleNamespaces(resp.GetNamespaces(), *asJSON)
}

// printModuleNamespaces prints the namespaces a module command answered
// with: a table, or {"namespaces":[...]} as ns list --json.
func (c *cli) printModuleNamespaces(nss []*nsbrokerv1.Namespace, asJSON bool) error {
	if asJSON {
		out := struct {
			Namespaces []namespaceJSON `json:"namespaces"`
		}{Namespaces: []namespaceJSON{}}
		for _, ns := range nss {
			out.Namespaces = append(out.Namespaces, namespaceOut(ns))
		}
		return writeJSON(c.stdout, out)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tEPOCH\tREASON")
	for _, ns := range nss {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", ns.GetName(), stateWord(ns.GetState()), ns.GetEpoch(), ns.GetReason())
	}
	return tw.Flush()
}
