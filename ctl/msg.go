package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nsbroker/nsbroker/client"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// maxLine bounds a line read from stdin by publish; the daemon takes far
// less (16384 bytes), so a longer line is surely a mistake.
const maxLine = 1 << 20

func cmdEcho(c *cli, args []string) error {
	f := c.flags()
	ns := f.cmd.String("namespace", "", "the `namespace` (default: the caller's own, with --local)")
	asJSON := f.cmd.Bool("json", false, "print JSON")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("PAYLOAD missing")
	}
	broker, ctx, done, err := c.unary()
	if err != nil {
		return err
	}
	defer done()
	resp, err := broker.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: *ns, Payload: []byte(strings.Join(pos, " "))})
	if err != nil {
		return rpcErr(err)
	}
	if *asJSON {
		return writeJSON(c.stdout, echoJSON{
			Payload: resp.GetPayload(), NetnsInode: resp.GetNetnsInode(), NetnsCookie: resp.GetNetnsCookie(),
		})
	}
	_, err = fmt.Fprintf(c.stdout, "echo inode=%d cookie=%d payload=%q\n",
		resp.GetNetnsInode(), resp.GetNetnsCookie(), resp.GetPayload())
	return err
}

func cmdPublish(c *cli, args []string) error {
	f := c.flags()
	ns := f.cmd.String("namespace", "", "the `namespace` (default: the caller's own, with --local)")
	var groups groupsFlag
	f.cmd.Var(&groups, "group", "multicast `group`, 1..32 (required)")
	asJSON := f.cmd.Bool("json", false, "print JSON")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(groups) != 1 {
		return usagef("want exactly one --group, got %d", len(groups))
	}
	fromStdin := len(pos) == 0 || (len(pos) == 1 && pos[0] == "-")
	broker, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	if fromStdin {
		return c.publishStream(broker, *ns, groups[0], *asJSON)
	}
	for _, p := range pos {
		ctx, cancel := c.withTimeout(c.ctx)
		resp, err := broker.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: *ns, Group: groups[0], Payload: []byte(p)})
		cancel()
		if err != nil {
			return rpcErr(err)
		}
		if *asJSON {
			err = writeJSON(c.stdout, publishJSON{Group: resp.GetGroup(), Seq: resp.GetSeq(), Listeners: resp.GetListeners()})
		} else {
			_, err = fmt.Fprintf(c.stdout, "published group=%d seq=%d listeners=%t\n",
				resp.GetGroup(), resp.GetSeq(), resp.GetListeners())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// publishStream publishes every line of stdin (without its newline) in
// one PublishStream.
func (c *cli) publishStream(broker nsbrokerv1.BrokerClient, ns string, group uint32, asJSON bool) error {
	stream, err := broker.PublishStream(c.ctx)
	if err != nil {
		return rpcErr(err)
	}
	sc := bufio.NewScanner(c.stdin)
	sc.Buffer(make([]byte, 0, 64*1024), maxLine)
	for sc.Scan() {
		err := stream.Send(&nsbrokerv1.PublishRequest{Namespace: ns, Group: group, Payload: sc.Bytes()})
		if errors.Is(err, io.EOF) {
			break // the daemon ended the stream; CloseAndRecv says why
		}
		if err != nil {
			return rpcErr(err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return rpcErr(err)
	}
	if asJSON {
		last := resp.GetLastSeq()
		if last == nil {
			last = map[uint32]uint64{}
		}
		return writeJSON(c.stdout, publishStreamJSON{Published: resp.GetPublished(), LastSeq: last})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "published %d", resp.GetPublished())
	groups := make([]uint32, 0, len(resp.GetLastSeq()))
	for g := range resp.GetLastSeq() {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i] < groups[j] })
	for _, g := range groups {
		fmt.Fprintf(&b, " group=%d last_seq=%d", g, resp.GetLastSeq()[g])
	}
	_, err = fmt.Fprintln(c.stdout, b.String())
	return err
}

func cmdSubscribe(c *cli, args []string) error {
	f := c.flags()
	ns := f.cmd.String("namespace", "", "the `namespace` (default: the caller's own, with --local)")
	var groups groupsFlag
	f.cmd.Var(&groups, "group", "multicast `groups`, 1..32, comma-separated (required)")
	asJSON := f.cmd.Bool("json", false, "print one JSON object per line")
	count := f.cmd.Uint64("count", 0, "exit after `K` events, not counting gaps (0: run until interrupted)")
	follow := f.cmd.Bool("follow", false,
		"when the stream or the connection breaks (daemon restart), reconnect and go on, printing a gap for what was missed")
	if err := f.parseNone(args); err != nil {
		return err
	}
	if len(groups) == 0 {
		return usagef("--group is required")
	}
	cl, err := c.dial()
	if err != nil {
		return err
	}
	defer cl.Close()
	sub, err := cl.Subscribe(c.ctx, &client.SubscribeConfig{Namespace: *ns, Groups: groups, Once: !*follow})
	if err != nil {
		return c.streamErr(err)
	}
	defer sub.Close()
	for events := uint64(0); *count == 0 || events < *count; {
		item, err := sub.Recv()
		if err != nil {
			return c.streamErr(err)
		}
		var line subscribeJSON
		text := ""
		switch {
		case item.Event != nil:
			events++
			line.Event = eventOut(item.Event)
			text = eventText(item.Event)
		case item.Gap != nil:
			line.Gap = gapOut(item.Gap)
			text = gapText(item.Gap)
		}
		if *asJSON {
			err = writeJSON(c.stdout, line)
		} else {
			_, err = fmt.Fprintln(c.stdout, text)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
