package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsbroker/nsbroker/attacher"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// The stages the hook serves. prestart is the deprecated hook that runs
// at the same moment as createRuntime, in the runtime's namespaces.
const (
	stageCreateRuntime = "createRuntime"
	stagePrestart      = "prestart"
	stagePoststop      = "poststop"
)

// maxState bounds the state read from stdin.
const maxState = 1 << 20

// options are the command line.
type options struct {
	socket     string
	namePrefix string
	timeout    time.Duration
	stage      string
}

// run runs the hook and returns the exit status.
func run(args []string, stdin io.Reader, stderr io.Writer) int {
	opts, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-oci-hook: %v\n", err)
		return exitUsage
	}
	state, err := readState(stdin)
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-oci-hook: %s: %v\n", opts.stage, err)
		return exitFailure
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.timeout)
	defer cancel()
	name := opts.namePrefix + state.ID
	if opts.stage == stagePoststop {
		err = detach(ctx, opts.socket, name)
	} else {
		err = attach(ctx, opts.socket, name, state.Pid, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-oci-hook: %s: container %q: %v\n", opts.stage, state.ID, err)
		return exitFailure
	}
	return exitOK
}

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	opts := &options{}
	fs := flag.NewFlagSet("nsbroker-oci-hook", flag.ContinueOnError)
	// Errors are printed once, by run; the usage only on --help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&opts.socket, "socket", attacher.DefaultSocket, "nsbrokerd's admin socket `path`")
	fs.StringVar(&opts.namePrefix, "name-prefix", "oci-", "the attach name is this `prefix` and the container id")
	fs.DurationVar(&opts.timeout, "timeout", 10*time.Second, "give up talking to nsbrokerd after this `duration`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: nsbroker-oci-hook [flags] createRuntime|prestart|poststop\n\n"+
				"Attaches (createRuntime, prestart) or detaches (poststop) the network namespace\n"+
				"of the container whose OCI state is on stdin.\n\nFlags:\n")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() != 1 {
		return nil, errors.New("want exactly one argument, the hook stage: createRuntime, prestart or poststop")
	}
	switch opts.stage = fs.Arg(0); opts.stage {
	case stageCreateRuntime, stagePrestart, stagePoststop:
	default:
		return nil, fmt.Errorf("unknown stage %q: want createRuntime, prestart or poststop", opts.stage)
	}
	if opts.socket == "" || opts.timeout <= 0 {
		return nil, errors.New("--socket must not be empty and --timeout must be positive")
	}
	return opts, nil
}

// readState decodes the container state the runtime writes on stdin.
func readState(stdin io.Reader) (*specs.State, error) {
	var state specs.State
	dec := json.NewDecoder(io.LimitReader(stdin, maxState))
	if err := dec.Decode(&state); err != nil {
		return nil, fmt.Errorf("reading the container state on stdin: %w", err)
	}
	if state.ID == "" {
		return nil, errors.New("the container state on stdin has no id")
	}
	return &state, nil
}

// attach attaches the network namespace of the container's process.
func attach(ctx context.Context, socket, name string, pid int, stderr io.Writer) error {
	if pid <= 0 {
		return fmt.Errorf("the container state has no process id (pid %d)", pid)
	}
	shared, err := sharesRuntimeNetns(pid)
	if err != nil {
		return err
	}
	if shared {
		fmt.Fprintf(stderr, "nsbroker-oci-hook: %s shares the runtime's network namespace; not attached\n", name)
		return nil
	}
	c, err := attacher.Dial(ctx, socket)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Attach(ctx, name, nsmgr.Ref{PID: pid})
	return err
}

// sharesRuntimeNetns reports whether process pid is in the hook's own
// network namespace, the runtime's: a container without a network
// namespace of its own, whose attachment would be the host's.
func sharesRuntimeNetns(pid int) (bool, error) {
	ctr, err := nsmgr.Open(nsmgr.Ref{PID: pid})
	if err != nil {
		return false, fmt.Errorf("%w: %w", attacher.ErrNoNamespace, err)
	}
	defer ctr.Close()
	own, err := nsmgr.Open(nsmgr.Ref{Path: "/proc/self/ns/net"})
	if err != nil {
		return false, err
	}
	defer own.Close()
	return ctr.ID() == own.ID(), nil
}

// detach detaches name; detached already and no daemon count as done.
func detach(ctx context.Context, socket, name string) error {
	c, err := attacher.Dial(ctx, socket)
	if errors.Is(err, attacher.ErrDaemonDown) {
		return nil
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Detach(ctx, name)
	return err
}
