package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// cmdFlags is a command's own flags; parse adds the global ones.
type cmdFlags struct {
	c   *cli
	cmd *flag.FlagSet
}

func (c *cli) flags() *cmdFlags {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	return &cmdFlags{c: c, cmd: fs}
}

// parse parses the command's and the global flags wherever they appear
// among args ("--" ends them) and returns the other arguments. --help
// prints the command's usage and returns flag.ErrHelp.
func (f *cmdFlags) parse(args []string) ([]string, error) {
	fs := flag.NewFlagSet(f.c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	f.c.opts.register(fs)
	f.cmd.VisitAll(func(fl *flag.Flag) { fs.Var(fl.Value, fl.Name, fl.Usage) })
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		f.usage()
		return nil, err
	}
	if err != nil {
		return nil, usagef("%v", err)
	}
	return pos, nil
}

// parseNone is parse for a command that takes no positional arguments.
func (f *cmdFlags) parseNone(args []string) error {
	pos, err := f.parse(args)
	if err == nil && len(pos) > 0 {
		err = usagef("unexpected argument %q", pos[0])
	}
	return err
}

func (f *cmdFlags) usage() {
	w := f.c.stdout
	cmd := f.c.cmd
	fmt.Fprintf(w, "Usage: %s %s %s\n\n%s.\n", prog, cmd.name, cmd.synopsis, capitalize(cmd.summary))
	has := false
	f.cmd.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintf(w, "\nOptions:\n")
		printFlags(w, f.cmd)
	}
	fmt.Fprintf(w, "\nGlobal options (--socket, --local, --local-socket, --timeout): see '%s --help'.\n", prog)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// parseInterspersed is fs.Parse that goes on past arguments that are not
// flags (flag's own Parse stops at the first), so options may follow them.
// "--" ends the flags; a lone "-" is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		used := len(args) - len(rest)
		if used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// groupsFlag is --group: a comma-separated list of group numbers, which
// may also be repeated.
type groupsFlag []uint32

func (g *groupsFlag) String() string {
	parts := make([]string, len(*g))
	for i, v := range *g {
		parts[i] = strconv.FormatUint(uint64(v), 10)
	}
	return strings.Join(parts, ",")
}

func (g *groupsFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		v, err := strconv.ParseUint(strings.TrimSpace(part), 10, 32)
		if err != nil {
			return fmt.Errorf("group %q is not a number", part)
		}
		*g = append(*g, uint32(v))
	}
	return nil
}

// printFlags lists flags as the usage spells them, with two dashes.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(fl *flag.Flag) {
		arg, usage := flag.UnquoteUsage(fl)
		if arg != "" {
			arg = " " + strings.ToUpper(arg)
		}
		if def := fl.DefValue; def != "" && def != "false" && def != "0" && def != "[]" {
			usage += fmt.Sprintf(" (default %s)", def)
		}
		fmt.Fprintf(w, "  --%s%s\n        %s\n", fl.Name, arg, usage)
	})
}
