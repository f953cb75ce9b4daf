// Package ctl is nsbrokerctl, the command-line client of nsbrokerd.
//
// It talks to the daemon's admin socket (a filesystem unix socket) or, with
// --local, to the abstract socket the daemon opens inside the caller's own
// network namespace, where the caller is that namespace's tenant. Every
// command maps to one rpc of nsbroker.v1.Broker; --json prints what the
// daemon answered as JSON (one object per line for streams).
//
// Exit status: 0 success, 1 an rpc failed (the message names the gRPC code
// and the daemon's text), 2 a usage error, 3 the daemon could not be reached.
package ctl
