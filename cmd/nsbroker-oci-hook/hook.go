package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
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
// at the same moment as createRuntime, in the runtime's namespaces;
// createContainer runs after it, in the container's namespaces, before
// the container's root becomes its "/".
const (
	stageCreateRuntime   = "createRuntime"
	stagePrestart        = "prestart"
	stageCreateContainer = "createContainer"
	stagePoststop        = "poststop"
)

// stages lists the stages, for the messages.
const stages = "createRuntime, prestart, createContainer or poststop"

// defaultStateDir is where createRuntime leaves word for createContainer.
const defaultStateDir = "/run/nsbroker/oci"

// maxState bounds the state read from stdin.
const maxState = 1 << 20

// options are the command line.
type options struct {
	socket     string
	namePrefix string
	stateDir   string
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
	switch opts.stage {
	case stagePoststop:
		err = poststop(ctx, opts, state.ID)
	case stageCreateContainer:
		err = mountSocket(opts, state, stderr)
	default:
		err = attach(ctx, opts, state, stderr)
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
	fs.StringVar(&opts.stateDir, "state-dir", defaultStateDir, "`directory` where createRuntime tells createContainer which socket to mount")
	fs.DurationVar(&opts.timeout, "timeout", 10*time.Second, "give up talking to nsbrokerd after this `duration`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage: nsbroker-oci-hook [flags] createRuntime|prestart|createContainer|poststop\n\n"+
				"Attaches (createRuntime, prestart) or detaches (poststop) the network namespace\n"+
				"of the container whose OCI state is on stdin; createContainer bind-mounts the\n"+
				"namespace's filesystem socket into the container at %s.\n\nFlags:\n", containerSocket)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() != 1 {
		return nil, errors.New("want exactly one argument, the hook stage: " + stages)
	}
	switch opts.stage = fs.Arg(0); opts.stage {
	case stageCreateRuntime, stagePrestart, stageCreateContainer, stagePoststop:
	default:
		return nil, fmt.Errorf("unknown stage %q: want %s", opts.stage, stages)
	}
	if opts.socket == "" || opts.timeout <= 0 {
		return nil, errors.New("--socket must not be empty and --timeout must be positive")
	}
	if !filepath.IsAbs(opts.stateDir) {
		return nil, fmt.Errorf("--state-dir %q: want an absolute path", opts.stateDir)
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

// attach attaches the network namespace of the container's process,
// and leaves word for createContainer of the filesystem socket the daemon
// serves it through.
func attach(ctx context.Context, opts *options, state *specs.State, stderr io.Writer) error {
	if state.Pid <= 0 {
		return fmt.Errorf("the container state has no process id (pid %d)", state.Pid)
	}
	id, shared, err := containerNetns(state.Pid)
	if err != nil {
		return err
	}
	n := &note{Dev: id.Dev, Ino: id.Ino}
	name := opts.namePrefix + state.ID
	if shared {
		fmt.Fprintf(stderr, "nsbroker-oci-hook: %s shares the runtime's network namespace; not attached\n", name)
		return writeNote(opts.stateDir, state.ID, n)
	}
	c, err := attacher.Dial(ctx, opts.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	ns, err := c.Attach(ctx, name, nsmgr.Ref{PID: state.Pid})
	if err != nil {
		return err
	}
	// Another container of the pod may have attached it, under its name.
	n.Name = ns.GetName()
	if n.Socket, err = c.FileSocket(ctx, n.Name); err != nil {
		return err
	}
	return writeNote(opts.stateDir, state.ID, n)
}

// containerNetns returns the network namespace of process pid, and
// whether it is the hook's own, the runtime's: a container without a
// network namespace of its own, whose attachment would be the host's.
func containerNetns(pid int) (nsmgr.ID, bool, error) {
	ctr, err := nsmgr.Open(nsmgr.Ref{PID: pid})
	if err != nil {
		return nsmgr.ID{}, false, fmt.Errorf("%w: %w", attacher.ErrNoNamespace, err)
	}
	defer ctr.Close()
	own, err := ownNetns()
	if err != nil {
		return nsmgr.ID{}, false, err
	}
	return ctr.ID(), ctr.ID() == own, nil
}

// ownNetns returns the hook's own network namespace.
func ownNetns() (nsmgr.ID, error) {
	ns, err := nsmgr.Open(nsmgr.Ref{Path: "/proc/self/ns/net"})
	if err != nil {
		return nsmgr.ID{}, err
	}
	defer ns.Close()
	return ns.ID(), nil
}

// poststop forgets the container's note and detaches its name.
func poststop(ctx context.Context, opts *options, id string) error {
	if err := removeNote(opts.stateDir, id); err != nil {
		return err
	}
	return detach(ctx, opts.socket, opts.namePrefix+id)
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
