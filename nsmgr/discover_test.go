package nsmgr

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDiscover(t *testing.T) {
	a, b := newTestNamed(t), newTestNamed(t)
	dir := t.TempDir()
	bindNetns(t, filepath.Join(NetnsDir, a.Ref().Name), filepath.Join(dir, "pinned"))
	if err := os.WriteFile(filepath.Join(dir, "plain"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}

	got, err := Discover(dir, filepath.Join(dir, "missing"), NetnsDir, dir)
	if err != nil {
		t.Fatal(err)
	}
	// Other namespaces may exist under NetnsDir; ours must be there, and
	// dir must give exactly its one namespace, first.
	if len(got) == 0 || got[0] != (Ref{Path: filepath.Join(dir, "pinned")}) {
		t.Fatalf("Discover = %v, want path:%s/pinned first", got, dir)
	}
	for _, want := range []Ref{a.Ref(), b.Ref()} {
		if !slices.Contains(got, want) {
			t.Errorf("Discover = %v, missing %v", got, want)
		}
	}
	for _, r := range got[1:] {
		if r.Name == "" {
			t.Errorf("Discover returned %v, want only names after %s", r, dir)
		}
	}

	defaults, err := Discover()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(defaults, a.Ref()) {
		t.Errorf("Discover() = %v, missing %v", defaults, a.Ref())
	}

	empty, err := Discover(filepath.Join(dir, "missing"))
	if err != nil || len(empty) != 0 {
		t.Errorf("Discover(missing dir) = %v, %v; want nothing, no error", empty, err)
	}
	if diff := cmp.Diff([]Ref{{Path: filepath.Join(dir, "pinned")}}, mustDiscover(t, dir)); diff != "" {
		t.Errorf("Discover(%s) (-want +got):\n%s", dir, diff)
	}
}

func mustDiscover(t *testing.T, dirs ...string) []Ref {
	t.Helper()
	refs, err := Discover(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	return refs
}
