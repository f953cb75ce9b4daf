package nsmgr

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestWatchPIDExit(t *testing.T) {
	cmd := startSleeper(t, nil)
	exited, err := WatchPID(context.Background(), cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Fatal("channel closed while the process is alive")
	default:
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: the exit alone must close the channel.
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("channel still open 5s after the process was killed")
	}
	if err := cmd.Wait(); err == nil {
		t.Error("sleep exited cleanly, want killed")
	}
}

func TestWatchPIDNoProcess(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := WatchPID(context.Background(), cmd.Process.Pid); !errors.Is(err, unix.ESRCH) {
		t.Errorf("WatchPID(reaped pid %d) = %v, want ESRCH", cmd.Process.Pid, err)
	}
	if _, err := WatchPID(context.Background(), 0); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("WatchPID(0) = %v, want ErrInvalidRef", err)
	}
}

// TestWatchPIDCancel checks that cancelling releases the pidfd and leaves
// the channel open even after the process exits.
func TestWatchPIDCancel(t *testing.T) {
	cmd := startSleeper(t, nil)
	// The runtime's poller opens its own descriptors on first use.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()

	before := fdCount(t)
	ctx, cancel := context.WithCancel(context.Background())
	exited, err := WatchPID(ctx, cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := fdCount(t); got != before+1 {
		t.Errorf("descriptors while watching = %d, want %d", got, before+1)
	}
	cancel()
	// The watch goroutine closes the pidfd after it sees the cancellation,
	// which gives no signal of its own: poll, bounded.
	deadline := time.Now().Add(5 * time.Second)
	for n := fdCount(t); n != before; n = fdCount(t) {
		if time.Now().After(deadline) {
			t.Fatalf("descriptors 5s after cancel = %d, want %d", n, before)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case <-exited:
		t.Error("channel closed after cancel, want it left open")
	default:
	}
}

func TestProcessStart(t *testing.T) {
	a := startSleeper(t, nil)
	startA, err := ProcessStart(a.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ProcessStart(a.Process.Pid)
	if err != nil || again != startA {
		t.Fatalf("ProcessStart(%d) twice: %d then %d (%v)", a.Process.Pid, startA, again, err)
	}
	self, err := ProcessStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self > startA {
		t.Errorf("the test process started at %d, after its child at %d", self, startA)
	}
	time.Sleep(30 * time.Millisecond) // more than a tick (at most 10 ms)
	b := startSleeper(t, nil)
	startB, err := ProcessStart(b.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if startB <= startA {
		t.Errorf("a process started 30 ms later has start time %d, want above %d", startB, startA)
	}

	a.Process.Kill()
	a.Wait()
	if _, err := ProcessStart(a.Process.Pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ProcessStart of a reaped process: %v, want fs.ErrNotExist", err)
	}
}

// A command name may hold ")" and spaces; the start time is still found.
func TestProcessStartOddName(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(t.TempDir(), "x) 1 2 (y")
	if err := os.WriteFile(odd, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	got, err := ProcessStart(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := ProcessStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Misparsed, a field before the start time (a pid, a flag word)
	// would come out instead; the start time is between the test's own
	// and now.
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		t.Fatal(err)
	}
	const hz = 100 // USER_HZ on Linux
	if got < self || got > uint64(info.Uptime+1)*hz {
		t.Errorf("start time %d of %q, want between the test's %d and uptime %d s × %d", got, odd, self, info.Uptime, hz)
	}
}
