package isolation

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Exit statuses of Main.
const (
	// ExitHeld: everything that should hold held.
	ExitHeld = 0
	// ExitBroken: something did not hold, or could not be shown to hold.
	ExitBroken = 1
	// ExitUsage: bad arguments.
	ExitUsage = 2
	// ExitError: the check could not be carried out.
	ExitError = 3
)

const usage = `usage: nsbroker-isolation-check [flags]

Checks that nsbroker keeps network namespaces apart, against a running
nsbrokerd with the module loaded. It creates namespaces, attaches them
through the admin socket, connects a tenant client to each through the
socket the daemon opens inside it, publishes to every group from every
namespace and checks that each subscriber received exactly its own
namespace's messages, in order, without gaps, and nothing else. Then it
tries the known ways across (a tenant naming another namespace,
NETLINK_LISTEN_ALL_NSID listeners) and reports each as held or broken,
with the evidence. Run it as root.

Exit status: 0 everything held, 1 something did not hold, 2 usage error,
3 the check could not be carried out.

flags:
`

// Main is the nsbroker-isolation-check command: it parses args (without
// the program name), runs a check on this host and writes the report to
// stdout, as text or JSON. It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if child, err := runChild(); child {
		if err != nil {
			fmt.Fprintf(stderr, "nsbroker-isolation-check: child: %v\n", err)
			return ExitError
		}
		return ExitHeld
	}
	fs := flag.NewFlagSet("nsbroker-isolation-check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	var (
		cfg      Config
		host     HostConfig
		names    string
		groups   string
		probe    uint
		jsonOut  bool
		brief    bool
		quiet    bool
		noListen bool
	)
	fs.StringVar(&host.AdminSocket, "socket", DefaultAdminSocket, "the daemon's admin socket")
	fs.StringVar(&host.LocalSocket, "local-socket", DefaultLocalSocket, "the socket the daemon opens inside each attached namespace")
	fs.IntVar(&cfg.Namespaces, "namespaces", DefaultNamespaces, "how many namespaces to create")
	fs.StringVar(&names, "names", "", "comma-separated names for the namespaces, instead of generated ones")
	fs.BoolVar(&cfg.Attached, "attached", false, "the namespaces --names lists are already attached: do not create, attach, detach or delete them (test messages are still published to their groups)")
	fs.IntVar(&cfg.Messages, "messages", DefaultMessages, "messages each namespace publishes to each group")
	fs.StringVar(&groups, "groups", "1,2", "comma-separated multicast groups to check")
	fs.UintVar(&probe, "probe-group", DefaultProbeGroup, "the group the NETLINK_LISTEN_ALL_NSID probes use")
	fs.BoolVar(&noListen, "no-listener-probes", false, "leave out the NETLINK_LISTEN_ALL_NSID probes (reported as not run)")
	fs.DurationVar(&cfg.Timeout, "timeout", DefaultTimeout, "bound on every wait")
	fs.BoolVar(&jsonOut, "json", false, "write the report as JSON")
	fs.BoolVar(&brief, "brief", false, "write each probe on one line, without its evidence")
	fs.BoolVar(&quiet, "quiet", false, "no progress on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitHeld
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "nsbroker-isolation-check: unexpected arguments %q\n", fs.Args())
		return ExitUsage
	}
	if names != "" {
		cfg.Names = strings.Split(names, ",")
	}
	gs, err := parseGroups(groups)
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-isolation-check: --groups: %v\n", err)
		return ExitUsage
	}
	cfg.Groups, cfg.ProbeGroup, cfg.SkipListenerProbes = gs, uint32(probe), noListen
	if cfg.ProbeGroup == 0 || uint(cfg.ProbeGroup) != probe {
		fmt.Fprintf(stderr, "nsbroker-isolation-check: --probe-group %d is outside 1..%d\n", probe, maxGroup)
		return ExitUsage
	}
	if _, err := cfg.withDefaults(); err != nil {
		fmt.Fprintf(stderr, "nsbroker-isolation-check: %v\n", err)
		return ExitUsage
	}
	host.Timeout = cfg.Timeout
	cfg.Daemon = fmt.Sprintf("admin socket %s; tenants connect through %s inside their namespace", host.AdminSocket, host.LocalSocket)
	if !quiet {
		cfg.Progress = func(msg string) { fmt.Fprintf(stderr, "nsbroker-isolation-check: %s\n", msg) }
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env, err := NewHostEnv(ctx, &host)
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-isolation-check: %v\n", err)
		return ExitError
	}
	defer env.Close()
	report, err := Run(ctx, &cfg, env)
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-isolation-check: the check could not be carried out: %v\n", err)
		return ExitError
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(report)
	} else if brief {
		err = report.WriteBrief(stdout)
	} else {
		err = report.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "nsbroker-isolation-check: %v\n", err)
		return ExitError
	}
	if !report.Passed {
		return ExitBroken
	}
	return ExitHeld
}

func parseGroups(s string) ([]uint32, error) {
	var gs []uint32
	for _, f := range strings.Split(s, ",") {
		g, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a group number", f)
		}
		gs = append(gs, uint32(g))
	}
	return gs, nil
}

// durationText formats a duration for progress lines.
func durationText(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
