package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// Validate reports the first setting that is invalid or inconsistent.
func (c *Config) Validate() error {
	if err := c.validateListeners(); err != nil {
		return err
	}
	if err := validateTenants(c.Tenants); err != nil {
		return err
	}
	for _, a := range c.Attach {
		if _, err := nsmgr.ParseRef(a); err != nil {
			return fmt.Errorf("attach: %w", err)
		}
	}
	if c.Discover && len(c.DiscoverDirs) == 0 {
		return errors.New("discover: no discover_dir")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log_format: %q is neither text nor json", c.LogFormat)
	}
	return c.validateLimits()
}

// unixPathMax is the room for a unix socket name (sun_path, with its NUL).
const unixPathMax = 108

func (c *Config) validateListeners() error {
	if c.AdminSocket != "" {
		if !filepath.IsAbs(c.AdminSocket) {
			return fmt.Errorf("admin_socket: %q is not an absolute path", c.AdminSocket)
		}
		if len(c.AdminSocket) >= unixPathMax {
			return fmt.Errorf("admin_socket: %q is longer than %d bytes", c.AdminSocket, unixPathMax-1)
		}
	} else if c.AdminGroup != "" {
		return errors.New("admin_group is set but admin_socket is off")
	}
	if c.LocalSocket != "" {
		if len(c.LocalSocket) < 2 || c.LocalSocket[0] != '@' {
			return fmt.Errorf("local_socket: %q is not an abstract socket name (@name)", c.LocalSocket)
		}
		if len(c.LocalSocket) >= unixPathMax {
			return fmt.Errorf("local_socket: %q is longer than %d bytes", c.LocalSocket, unixPathMax-1)
		}
	}
	if p := c.runPath(c.HandoverSocket); len(p) >= unixPathMax {
		return fmt.Errorf("handover_socket: %q is longer than %d bytes", p, unixPathMax-1)
	}
	tls := c.TLSCert != "" || c.TLSKey != "" || c.TLSClientCA != ""
	switch {
	case c.TCPListen != "" && (c.TLSCert == "" || c.TLSKey == "" || c.TLSClientCA == ""):
		return errors.New("tcp_listen needs tls_cert, tls_key and tls_client_ca")
	case c.TCPListen == "" && tls:
		return errors.New("tls_cert, tls_key and tls_client_ca need tcp_listen")
	}
	return nil
}

func validateTenants(tenants []Tenant) error {
	names := make(map[string]bool)
	cns := make(map[string]string)
	uris := make(map[string]string)
	for i, t := range tenants {
		if t.Name == "" {
			return fmt.Errorf("tenants[%d]: no name", i)
		}
		if names[t.Name] {
			return fmt.Errorf("tenants: %q listed twice", t.Name)
		}
		names[t.Name] = true
		if t.URI != "" {
			if t.CommonName != "" {
				return fmt.Errorf("tenants: %q has both uri and common_name; a tenant is named by one", t.Name)
			}
			if err := validateTenantURI(t.URI); err != nil {
				return fmt.Errorf("tenants: %q: uri: %w", t.Name, err)
			}
			if other, ok := uris[t.URI]; ok {
				return fmt.Errorf("tenants: %q and %q have the same uri %q", other, t.Name, t.URI)
			}
			uris[t.URI] = t.Name
		} else {
			cn := t.commonName()
			if other, ok := cns[cn]; ok {
				return fmt.Errorf("tenants: %q and %q have the same common_name %q", other, t.Name, cn)
			}
			cns[cn] = t.Name
		}
		if len(t.Namespaces) == 0 {
			return fmt.Errorf("tenants: %q has no namespaces", t.Name)
		}
		for _, ns := range t.Namespaces {
			if ns == "" {
				return fmt.Errorf("tenants: %q lists an empty namespace name", t.Name)
			}
			if err := broker.CheckName(ns); err != nil {
				return fmt.Errorf("tenants: %q: %w", t.Name, err)
			}
		}
	}
	return nil
}

// commonName is the certificate common name that names t; "" for a
// tenant named by its URI.
func (t Tenant) commonName() string {
	switch {
	case t.URI != "":
		return ""
	case t.CommonName != "":
		return t.CommonName
	}
	return t.Name
}

// validateTenantURI checks that uri is an absolute URI written the way
// the daemon writes a certificate's SAN URI, which it compares byte for
// byte.
func validateTenantURI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil {
		return err
	}
	if !u.IsAbs() {
		return fmt.Errorf("%q is not an absolute URI (scheme:...)", uri)
	}
	if canon := u.String(); canon != uri {
		return fmt.Errorf("%q is not in canonical form; write it as %q", uri, canon)
	}
	return nil
}

func (c *Config) validateLimits() error {
	positive := []struct {
		key string
		v   int64
	}{
		{"shutdown_timeout", int64(c.ShutdownTimeout)},
		{"max_msg_size", int64(c.MaxMsgSize)},
		{"max_concurrent_streams", int64(c.MaxConcurrentStreams)},
		{"max_connections", int64(c.MaxConnections)},
		{"max_connections_per_tenant", int64(c.MaxConnectionsPerTenant)},
		{"admin_connections", int64(c.AdminConnections)},
		{"max_requests", int64(c.MaxRequests)},
		{"max_requests_per_tenant", int64(c.MaxRequestsPerTenant)},
		{"admin_requests", int64(c.AdminRequests)},
		{"max_streams", int64(c.MaxStreams)},
		{"max_streams_per_tenant", int64(c.MaxStreamsPerTenant)},
		{"admin_streams", int64(c.AdminStreams)},
		{"max_queued_bytes", c.MaxQueuedBytes},
		{"max_queued_bytes_per_tenant", c.MaxQueuedBytesPerTenant},
		{"admin_queued_bytes", c.AdminQueuedBytes},
		{"max_pending_handshakes", int64(c.MaxPendingHandshakes)},
		{"max_pending_handshakes_per_addr", int64(c.MaxPendingHandshakesAddr)},
		{"max_connection_age", int64(c.MaxConnectionAge)},
		{"keepalive_min_time", int64(c.KeepaliveMinTime)},
		{"keepalive_time", int64(c.KeepaliveTime)},
		{"keepalive_timeout", int64(c.KeepaliveTimeout)},
		{"queue_len", int64(c.QueueLen)},
		{"queue_bytes", int64(c.QueueBytes)},
		{"read_buffer", int64(c.ReadBuffer)},
		{"retry_interval", int64(c.RetryInterval)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%s: must be positive", p.key)
		}
	}
	for _, p := range []struct {
		key string
		v   int64
	}{
		{"retain_events", int64(c.RetainEvents)},
		{"retain_bytes", int64(c.RetainBytes)},
		{"retain_total_bytes", c.RetainTotalBytes},
	} {
		if p.v < 0 {
			return fmt.Errorf("%s: must not be negative", p.key)
		}
	}
	if c.PublishRate < 0 {
		return errors.New("publish_rate: must not be negative")
	}
	if c.PublishBurst < 0 {
		return errors.New("publish_burst: must not be negative")
	}
	if c.RequestRate < 0 {
		return errors.New("request_rate: must not be negative")
	}
	if c.RequestBurst < 0 {
		return errors.New("request_burst: must not be negative")
	}
	if err := c.limits().Validate(); err != nil {
		return err
	}
	if c.Unit != 0 && (c.Unit < 23 || c.Unit > 31) {
		return fmt.Errorf("unit: %d is outside 23..31 (0 reads it from sysfs)", c.Unit)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	switch s {
	case "debug", "info", "warn", "error":
		return l, l.UnmarshalText([]byte(s))
	}
	return l, fmt.Errorf("log_level: %q is not debug, info, warn or error", s)
}
