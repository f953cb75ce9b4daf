package main

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsbroker/nsbroker/attacher"
)

// The example hook configurations in deploy/oci.
const (
	exampleDir       = "../../deploy/oci"
	exampleRuncHooks = exampleDir + "/runc-hooks.json"
)

// hooksDFile is a hook configuration file of the oci-hooks(5) format
// (version 1.0.0) that CRI-O and Podman read from hooks.d directories.
type hooksDFile struct {
	Version string     `json:"version"`
	Hook    specs.Hook `json:"hook"`
	When    struct {
		Always        *bool             `json:"always,omitempty"`
		Annotations   map[string]string `json:"annotations,omitempty"`
		Commands      []string          `json:"commands,omitempty"`
		HasBindMounts *bool             `json:"hasBindMounts,omitempty"`
	} `json:"when"`
	Stages []string `json:"stages"`
}

// decodeStrict decodes the one JSON value in path into v; unknown fields
// are errors.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("%s: more after the first JSON value", path)
	}
}

// checkHook checks that an example hook runs the installed hook for stage
// with arguments the hook accepts, within its timeout.
func checkHook(t *testing.T, where string, h specs.Hook, stage string) {
	t.Helper()
	if h.Path != "/usr/local/bin/nsbroker-oci-hook" || len(h.Args) == 0 || h.Args[0] != "nsbroker-oci-hook" {
		t.Errorf("%s: path %q args %q, want /usr/local/bin/nsbroker-oci-hook with argv[0] nsbroker-oci-hook", where, h.Path, h.Args)
		return
	}
	opts, err := parseArgs(h.Args[1:], io.Discard)
	if err != nil {
		t.Errorf("%s: args %q: %v", where, h.Args, err)
		return
	}
	// createRuntime and createContainer meet in the state directory.
	if opts.stage != stage || opts.socket != attacher.DefaultSocket || opts.stateDir != defaultStateDir {
		t.Errorf("%s: stage %q socket %q state directory %q, want %q %q %q", where, opts.stage, opts.socket, opts.stateDir, stage, attacher.DefaultSocket, defaultStateDir)
	}
	// The runtime's deadline must leave the hook time to report its own.
	if h.Timeout == nil || float64(*h.Timeout) <= opts.timeout.Seconds() {
		t.Errorf("%s: timeout %v s, want more than the hook's own %v", where, h.Timeout, opts.timeout)
	}
}

func TestExampleHooksD(t *testing.T) {
	for file, stage := range map[string]string{
		"nsbroker-attach.json": stageCreateRuntime,
		"nsbroker-mount.json":  stageCreateContainer,
		"nsbroker-detach.json": stagePoststop,
	} {
		var f hooksDFile
		decodeStrict(t, filepath.Join(exampleDir, "hooks.d", file), &f)
		if f.Version != "1.0.0" || !slices.Equal(f.Stages, []string{stage}) || f.When.Always == nil || !*f.When.Always {
			t.Errorf("%s: version %q stages %q when.always %v; want 1.0.0 [%s] true", file, f.Version, f.Stages, f.When.Always, stage)
		}
		checkHook(t, file, f.Hook, stage)
	}
}

func TestExampleRuncHooks(t *testing.T) {
	var stages map[string]json.RawMessage
	decodeStrict(t, exampleRuncHooks, &stages)
	if got := slices.Sorted(maps.Keys(stages)); !slices.Equal(got, []string{"createContainer", "createRuntime", "poststop"}) {
		t.Fatalf("%s: stages %q, want createContainer, createRuntime and poststop", exampleRuncHooks, got)
	}
	var hooks specs.Hooks
	decodeStrict(t, exampleRuncHooks, &hooks)
	if len(hooks.CreateRuntime) != 1 || len(hooks.CreateContainer) != 1 || len(hooks.Poststop) != 1 {
		t.Fatalf("%s: want one createRuntime, one createContainer and one poststop hook, got %+v", exampleRuncHooks, hooks)
	}
	checkHook(t, "createRuntime", hooks.CreateRuntime[0], stageCreateRuntime)
	checkHook(t, "createContainer", hooks.CreateContainer[0], stageCreateContainer)
	checkHook(t, "poststop", hooks.Poststop[0], stagePoststop)
}
