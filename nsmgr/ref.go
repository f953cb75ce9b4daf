package nsmgr

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nsbroker/nsbroker/internal/quote"
)

// NetnsDir is where named namespaces live, as with iproute2's ip netns.
const NetnsDir = "/run/netns"

// Bounds of a Ref, in bytes: the kernel's own, checked before any system
// call so that a longer one is refused as invalid, and shown bounded.
const (
	// NameMax is the longest Ref.Name: NAME_MAX, the longest file name
	// in NetnsDir.
	NameMax = 255
	// PathMax is the longest Ref.Path: PATH_MAX less its terminating NUL.
	PathMax = 4095
)

// Ref names a network namespace in exactly one way.
type Ref struct {
	// Name is a namespace under NetnsDir, as made by ip netns add.
	Name string
	// Path is any file that is a network namespace: an nsfs bind mount
	// or /proc/PID/ns/net.
	Path string
	// PID names the network namespace of a process.
	PID int
}

// ParseRef parses "name:x", "path:/x", "pid:123" or a bare name. A string
// with any other prefix before a colon is a bare name, since names may
// contain colons.
func ParseRef(s string) (Ref, error) {
	var r Ref
	kind, val, found := strings.Cut(s, ":")
	switch {
	case found && kind == "name":
		r.Name = val
	case found && kind == "path":
		r.Path = val
	case found && kind == "pid":
		pid, err := strconv.Atoi(val)
		if err != nil {
			return Ref{}, fmt.Errorf("%w: %s: pid is not a number", ErrInvalidRef, quote.String(s))
		}
		if pid <= 0 {
			return Ref{}, fmt.Errorf("%w: %s: pid must be positive", ErrInvalidRef, quote.String(s))
		}
		r.PID = pid
	default:
		r.Name = s
	}
	if err := r.Validate(); err != nil {
		return Ref{}, err
	}
	return r, nil
}

// Validate reports whether r names exactly one namespace, the name is
// usable as a file name in NetnsDir (at most NameMax bytes) and the path
// as a path (at most PathMax bytes, no NUL). Errors match ErrInvalidRef.
func (r Ref) Validate() error {
	set := 0
	if r.Name != "" {
		set++
		if err := validName(r.Name); err != nil {
			return err
		}
	}
	if r.Path != "" {
		set++
		if err := validPath(r.Path); err != nil {
			return err
		}
	}
	if r.PID != 0 {
		set++
		if r.PID < 0 {
			return fmt.Errorf("%w: pid %d is negative", ErrInvalidRef, r.PID)
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: set exactly one of name, path and pid (got %s)", ErrInvalidRef, r.parts())
	}
	return nil
}

// validName rejects names that ip netns would reject or that would escape
// NetnsDir.
func validName(name string) error {
	if len(name) > NameMax {
		return fmt.Errorf("%w: namespace name %s is longer than %d bytes", ErrInvalidRef, quote.String(name), NameMax)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%w: %s is not a valid namespace name", ErrInvalidRef, quote.String(name))
	}
	return nil
}

// validPath rejects paths that no system call would take.
func validPath(path string) error {
	if len(path) > PathMax {
		return fmt.Errorf("%w: path %s is longer than %d bytes", ErrInvalidRef, quote.String(path), PathMax)
	}
	if strings.ContainsRune(path, 0) {
		return fmt.Errorf("%w: path %s contains a NUL byte", ErrInvalidRef, quote.String(path))
	}
	return nil
}

// String returns "name:x", "path:/x" or "pid:123", the forms ParseRef
// accepts. A Ref that does not validate prints every field that is set.
func (r Ref) String() string {
	if r.Validate() != nil {
		return "invalid{" + r.parts() + "}"
	}
	return r.parts()
}

func (r Ref) parts() string {
	var p []string
	if r.Name != "" {
		p = append(p, "name:"+r.Name)
	}
	if r.Path != "" {
		p = append(p, "path:"+r.Path)
	}
	if r.PID != 0 {
		p = append(p, "pid:"+strconv.Itoa(r.PID))
	}
	if len(p) == 0 {
		return "nothing"
	}
	return strings.Join(p, " ")
}

// file is the path Open opens for r.
func (r Ref) file() string {
	switch {
	case r.Name != "":
		return filepath.Join(NetnsDir, r.Name)
	case r.PID != 0:
		return "/proc/" + strconv.Itoa(r.PID) + "/ns/net"
	}
	return r.Path
}

// refIn returns the Ref for entry name of a watched or discovered
// directory: a name for NetnsDir, a path elsewhere.
func refIn(dir, name string) Ref {
	if filepath.Clean(dir) == NetnsDir {
		return Ref{Name: name}
	}
	return Ref{Path: filepath.Join(dir, name)}
}

var procNetns = regexp.MustCompile(`^/proc/([0-9]+)/(task/[0-9]+/)?ns/net$`)

// Process returns the process whose network namespace r names, whose exit
// ends the reference: r.PID, or N for a path /proc/N/ns/net or
// /proc/N/task/T/ns/net. It returns 0 for a reference that outlives any
// process (a name, a bind mount).
func (r Ref) Process() int {
	if r.PID != 0 {
		return r.PID
	}
	if r.Path == "" {
		return 0
	}
	if m := procNetns.FindStringSubmatch(filepath.Clean(r.Path)); m != nil {
		if pid, err := strconv.Atoi(m[1]); err == nil {
			return pid
		}
	}
	return 0
}
