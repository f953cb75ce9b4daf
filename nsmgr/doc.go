// Package nsmgr finds, opens, identifies and watches Linux network
// namespaces for the broker daemon.
//
// A namespace is named by a [Ref]: a name under /run/netns (the iproute2
// convention), the path of any nsfs file (for example a bind mount of
// /proc/PID/ns/net, as container runtimes make), or a process id. [Open]
// checks that what it opened really is a network namespace and returns a
// [Namespace] holding an O_CLOEXEC file descriptor; holding it keeps the
// namespace alive, so the broker must close it once the namespace is gone.
// [Watcher] reports names appearing and disappearing, and [WatchPID]
// reports a process exiting.
//
// Code that must run inside a namespace uses [Namespace.Do], which runs a
// function on a fresh, locked OS thread and never lets a thread that is
// still in the wrong namespace run other goroutines. Sockets keep the
// namespace they were created in, so creating a socket is usually the only
// thing that needs Do.
//
// Do, Cookie, NewNamed and DeleteNamed need CAP_SYS_ADMIN (setns, unshare,
// mount); Open needs only permission to open the file, and WatchPID only
// permission to see the process.
package nsmgr
