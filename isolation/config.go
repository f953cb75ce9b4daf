package isolation

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Config says what a check does. The zero value of a field means its
// default.
type Config struct {
	// Namespaces is how many namespaces to create (default 8, at least 2).
	// Ignored when Names is set.
	Namespaces int
	// Names are the namespaces to use instead of generated ones.
	Names []string
	// Attached says Names are already attached to the daemon: the check
	// neither creates, attaches, detaches nor deletes them. It still
	// publishes test messages to their groups.
	Attached bool
	// Prefix starts the names of created namespaces (default
	// "nsb-iso-<pid>-").
	Prefix string
	// Messages is how many messages each namespace publishes to each group
	// (default 10), followed by one end marker.
	Messages int
	// Groups are the multicast groups to check (default 1 and 2).
	Groups []uint32
	// ProbeGroup is the group the listener probes use (default 32); it
	// must not be one of Groups.
	ProbeGroup uint32
	// SkipListenerProbes leaves out the NETLINK_LISTEN_ALL_NSID probes.
	SkipListenerProbes bool
	// Timeout bounds every wait: an rpc, subscriptions to register,
	// messages to arrive (default 30s).
	Timeout time.Duration
	// Daemon describes the daemon's sockets, for the report.
	Daemon string
	// Progress, if set, is told what the check is doing, a line at a time.
	Progress func(msg string)
}

// Defaults of Config.
const (
	DefaultNamespaces = 8
	DefaultMessages   = 10
	DefaultProbeGroup = 32
	DefaultTimeout    = 30 * time.Second
)

// DefaultGroups are the groups checked by default.
var DefaultGroups = []uint32{1, 2}

// maxGroup is the highest multicast group (NSB_GROUPS).
const maxGroup = 32

func (c *Config) withDefaults() (Config, error) {
	var cfg Config
	if c != nil {
		cfg = *c
	}
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("nsb-iso-%d-", os.Getpid())
	}
	if len(cfg.Names) == 0 {
		if cfg.Attached {
			return cfg, errors.New("attached needs the names of the namespaces")
		}
		if cfg.Namespaces == 0 {
			cfg.Namespaces = DefaultNamespaces
		}
		for i := 1; i <= cfg.Namespaces; i++ {
			cfg.Names = append(cfg.Names, fmt.Sprintf("%s%d", cfg.Prefix, i))
		}
	}
	cfg.Names = slices.Clone(cfg.Names)
	cfg.Namespaces = len(cfg.Names)
	if cfg.Namespaces < 2 {
		return cfg, fmt.Errorf("need at least 2 namespaces, not %d", cfg.Namespaces)
	}
	seen := map[string]bool{}
	for _, n := range cfg.Names {
		if n == "" || seen[n] {
			return cfg, fmt.Errorf("namespace names must be non-empty and distinct: %q", cfg.Names)
		}
		seen[n] = true
	}
	if cfg.Messages == 0 {
		cfg.Messages = DefaultMessages
	}
	if cfg.Messages < 0 {
		return cfg, fmt.Errorf("messages must be positive, not %d", cfg.Messages)
	}
	if len(cfg.Groups) == 0 {
		cfg.Groups = slices.Clone(DefaultGroups)
	}
	if cfg.ProbeGroup == 0 {
		cfg.ProbeGroup = DefaultProbeGroup
	}
	for i, g := range append(slices.Clone(cfg.Groups), cfg.ProbeGroup) {
		if g < 1 || g > maxGroup {
			return cfg, fmt.Errorf("group %d is outside 1..%d", g, maxGroup)
		}
		if i < len(cfg.Groups) && slices.Index(cfg.Groups, g) != i {
			return cfg, fmt.Errorf("group %d is named twice", g)
		}
	}
	if slices.Contains(cfg.Groups, cfg.ProbeGroup) {
		return cfg, fmt.Errorf("the probe group %d must not be one of the checked groups %v", cfg.ProbeGroup, cfg.Groups)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	return cfg, nil
}
