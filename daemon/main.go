package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"gopkg.in/yaml.v3"
)

// Exit codes of Main.
const (
	exitOK    = 0
	exitError = 1 // the daemon failed
	exitUsage = 2 // bad flags or configuration
)

// Main runs nsbrokerd with the command-line arguments args (without the
// program name) and returns the process exit status: 0 after a clean
// stop, 1 when the daemon failed, 2 for bad flags or configuration.
// SIGINT and SIGTERM stop it gracefully, SIGHUP reloads the tenants.
func Main(args []string) int {
	// Signals first: a SIGTERM or SIGHUP during start-up must not kill the
	// process with half its sockets set up.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Once stopping, a second SIGINT or SIGTERM kills at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// A closed stdout or stderr (a vanished log reader) must not kill the
	// daemon; writes fail with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)

	return mainWith(ctx, args, hup, os.Stdout, os.Stderr)
}

func mainWith(ctx context.Context, args []string, hup <-chan os.Signal, stdout, stderr io.Writer) int {
	cfg, opts, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "nsbrokerd: %v\n", err)
		return exitUsage
	}
	if opts.printMemory {
		if err := printMemoryBudget(stdout, cfg); err != nil {
			fmt.Fprintf(stderr, "nsbrokerd: %v\n", err)
			return exitError
		}
		return exitOK
	}
	if opts.printConfig {
		out, err := yaml.Marshal(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "nsbrokerd: %v\n", err)
			return exitError
		}
		stdout.Write(out)
		return exitOK
	}
	cfg.hangups = hup
	if cfg.Logger == nil {
		cfg.Logger = newLogger(cfg, stderr)
	}
	if err := Run(ctx, cfg); err != nil {
		cfg.Logger.Error("nsbrokerd failed", "err", err)
		return exitError
	}
	return exitOK
}

// newLogger builds the logger LogLevel and LogFormat describe; cfg is
// valid.
func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
