package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// readEntries reads the state file strictly: every line must be an entry.
func readEntries(t *testing.T, path string) map[string]stateEntry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]stateEntry)
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		var e stateEntry
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%s line %d %q: %v", path, i+1, line, err)
		}
		out[e.Name] = e
	}
	return out
}

func writeLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func entryLine(t *testing.T, e stateEntry) string {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantEntry is the entry for a namespace open in the test.
func wantEntry(name, ref string, ns *nsmgr.Namespace, start uint64) stateEntry {
	return stateEntry{Version: stateVersion, Name: name, Ref: ref, Dev: ns.ID().Dev, Ino: ns.ID().Ino,
		Cookie: ns.Cookie(), Boot: bootID(), Start: start}
}

// startSleeperIn starts a process inside ns, killed when the test ends.
func startSleeperIn(t *testing.T, ns *nsmgr.Namespace) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := ns.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// namespacesOf lists a daemon's namespaces as "name inode".
func namespacesOf(t *testing.T, d *testDaemon) []string {
	t.Helper()
	list, err := d.admin().ListNamespaces(ctxTimeout(t), &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ns := range list.GetNamespaces() {
		out = append(out, fmt.Sprintf("%s %d", ns.GetName(), ns.GetInode()))
	}
	return out
}

// TestIntegrationStateRestart: namespaces attached through the admin API
// by name, path and pid are in the state file as soon as the attach
// answers; a new daemon on the same state file attaches each again under
// the same name, as the same namespace, before it serves.
func TestIntegrationStateRestart(t *testing.T) {
	testenv.RequireRoot(t)
	stateFile := filepath.Join(t.TempDir(), "attachments.json")
	byName, name := newNamespace(t)
	byPath, pathName := newNamespace(t)
	forPID, _ := newNamespace(t)
	sleeper := startSleeperIn(t, forPID)
	pid := sleeper.Process.Pid
	start, err := nsmgr.ProcessStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(nsmgr.NetnsDir, pathName)

	d1 := startDaemon(t, func(c *Config) { c.StateFile = stateFile })
	admin := d1.admin()
	reqs := []*nsbrokerv1.AttachNamespaceRequest{
		attachRef(name),
		{Name: "by-path", Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Path{Path: path}}},
		{Name: "by-pid", Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(pid)}}},
	}
	want := map[string]stateEntry{
		name:      wantEntry(name, "name:"+name, byName, 0),
		"by-path": wantEntry("by-path", "path:"+path, byPath, 0),
		"by-pid":  wantEntry("by-pid", fmt.Sprintf("pid:%d", pid), forPID, start),
	}
	for _, req := range reqs {
		if _, err := admin.AttachNamespace(ctxTimeout(t), req); err != nil {
			t.Fatalf("attach %s: %v", req.GetName(), err)
		}
		// Recorded before the answer: read at once, no waiting.
		got := readEntries(t, stateFile)[req.GetName()]
		if got != want[req.GetName()] {
			t.Errorf("state file right after attaching %s:\n got %+v\nwant %+v", req.GetName(), got, want[req.GetName()])
		}
	}
	if got := readEntries(t, stateFile); len(got) != len(want) {
		t.Errorf("state file: %d entries, want %d: %+v", len(got), len(want), got)
	}
	before := namespacesOf(t, d1)
	if err := d1.stop(); err != nil {
		t.Fatal(err)
	}
	// A graceful stop keeps the file as it was.
	if got := readEntries(t, stateFile); len(got) != len(want) {
		t.Fatalf("state file after the daemon stopped: %d entries, want %d: %+v", len(got), len(want), got)
	}

	d2 := startDaemon(t, func(c *Config) { c.StateFile = stateFile })
	// Everything restored was logged before the daemon served anything.
	var order []string
	for _, e := range records(d2.logs) {
		switch e.msg {
		case "recorded attachment restored":
			order = append(order, "restored "+e.attrs["namespace"])
		case "nsbrokerd serving":
			order = append(order, "serving")
		}
	}
	if len(order) != 4 || order[3] != "serving" {
		t.Errorf("start-up of the second daemon: %q, want 3 namespaces restored, then serving", order)
	}
	if after := namespacesOf(t, d2); !slices.Equal(after, before) {
		t.Errorf("namespaces after the restart: got %q, want %q (same names, same inodes)", after, before)
	}
	for _, n := range records(d2.logs) {
		if n.msg == "recorded attachment dropped" {
			t.Errorf("dropped: %v", n)
		}
	}
	if got := readEntries(t, stateFile); len(got) != len(want) {
		t.Errorf("state file after the restart: %d entries, want %d: %+v", len(got), len(want), got)
	}

	// Detaching is recorded as well, before the answer.
	if _, err := d2.admin().DetachNamespace(ctxTimeout(t), &nsbrokerv1.DetachNamespaceRequest{Namespace: "by-path"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := readEntries(t, stateFile)["by-path"]; ok {
		t.Error("by-path still in the state file after DetachNamespace answered")
	}
}

// TestIntegrationStateReplaced: a recorded namespace whose name now names
// another namespace, a pid that is now another process, a process that
// exited and an entry of another boot are dropped with a log line saying
// why, and the file forgets them; the unchanged one is restored.
func TestIntegrationStateReplaced(t *testing.T) {
	testenv.RequireRoot(t)
	stateFile := filepath.Join(t.TempDir(), "attachments.json")
	kept, keptName := newNamespace(t)
	_, replacedName := newNamespace(t)
	forPID, _ := newNamespace(t)
	sleeper := startSleeperIn(t, forPID)
	exiting := startSleeperIn(t, forPID)

	d1 := startDaemon(t, func(c *Config) { c.StateFile = stateFile })
	admin := d1.admin()
	for _, req := range []*nsbrokerv1.AttachNamespaceRequest{
		attachRef(keptName), attachRef(replacedName),
		{Name: "by-pid", Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(sleeper.Process.Pid)}}},
	} {
		if _, err := admin.AttachNamespace(ctxTimeout(t), req); err != nil {
			t.Fatalf("attach %s: %v", req.GetName(), err)
		}
	}
	if err := d1.stop(); err != nil {
		t.Fatal(err)
	}
	entries := readEntries(t, stateFile)

	// While no daemon runs: the name is given to a new namespace.
	if err := nsmgr.DeleteNamed(replacedName); err != nil {
		t.Fatal(err)
	}
	replacement, err := nsmgr.NewNamed(replacedName)
	if err != nil {
		t.Fatal(err)
	}
	defer replacement.Close()
	// The pid is now another process: what a reused pid looks like, a
	// process in the same namespace under the recorded pid with another
	// start time.
	other := entries["by-pid"]
	other.Name = "pid-reused"
	other.Start--
	// A process that exited.
	exited := entries["by-pid"]
	exited.Name = "pid-exited"
	exited.Ref = fmt.Sprintf("pid:%d", exiting.Process.Pid)
	exiting.Process.Kill()
	exiting.Wait()
	// An entry of another boot, for a namespace that is still there.
	otherBoot := entries[keptName]
	otherBoot.Name = "other-boot"
	otherBoot.Boot = "00000000-0000-0000-0000-000000000000"
	writeLines(t, stateFile, entryLine(t, entries[keptName]), entryLine(t, entries[replacedName]),
		entryLine(t, other), entryLine(t, exited), entryLine(t, otherBoot))

	d2 := startDaemon(t, func(c *Config) { c.StateFile = stateFile })
	want := []string{fmt.Sprintf("%s %d", keptName, kept.Inode())}
	if got := namespacesOf(t, d2); !slices.Equal(got, want) {
		t.Errorf("namespaces after the restart: got %q, want %q", got, want)
	}
	reasons := map[string]string{}
	for _, e := range records(d2.logs) {
		if e.msg == "recorded attachment dropped" {
			reasons[e.attrs["namespace"]] = e.attrs["reason"]
		}
	}
	for name, want := range map[string]string{
		replacedName: "names another namespace now (device:inode",
		"pid-reused": fmt.Sprintf("process %d is another process", sleeper.Process.Pid),
		"pid-exited": fmt.Sprintf("process %d is gone", exiting.Process.Pid),
		"other-boot": "recorded in another boot",
	} {
		if !strings.Contains(reasons[name], want) {
			t.Errorf("%s: dropped with reason %q, want one with %q", name, reasons[name], want)
		}
	}
	if len(reasons) != 4 {
		t.Errorf("dropped %d entries (%v), want 4", len(reasons), reasons)
	}
	// The file no longer holds what was dropped.
	got := readEntries(t, stateFile)
	var names []string
	for name := range got {
		names = append(names, name)
	}
	slices.Sort(names)
	if wantNames := []string{keptName}; !slices.Equal(names, wantNames) {
		t.Errorf("state file after the restart holds %q, want %q", names, wantNames)
	}
}

// TestIntegrationStateDamaged: a state file with damaged lines among valid
// ones costs only the damaged lines, each logged with its number, and the
// daemon starts.
func TestIntegrationStateDamaged(t *testing.T) {
	testenv.RequireRoot(t)
	stateFile := filepath.Join(t.TempDir(), "attachments.json")
	a, aName := newNamespace(t)
	b, bName := newNamespace(t)
	c, cName := newNamespace(t)
	good := func(ns *nsmgr.Namespace, name string) stateEntry {
		return wantEntry(name, "name:"+name, ns, 0)
	}
	wrongVersion := good(c, cName)
	wrongVersion.Version = 2
	badRef := good(c, cName)
	badRef.Ref = "pid:-1"
	writeLines(t, stateFile,
		entryLine(t, good(a, aName)),         // 1
		"\x00\x01garbage",                    // 2
		`{"v":1,"name":"half`,                // 3: a write cut short
		entryLine(t, wrongVersion),           // 4
		"",                                   // blank lines are not damage
		entryLine(t, good(b, bName)),         // 6
		strings.Repeat("x", maxStateLine+10), // 7
		entryLine(t, badRef),                 // 8
		entryLine(t, good(a, aName)),         // 9: a repeated name
		`{"v":1,"name":"","ref":"name:x","dev":1,"ino":2}`, // 10
	)
	d := startDaemon(t, func(c *Config) { c.StateFile = stateFile })
	want := []string{fmt.Sprintf("%s %d", aName, a.Inode()), fmt.Sprintf("%s %d", bName, b.Inode())}
	slices.Sort(want)
	if got := namespacesOf(t, d); !slices.Equal(got, want) {
		t.Errorf("namespaces: got %q, want %q", got, want)
	}
	var skipped []string
	for _, e := range records(d.logs) {
		if e.msg == "state file: line skipped" {
			skipped = append(skipped, e.attrs["line"])
		}
	}
	if wantSkipped := []string{"2", "3", "4", "7", "8", "9", "10"}; !slices.Equal(skipped, wantSkipped) {
		t.Errorf("lines skipped: %q, want %q", skipped, wantSkipped)
	}
	// Rewritten clean.
	if got := readEntries(t, stateFile); len(got) != 2 || got[aName] != good(a, aName) || got[bName] != good(b, bName) {
		t.Errorf("state file after the start: %+v, want the entries of %s and %s", got, aName, bName)
	}
}

// A state file that cannot be read at all (a directory here) is logged and
// the daemon starts; so does one that cannot be written.
func TestIntegrationStateUnusable(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "attachments.json")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, func(c *Config) { c.StateFile = dir })
	d.logs.waitCount(msgIs("cannot read the state file; no attachment restored"), 1)
	d.logs.waitCount(msgIs("cannot write the state file; attachments made now may be forgotten at a restart"), 1)
	_, name := newNamespace(t)
	if _, err := d.admin().AttachNamespace(ctxTimeout(t), attachRef(name)); err != nil {
		t.Errorf("attach with an unwritable state file: %v, want it attached all the same", err)
	}
}

// writeFileAtomic replaces the file: a reader sees the old contents or the
// new, never a mix or an empty file; nothing temporary is left; a reader
// that had the old file open keeps reading the old contents.
func TestStateWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "attachments.json")
	versions := make([][]byte, 20)
	for i := range versions {
		// Sizes far apart, so that a torn write shows.
		versions[i] = bytes.Repeat(fmt.Appendf(nil, "version %02d\n", i), 1+(i%2)*20000)
	}
	if err := writeFileAtomic(path, versions[0]); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var torn []string
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err == nil && !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, b) }) {
				mu.Lock()
				torn = append(torn, fmt.Sprintf("%d bytes", len(b)))
				mu.Unlock()
			} else if err != nil {
				mu.Lock()
				torn = append(torn, err.Error())
				mu.Unlock()
			}
		}
	}()
	for round := 0; round < 10; round++ {
		for _, v := range versions[1:] {
			if err := writeFileAtomic(path, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(10 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(torn) > 0 {
		t.Errorf("a reader saw %d files that were none of those written, e.g. %s", len(torn), torn[0])
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, versions[len(versions)-1]) {
		t.Errorf("final contents %d bytes, want the last version written", len(b))
	}
	var oldData bytes.Buffer
	if _, err := oldData.ReadFrom(old); err != nil || !bytes.Equal(oldData.Bytes(), versions[0]) {
		t.Errorf("the file open before: read %d bytes (%v), want the first version: it was replaced, not rewritten", oldData.Len(), err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "attachments.json" {
		t.Errorf("directory holds %v, want only attachments.json", entries)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v (%v), want 0600", st.Mode(), err)
	}
}

// Lines are read one by one, whatever their length.
func TestStateReadLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	e := stateEntry{Version: 1, Name: "n", Ref: "name:n", Dev: 1, Ino: 2}
	writeLines(t, path, strings.Repeat("y", 3*maxStateLine), entryLine(t, e), strings.Repeat("z", maxStateLine+1)+"}", entryLine(t, e))
	logs := newLogRecorder(t)
	defer logs.close()
	got, err := readStateFile(path, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != e {
		t.Errorf("entries %+v, want just %+v", got, e)
	}
	if n := logs.count(msgIs("state file: line skipped")); n != 3 {
		t.Errorf("%d lines skipped, want 3", n)
	}
	if got, err := readStateFile(filepath.Join(t.TempDir(), "missing"), slog.New(logs)); got != nil || err != nil {
		t.Errorf("missing file: %v, %v; want no entries and no error", got, err)
	}
}

// records returns a copy of what the recorder has recorded.
func records(r *logRecorder) []logEntry {
	r.shared.mu.Lock()
	defer r.shared.mu.Unlock()
	return slices.Clone(r.shared.entries)
}

// A namespace both recorded and listed in --attach is attached once,
// without an error line.
func TestIntegrationStateAndAttach(t *testing.T) {
	testenv.RequireRoot(t)
	stateFile := filepath.Join(t.TempDir(), "attachments.json")
	ns, name := newNamespace(t)
	writeLines(t, stateFile, entryLine(t, wantEntry(name, "name:"+name, ns, 0)))
	d := startDaemon(t, func(c *Config) { c.StateFile = stateFile; c.Attach = []string{name} })
	if got, want := namespacesOf(t, d), []string{fmt.Sprintf("%s %d", name, ns.Inode())}; !slices.Equal(got, want) {
		t.Errorf("namespaces: got %q, want %q", got, want)
	}
	if n := d.logs.count(func(e logEntry) bool { return e.level >= slog.LevelWarn }); n != 0 {
		t.Errorf("%d warnings or errors, want none", n)
	}
}
