package kmodtest

import (
	"encoding/json"
	"testing"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestIntegrationUnprivileged: a process without capabilities may ECHO and
// ask for STATS and GROUPS, but PUBLISH is refused with EPERM (before anything is
// multicast or numbered), and the kernel lets it neither join a group nor
// send to one directly.
func TestIntegrationUnprivileged(t *testing.T) {
	unit := testenv.RequireModule(t)
	root := dial(t, unit, netns.None())
	before := root.stats()

	out := runUnprivileged(t, unit, childUnpriv)
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child's report %q: %v", out, err)
	}
	t.Logf("child uid %d euid %d: echo %+v, stats %+v, groups %+v, publish %+v, join %+v, sendto group %+v",
		rep.UID, rep.EUID, rep.Echo, rep.Stats, rep.Groups, rep.Publish, rep.Join, rep.Forge)
	if rep.UID != nobody || rep.EUID != nobody {
		t.Fatalf("child ran as uid %d euid %d, want %d", rep.UID, rep.EUID, nobody)
	}

	inInit := initInode(t)
	if rep.Echo.Errno != 0 || rep.Echo.Inum != inInit {
		t.Errorf("unprivileged ECHO: errno %d %q inode %d, want success from inode %d", rep.Echo.Errno, rep.Echo.Msg, rep.Echo.Inum, inInit)
	}
	if rep.Stats.Errno != 0 || rep.Stats.Inum != inInit {
		t.Errorf("unprivileged STATS: errno %d %q inode %d, want success from inode %d", rep.Stats.Errno, rep.Stats.Msg, rep.Stats.Inum, inInit)
	}
	if rep.Groups.Errno != 0 || rep.Groups.Inum != inInit {
		t.Errorf("unprivileged GROUPS: errno %d %q inode %d, want success from inode %d", rep.Groups.Errno, rep.Groups.Msg, rep.Groups.Inum, inInit)
	}
	if unix.Errno(rep.Publish.Errno) != unix.EPERM || rep.Publish.Msg != msgNeedsNetAdmn {
		t.Errorf("unprivileged PUBLISH: errno %d %q, want EPERM (%d) %q", rep.Publish.Errno, rep.Publish.Msg, int(unix.EPERM), msgNeedsNetAdmn)
	}
	if unix.Errno(rep.Forge.Errno) != unix.EPERM {
		t.Errorf("unprivileged sendto group 1: errno %d, want EPERM (%d)", rep.Forge.Errno, int(unix.EPERM))
	}
	if unix.Errno(rep.Join.Errno) != unix.EPERM {
		t.Errorf("unprivileged join of group 1: errno %d, want EPERM (%d)", rep.Join.Errno, int(unix.EPERM))
	}

	// The refused publish was counted as rejected and was never multicast.
	after := root.stats()
	for _, d := range []struct {
		name    string
		counter uint16
		want    uint64
	}{
		{"ECHO", statsEcho, 1},
		{"PUBLISH", statsPublish, 0},
		{"REJECTED", statsRejected, 1},
	} {
		if got := after.counters[d.counter] - before.counters[d.counter]; got != d.want {
			t.Errorf("initial namespace's %s counter moved by %d, want %d", d.name, got, d.want)
		}
	}
}
