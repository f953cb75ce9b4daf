package nlfuzz

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// replayCrashers sends every datagram kept in dir, each in the initial
// namespace and in a new one, and fails the test on a kernel report or a
// wrong answer. dir not existing means there is nothing to replay.
func replayCrashers(t *testing.T, unit int, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		t.Logf("no %s: no crashers to replay", dir)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	type crasher struct {
		name string
		data []byte
	}
	var crashers []crasher
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		crashers = append(crashers, crasher{e.Name(), data})
	}
	// An oops kills the replaying thread, which then never reports: watch
	// the kernel log and the replay's progress from here too.
	watch, err := openKmsg()
	if err != nil {
		t.Fatal(err)
	}
	defer watch.close()
	// The sender's thread is locked for good; run it on its own goroutine.
	s := newSender(-1, false)
	done := make(chan error, 1)
	go func() {
		if err := s.start(); err != nil {
			done <- err
			return
		}
		defer s.kmsg.close()
		for _, c := range crashers {
			for _, fresh := range []bool{false, true} {
				if err := replayOne(s, unit, fresh, "crasher "+c.name, c.data); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	log := s.kmsg
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
wait:
	for {
		select {
		case err = <-done:
			break wait
		case now := <-ticker.C:
			if first, kerr := watch.scan(); kerr == nil && first != "" {
				err, log = &errKernelReport{first: first}, watch
				break wait
			}
			if last := time.Unix(0, s.progress.Load()); s.progress.Load() != 0 && now.Sub(last) > stallLimit {
				err = fmt.Errorf("stuck for %v after %v", now.Sub(last).Round(time.Second), s.last.Load())
				break wait
			}
		}
	}
	var kr *errKernelReport
	if errors.As(err, &kr) {
		t.Fatalf("replaying %v: kernel report:\n  %s", s.last.Load(),
			strings.Join(log.collect(kr.first, 60, 2*time.Second, 10*time.Second), "\n  "))
	}
	if err != nil {
		t.Fatalf("replaying crashers from %s: %v", dir, err)
	}
	t.Logf("replayed the %d datagrams of %s", len(crashers), dir)
}

// replayOne sends data on a new plain socket, in the initial namespace or
// in a new one.
func replayOne(s *sender, unit int, freshNetns bool, what string, data []byte) error {
	var sock *fsock
	var inum uint32
	open := func() (err error) {
		if inum, err = threadNetns(); err != nil {
			return err
		}
		sock, err = openPlainSock(unit)
		return err
	}
	var err error
	if freshNetns {
		err = inNewNetns(open)
	} else {
		err = open()
	}
	if err != nil {
		return err
	}
	defer unix.Close(sock.fd)
	if err := unix.SetsockoptInt(sock.fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1); err != nil {
		return err
	}
	return s.sendOne(sock, inum, what, data)
}
