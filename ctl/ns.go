package ctl

import (
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"text/tabwriter"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/nsbroker/nsbroker/client"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

func cmdNsList(c *cli, args []string) error {
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
	resp, err := broker.ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		return rpcErr(err)
	}
	if *asJSON {
		out := struct {
			Namespaces []namespaceJSON `json:"namespaces"`
		}{Namespaces: []namespaceJSON{}}
		for _, ns := range resp.GetNamespaces() {
			out.Namespaces = append(out.Namespaces, namespaceOut(ns))
		}
		return writeJSON(c.stdout, out)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tINODE\tEPOCH\tSUBSCRIBERS\tREF\tATTACHED")
	for _, ns := range resp.GetNamespaces() {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", ns.GetName(), stateWord(ns.GetState()),
			ns.GetInode(), ns.GetEpoch(), ns.GetSubscribers(), refString(ns.GetRef()),
			timeString(ns.GetAttachedAt()))
	}
	return tw.Flush()
}

func cmdNsGet(c *cli, args []string) error {
	f := c.flags()
	asJSON := f.cmd.Bool("json", false, "print JSON")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("unexpected argument %q", pos[1])
	}
	req := &nsbrokerv1.GetNamespaceRequest{}
	if len(pos) == 1 {
		req.Namespace = pos[0]
	}
	broker, ctx, done, err := c.unary()
	if err != nil {
		return err
	}
	defer done()
	ns, err := broker.GetNamespace(ctx, req)
	if err != nil {
		return rpcErr(err)
	}
	return c.printNamespace(ns, *asJSON)
}

func cmdNsAttach(c *cli, args []string) error {
	f := c.flags()
	name := f.cmd.String("name", "", "attach it under this `name` (default: derived from REF; one REF only)")
	asJSON := f.cmd.Bool("json", false, "print JSON")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("want one or more REFs (NAME, name:NAME, path:PATH or pid:PID), got none")
	}
	if len(pos) > 1 && *name != "" {
		return usagef("--name names one namespace; got %d REFs", len(pos))
	}
	refs := make([]*nsbrokerv1.NamespaceRef, len(pos))
	for i, arg := range pos {
		if refs[i], err = protoRef(arg); err != nil {
			return usagef("%v", err)
		}
	}
	if len(refs) > 1 {
		return c.attachMany(pos, refs, *asJSON)
	}
	broker, ctx, done, err := c.unary()
	if err != nil {
		return err
	}
	defer done()
	ns, err := broker.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: *name, Ref: refs[0]})
	if err != nil {
		return rpcErr(err)
	}
	return c.printNamespace(ns, *asJSON)
}

// attachBatch and attachBatchBytes bound one AttachNamespaces request, in
// namespaces and in encoded bytes: well inside the daemon's limits on
// entries and on message size (max_msg_size, 64 KiB by default), however
// long the paths.
const (
	attachBatch      = 1000
	attachBatchBytes = 32 << 10
)

// attachMany attaches several namespaces with AttachNamespaces, a batch
// at a time (--timeout bounds each), and prints a line (or a JSON object)
// per REF. It fails when any of them was not attached.
func (c *cli) attachMany(args []string, refs []*nsbrokerv1.NamespaceRef, asJSON bool) error {
	broker, closeConn, err := c.connect()
	if err != nil {
		return err
	}
	defer closeConn()
	var results []*nsbrokerv1.AttachResult
	for start := 0; start < len(refs); {
		req := &nsbrokerv1.AttachNamespacesRequest{}
		size := 0
		for _, ref := range refs[start:] {
			entry := &nsbrokerv1.AttachNamespaceRequest{Ref: ref}
			n := proto.Size(entry) + 4 // its tag and length
			if len(req.Namespaces) > 0 && (len(req.Namespaces) == attachBatch || size+n > attachBatchBytes) {
				break
			}
			req.Namespaces = append(req.Namespaces, entry)
			size += n
		}
		start += len(req.Namespaces)
		ctx, cancel := c.withTimeout(c.ctx)
		resp, err := broker.AttachNamespaces(ctx, req)
		cancel()
		if err != nil {
			if len(results) > 0 {
				return fmt.Errorf("the first %d namespaces were attached (or refused) already: %w", len(results), rpcErr(err))
			}
			return rpcErr(err)
		}
		if len(resp.GetResults()) != len(req.Namespaces) {
			return fmt.Errorf("the daemon answered %d results for %d namespaces", len(resp.GetResults()), len(req.Namespaces))
		}
		results = append(results, resp.GetResults()...)
	}
	failed := 0
	type resultJSON struct {
		Ref       string         `json:"ref"`
		Namespace *namespaceJSON `json:"namespace,omitempty"`
		Error     string         `json:"error,omitempty"`
	}
	out := struct {
		Results []resultJSON `json:"results"`
	}{}
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "REF\tNAME\tSTATE\tINODE\tERROR")
	}
	for i, r := range results {
		var errText string
		if r.GetCode() != 0 {
			failed++
			errText = client.CodeText(codes.Code(r.GetCode())) + ": " + r.GetMessage()
		}
		if asJSON {
			res := resultJSON{Ref: args[i], Error: errText}
			if r.GetNamespace() != nil {
				ns := namespaceOut(r.GetNamespace())
				res.Namespace = &ns
			}
			out.Results = append(out.Results, res)
			continue
		}
		ns := r.GetNamespace()
		if ns == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\n", args[i], errText)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t-\n", args[i], ns.GetName(), stateWord(ns.GetState()), ns.GetInode())
	}
	if asJSON {
		err = writeJSON(c.stdout, out)
	} else {
		err = tw.Flush()
	}
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d namespaces not attached", failed, len(results))
	}
	return nil
}

// protoRef parses REF as the daemon's --attach does. A relative path is
// made absolute: the daemon does not share the caller's directory.
func protoRef(s string) (*nsbrokerv1.NamespaceRef, error) {
	r, err := nsmgr.ParseRef(s)
	if err != nil {
		return nil, err
	}
	switch {
	case r.Name != "":
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: r.Name}}, nil
	case r.Path != "":
		p, err := filepath.Abs(r.Path)
		if err != nil {
			return nil, err
		}
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Path{Path: p}}, nil
	case r.PID > math.MaxInt32:
		return nil, fmt.Errorf("pid %d out of range", r.PID)
	default:
		return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(r.PID)}}, nil
	}
}

func cmdNsDetach(c *cli, args []string) error {
	pos, err := c.flags().parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one NAME, got %d arguments", len(pos))
	}
	broker, ctx, done, err := c.unary()
	if err != nil {
		return err
	}
	defer done()
	if _, err := broker.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: pos[0]}); err != nil {
		return rpcErr(err)
	}
	return nil
}

func cmdNsWatch(c *cli, args []string) error {
	f := c.flags()
	asJSON := f.cmd.Bool("json", false, "print one JSON object per line")
	count := f.cmd.Uint64("count", 0, "exit after `K` events (0: run until interrupted)")
	if err := f.parseNone(args); err != nil {
		return err
	}
	broker, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	stream, err := broker.WatchNamespaces(c.ctx, &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		return c.streamErr(err)
	}
	for n := uint64(0); *count == 0 || n < *count; n++ {
		ev, err := stream.Recv()
		if err != nil {
			return c.streamErr(err)
		}
		if *asJSON {
			err = writeJSON(c.stdout, namespaceEventJSON{
				Kind: kindWord(ev.GetKind()), Namespace: namespaceOut(ev.GetNamespace()), Reason: ev.GetReason(),
			})
		} else {
			_, err = fmt.Fprintln(c.stdout, namespaceEventText(ev))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// streamErr is how a stream's end is reported: the server closing it
// normally or the user interrupting it is success.
func (c *cli) streamErr(err error) error {
	if errors.Is(err, io.EOF) || c.ctx.Err() != nil {
		return nil
	}
	return rpcErr(err)
}

func (c *cli) printNamespace(ns *nsbrokerv1.Namespace, asJSON bool) error {
	if asJSON {
		return writeJSON(c.stdout, namespaceOut(ns))
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 1, ' ', 0)
	rows := []struct{ k, v string }{
		{"name", ns.GetName()},
		{"ref", refString(ns.GetRef())},
		{"state", stateWord(ns.GetState())},
		{"reason", ns.GetReason()},
		{"dev", fmt.Sprint(ns.GetDev())},
		{"inode", fmt.Sprint(ns.GetInode())},
		{"cookie", fmt.Sprint(ns.GetCookie())},
		{"attached", timeString(ns.GetAttachedAt())},
		{"epoch", fmt.Sprint(ns.GetEpoch())},
		{"subscribers", fmt.Sprint(ns.GetSubscribers())},
	}
	for _, r := range rows {
		if r.v == "" {
			continue // no reason while ready; no time from an old daemon
		}
		fmt.Fprintf(tw, "%s:\t%s\n", r.k, r.v)
	}
	return tw.Flush()
}
