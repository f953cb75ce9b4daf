package nsmgr

import (
	"context"
	"errors"
	"os"
	"os/exec"
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
