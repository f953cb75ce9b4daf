// Package daemon is nsbrokerd: it reads the configuration (defaults, then
// an optional YAML file, then command-line flags), starts a broker.Broker
// and serves the nsbroker gRPC API on every listener through one
// grpc.Server — the admin unix socket, an abstract unix socket inside each
// attached network namespace for that namespace's tenant, and an optional
// TCP listener with mutual TLS for remote tenants — together with gRPC
// health, server reflection and Prometheus metrics.
//
// Main is the whole program behind a tiny main package; Run is the daemon
// for a Config built in code (tests, embedding). docs/operations.md
// describes every flag, configuration key, listener, metric and signal.
package daemon
