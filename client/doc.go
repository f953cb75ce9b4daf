// Package client is the Go client of nsbrokerd.
//
// New connects to one of the daemon's listeners, named by an Endpoint:
//
//   - Admin: the admin unix socket (root), every rpc, every namespace;
//   - Local: the abstract socket (default "@nsbroker") the daemon opens in
//     each attached namespace, dialled from the caller's own namespace, or
//     with LocalIn from inside a namespace the caller holds a handle to;
//   - Socket: a filesystem unix socket, such as a per-namespace socket
//     bind-mounted into a container;
//   - TLS: the TCP listener, with a client certificate (LoadTLS).
//
// Every rpc of Broker returns errors as *Error, which keeps the gRPC status
// (status.Code works) and matches the sentinel errors with errors.Is:
// ErrNotFound, ErrPermissionDenied, ErrResourceExhausted and so on. A
// daemon that cannot be reached is a *ConnectError, which matches
// ErrUnavailable, and ErrDaemonDown when nothing listens at all.
//
// Subscribe returns a Subscription that reconnects by itself, with a
// bounded backoff, when the stream or the connection breaks, and
// remembers per group where it was (a ResumePoint). Losses are never
// silent: besides the gaps the daemon reports, the Subscription reports a
// Gap for every sequence number it can tell it missed while it was away.
package client
