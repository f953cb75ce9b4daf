package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nsbroker/nsbroker/client"
)

// Exit statuses.
const (
	ExitOK      = 0 // success
	ExitFailed  = 1 // an rpc failed, or the output could not be written
	ExitUsage   = 2 // bad command line
	ExitConnect = 3 // the daemon could not be reached
)

// Defaults of the global options.
const (
	DefaultSocket      = "/run/nsbroker/nsbroker.sock"
	DefaultLocalSocket = "@nsbroker"
	DefaultTimeout     = 10 * time.Second
)

const prog = "nsbrokerctl"

// Main runs nsbrokerctl with args (without the program name) and returns
// its exit status. SIGINT and SIGTERM end a running command; a stream
// (subscribe, ns watch) ended that way exits 0.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, stdin, stdout, stderr)
}

// Run is Main with a context instead of signals: cancelling ctx ends the
// command as a signal would.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, opts: defaultOptions()}
	err := c.main(args)
	var (
		uerr *usageError
		cerr *client.ConnectError
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &uerr):
		fmt.Fprintf(stderr, "%s: %s\n", c.label(), uerr.msg)
		help := prog
		if c.cmd != nil {
			help += " " + c.cmd.name
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", help)
		return ExitUsage
	case errors.As(err, &cerr):
		fmt.Fprintf(stderr, "%s: %v\n", prog, cerr)
		return ExitConnect
	default:
		fmt.Fprintf(stderr, "%s: %v\n", c.label(), err)
		return ExitFailed
	}
}

// options are the global options, accepted before or after the command.
type options struct {
	socket      string
	local       bool
	localSocket string
	timeout     time.Duration
}

func defaultOptions() options {
	return options{socket: DefaultSocket, localSocket: DefaultLocalSocket, timeout: DefaultTimeout}
}

// register adds the options to fs; their current values are the flags'
// defaults, so options given before the command survive its parsing.
func (o *options) register(fs *flag.FlagSet) {
	fs.StringVar(&o.socket, "socket", o.socket, "`path` of the daemon's admin socket")
	fs.BoolVar(&o.local, "local", o.local, "use the daemon's socket in this network namespace (as its tenant)")
	fs.StringVar(&o.localSocket, "local-socket", o.localSocket,
		"the namespace-local socket `address` for --local (@name: abstract)")
	fs.DurationVar(&o.timeout, "timeout", o.timeout,
		"limit for connecting and for each request-reply rpc; 0: none")
}

// cli is one invocation.
type cli struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	opts   options
	name   string   // the command, e.g. "ns list"; "" before it is known
	cmd    *command // the command, once known
}

// label prefixes messages: "nsbrokerctl: ns list".
func (c *cli) label() string {
	if c.name == "" {
		return prog
	}
	return prog + ": " + c.name
}

// command is one subcommand.
type command struct {
	name     string // "echo", "ns list"
	synopsis string // arguments after the name
	summary  string // one line for the command list
	run      func(c *cli, args []string) error
}

// commands in the order the usage lists them.
var commands = []command{
	{"ns list", "[--json]", "list the attached namespaces", cmdNsList},
	{"ns get", "[--json] [NAME]", "describe a namespace (default: the caller's own)", cmdNsGet},
	{"ns attach", "[--name NAME] [--json] REF...", "attach namespaces: NAME, name:NAME, path:PATH or pid:PID", cmdNsAttach},
	{"ns detach", "NAME", "detach a namespace", cmdNsDetach},
	{"ns watch", "[--json] [--count K]", "print the attached namespaces, then every change", cmdNsWatch},
	{"echo", "[--namespace N] [--json] PAYLOAD...", "send a payload to the module and print its reply", cmdEcho},
	{"publish", "[--namespace N] --group G [--json] [PAYLOAD...|-]", "publish payloads; none or -: stdin, one per line", cmdPublish},
	{"subscribe", "[--namespace N] --group G[,G...] [--json] [--count K] [--follow]", "print events and gaps as they arrive", cmdSubscribe},
	{"stats", "[--namespace N] [--json]", "print the module's and the daemon's counters", cmdStats},
	{"health", "[--service S]", "print the daemon's health; exit 0 only when SERVING (a probe)", cmdHealth},
	{"module release", "[--json]", "close the daemon's module connections so the module can be unloaded", cmdModuleRelease},
	{"module resume", "[--wait] [--json]", "connect to the module again without waiting for a reload", cmdModuleResume},
}

func (c *cli) main(args []string) error {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.opts.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.usage(fs)
			return err
		}
		return usagef("%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("no command given")
	}
	name := rest[0]
	rest = rest[1:]
	if name == "help" {
		c.usage(fs)
		return nil
	}
	if name == "ns" {
		if len(rest) == 0 {
			c.name = "ns"
			return usagef("ns needs a subcommand: list, get, attach, detach or watch")
		}
		name, rest = "ns "+rest[0], rest[1:]
	}
	if name == "module" {
		if len(rest) == 0 {
			c.name = "module"
			return usagef("module needs a subcommand: release or resume")
		}
		name, rest = "module "+rest[0], rest[1:]
	}
	for i := range commands {
		if commands[i].name == name {
			c.name, c.cmd = name, &commands[i]
			return c.cmd.run(c, rest)
		}
	}
	return usagef("unknown command %q", name)
}

func (c *cli) usage(global *flag.FlagSet) {
	w := c.stdout
	fmt.Fprintf(w, "Usage: %s [options] COMMAND [ARGS...]\n\n", prog)
	fmt.Fprintf(w, "Talks to nsbrokerd: its admin socket by default, or with --local the socket\n")
	fmt.Fprintf(w, "it opens inside the caller's network namespace (as that namespace's tenant).\n\n")
	fmt.Fprintf(w, "Commands:\n")
	width := 0
	for _, cmd := range commands {
		width = max(width, len(cmd.name))
	}
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-*s %s\n", width, cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, "\nOptions (before or after the command):\n")
	printFlags(w, global)
	fmt.Fprintf(w, "\nExit status: 0 success, 1 an rpc failed, 2 usage error, 3 cannot connect.\n")
	fmt.Fprintf(w, "Run '%s COMMAND --help' for a command's arguments.\n", prog)
}

// usageError is a bad command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}
