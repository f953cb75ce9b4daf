package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// reload re-reads the tenants from the configuration file, and the TLS
// certificate, key and client CA bundle (from the files named at start),
// and applies them together or not at all. When the tenants or the client
// CAs changed, the TCP connections made before are cut: a connection's
// rights are fixed at its handshake, and its client reconnects under the
// new map and CAs. Other settings of the file take effect at the next
// start.
func (d *daemon) reload() {
	if err := d.tryReload(); err != nil {
		d.m.reloads.WithLabelValues("error").Inc()
		d.log.Error("reload failed; keeping the current tenants and TLS files", "err", err)
	}
}

func (d *daemon) tryReload() error {
	path := d.cfg.ConfigFile
	if path == "" {
		return fmt.Errorf("no configuration file to reload (start with --config)")
	}
	fresh := Defaults()
	if err := loadFile(path, fresh); err != nil {
		return err
	}
	if err := validateTenants(fresh.Tenants); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var cert *tls.Certificate
	var cas *x509.CertPool
	if d.tls != nil {
		var err error
		if cert, err = d.tls.loadCert(); err != nil {
			return err
		}
		if cas, err = d.tls.loadClientCAs(); err != nil {
			return err
		}
	}

	table := newTenantTable(fresh.Tenants)
	changed := !d.tenants.cur.Load().equal(table)
	d.tenants.cur.Store(table)
	casChanged := false
	if d.tls != nil {
		d.tls.cert.Store(cert)
		casChanged = !d.tls.clientCAs().Equal(cas)
		d.tls.setClientCAs(cas)
	}
	cut := 0
	if changed || casChanged {
		cut = d.tcp.cut()
	}
	d.m.reloads.WithLabelValues("ok").Inc()
	d.log.Info("reloaded", "file", path, "tenants", len(fresh.Tenants), "changed", changed,
		"certificate", cert != nil, "client_ca_changed", casChanged, "tcp_connections_cut", cut)
	return nil
}
