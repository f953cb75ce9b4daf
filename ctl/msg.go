package ctl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
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
	var resume resumeFlag
	f.cmd.Var(&resume, "resume", "start after `GROUP:INSTANCE:SEQ` (the instance and seq of the last event or gap seen); repeatable")
	follow := f.cmd.Bool("follow", false,
		"when the stream or the connection breaks (daemon restart), reconnect and resume, printing a gap for what could not be replayed")
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
	from := client.ResumePoint{}
	for _, p := range resume {
		from[p.GetGroup()] = client.Position{Instance: p.GetInstance(), Seq: p.GetSeq()}
	}
	sub, err := cl.Subscribe(c.ctx, &client.SubscribeConfig{Namespace: *ns, Groups: groups, From: from, Once: !*follow})
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

// resumeFlag collects --resume GROUP:INSTANCE:SEQ points.
type resumeFlag []*nsbrokerv1.ResumePoint

func (r *resumeFlag) String() string {
	var parts []string
	for _, p := range *r {
		parts = append(parts, fmt.Sprintf("%d:%d:%d", p.GetGroup(), p.GetInstance(), p.GetSeq()))
	}
	return strings.Join(parts, ",")
}

func (r *resumeFlag) Set(v string) error {
	f := strings.Split(v, ":")
	if len(f) != 3 {
		return fmt.Errorf("%q: want GROUP:INSTANCE:SEQ", v)
	}
	g, err1 := strconv.ParseUint(f[0], 10, 32)
	inst, err2 := strconv.ParseUint(f[1], 0, 64)
	seq, err3 := strconv.ParseUint(f[2], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("%q: want GROUP:INSTANCE:SEQ: %w", v, err)
	}
	*r = append(*r, &nsbrokerv1.ResumePoint{Group: uint32(g), Instance: inst, Seq: seq})
	return nil
}
