// Package docs runs the grpcurl commands of the documentation (docs/*.md)
// against a real nsbrokerd with the kernel module loaded, so that the
// examples cannot drift from what the daemon and released grpcurl accept.
//
// Every line of a ```sh block in docs/ that runs grpcurl (directly or
// through `ip netns exec NAME`) is a command; a backslash at the end of a
// line continues it. TestDocsGrpcurlCommands (on any host) checks their
// form; TestIntegrationDocsGrpcurl runs each, verbatim, through /bin/sh in
// the test VM (make vmtest), where the harness installs nsbrokerd and a
// pinned, released grpcurl (GRPCURL_VERSION in mk/vm.mk) in /usr/local/bin.
// The daemon listens on the documented admin socket,
// /run/nsbroker/nsbroker.sock, and the namespaces the examples name, red
// and blue, are created for the run; before each command the test puts
// them in the state the command needs (attached and ready, or detached for
// the attach examples). A command must exit 0; a streaming one (Subscribe,
// WatchNamespaces) must print a message and still be running when the test
// ends it.
package docs
