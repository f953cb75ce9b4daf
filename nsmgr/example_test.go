package nsmgr_test

import (
	"context"
	"fmt"
	"log"

	"github.com/nsbroker/nsbroker/nsmgr"
	"golang.org/x/sys/unix"
)

func ExampleParseRef() {
	for _, s := range []string{"blue", "path:/var/run/docker/netns/1a2b", "pid:4242"} {
		ref, err := nsmgr.ParseRef(s)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("Name=%q Path=%q PID=%d\n", ref.Name, ref.Path, ref.PID)
	}
	// Output:
	// Name="blue" Path="" PID=0
	// Name="" Path="/var/run/docker/netns/1a2b" PID=0
	// Name="" Path="" PID=4242
}

// A socket created inside Do stays in the namespace after Do returns.
func ExampleNamespace_Do() {
	ns, err := nsmgr.Open(nsmgr.Ref{Name: "blue"})
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	var sock int
	err = ns.Do(func() error {
		var err error
		sock, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	defer unix.Close(sock)
	fmt.Printf("socket %d lives in %s (net:[%d])\n", sock, ns.Ref(), ns.Inode())
}

// Attaching a namespace by pid: watch the process first so that a reused
// pid cannot slip in between.
func ExampleWatchPID() {
	ctx := context.Background()
	pid := 4242
	exited, err := nsmgr.WatchPID(ctx, pid)
	if err != nil {
		log.Fatal(err)
	}
	ns, err := nsmgr.Open(nsmgr.Ref{PID: pid})
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-exited:
		ns.Close()
		log.Fatalf("process %d exited while its namespace was being opened", pid)
	default:
	}
	<-exited
	ns.Close() // release the namespace once its process is gone
}

func ExampleWatcher() {
	w, err := nsmgr.NewWatcher() // /run/netns and /var/run/docker/netns
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	for ev := range w.Events() {
		switch ev.Op {
		case nsmgr.Added:
			fmt.Println("attach", ev.Ref)
		case nsmgr.Removed:
			fmt.Println("detach", ev.Ref)
		case nsmgr.Failed:
			fmt.Println("watch problem:", ev.Err)
		}
	}
}
