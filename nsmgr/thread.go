package nsmgr

import (
	"errors"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Do runs fn inside the namespace and waits for it. fn runs on a fresh
// goroutine locked to an OS thread that Do switches into the namespace and
// back afterwards; the thread returns to the scheduler only once it is back,
// and is retired if the switch back fails. Do returns fn's error unchanged,
// or an *Error if entering or leaving the namespace failed. A panic in fn is
// re-raised in the caller after the thread is restored.
//
// Goroutines that fn starts run on other threads, in the process's
// namespace. Sockets fn creates stay in the namespace after Do returns.
func (ns *Namespace) Do(fn func() error) error {
	return onFreshThread(ns.ref.String(), func() error {
		ns.mu.RLock()
		defer ns.mu.RUnlock()
		if ns.fd < 0 {
			return &Error{Op: "enter", Namespace: ns.ref.String(), Err: os.ErrClosed}
		}
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			return &Error{Op: "enter", Namespace: ns.ref.String(), Err: os.NewSyscallError("setns", err)}
		}
		return nil
	}, fn)
}

// threadResult carries what happened on the fresh thread back to the
// caller.
type threadResult struct {
	err      error
	panicked bool
	panicVal any
}

// onFreshThread runs enter and then, if enter succeeded, fn on a new
// goroutine locked to its OS thread, and finally switches the thread back
// to the process's network namespace (processNetns). The thread is unlocked only after
// a successful switch back; otherwise it stays locked and the runtime
// retires it when the goroutine exits, so no other goroutine ever runs in
// the wrong namespace. This is the pattern of CNI's ns.Do, plus one rule:
// the process's main thread is never switched.
func onFreshThread(name string, enter, fn func() error) error {
	done := make(chan threadResult, 1)
	go runLocked(name, enter, fn, done)
	res := <-done
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

func runLocked(name string, enter, fn func() error, done chan<- threadResult) {
	runtime.LockOSThread()
	if unix.Gettid() == os.Getpid() {
		// Never switch the main thread: /proc/PID/ns/net reports its
		// namespace, and the runtime cannot retire it after a failed
		// restore (it parks it instead). Holding it locked while another
		// goroutine does the work keeps that goroutine off it.
		inner := make(chan threadResult, 1)
		go runLocked(name, enter, fn, inner)
		res := <-inner
		runtime.UnlockOSThread()
		done <- res
		return
	}
	orig, err := processNetns()
	if err != nil {
		runtime.UnlockOSThread() // nothing changed yet
		done <- threadResult{err: &Error{Op: "enter", Namespace: name, Err: os.NewSyscallError("open the process's namespace", err)}}
		return
	}
	var res threadResult
	returned := false
	defer func() {
		if !returned {
			// fn or enter panicked, or called runtime.Goexit.
			res.panicVal = recover()
			res.panicked = res.panicVal != nil
			if !res.panicked {
				res.err = errors.New("nsmgr: function called runtime.Goexit inside the namespace")
			}
		}
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			res.err = errors.Join(res.err, &Error{Op: "restore", Namespace: name, Err: os.NewSyscallError("setns", err)})
		} else {
			runtime.UnlockOSThread()
		}
		done <- res
	}()
	if res.err = enter(); res.err == nil {
		res.err = fn()
	}
	returned = true
}

// processNetns is the process's network namespace, opened once: the one
// every thread that runLocked switches goes back to. It is the main
// thread's, which is never switched, and every thread the runtime starts
// while none is switched, or from a template thread when the caller's is
// locked, takes it from its parent; so an unlocked thread is always in
// it. (Opening the thread's own namespace file at every switch was a
// third of what a switch cost.)
var processNetns = sync.OnceValues(func() (int, error) {
	return unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
})
