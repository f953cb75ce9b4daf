package daemon

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"gopkg.in/yaml.v3"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/nsmgr"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// configOnly compares the settings, not the hooks.
var configOnly = cmp.Options{cmpopts.IgnoreUnexported(Config{}), cmpopts.EquateEmpty()}

func TestParseArgsPrecedence(t *testing.T) {
	file := writeFile(t, "nsbrokerd.yaml", `
admin_socket: /run/from-file.sock
log_level: debug
shutdown_timeout: 3s
max_streams: 170
publish_rate: 2.5
attach: [red, "pid:1"]
discover: true
tenants:
  - name: acme
    namespaces: [red]
`)
	cfg, _, err := parseArgs([]string{"--config", file, "--log-level", "warn", "--attach", "blue", "--attach", "path:/x",
		"--discover=false", "--max-concurrent-streams", "9"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.ConfigFile = file
	// From the file, untouched by flags.
	want.AdminSocket = "/run/from-file.sock"
	want.ShutdownTimeout = 3 * time.Second
	want.MaxStreams = 170
	want.PublishRate = 2.5
	want.Tenants = []Tenant{{Name: "acme", Namespaces: []string{"red"}}}
	// From the flags, over the file: a repeated flag replaces the list.
	want.LogLevel = "warn"
	want.Attach = []string{"blue", "path:/x"}
	want.Discover = false
	// From the flags over the defaults.
	want.MaxConcurrentStreams = 9
	if diff := cmp.Diff(want, cfg, configOnly); diff != "" {
		t.Errorf("configuration (-want +got):\n%s", diff)
	}
}

func TestParseArgsDefaults(t *testing.T) {
	cfg, _, err := parseArgs(nil, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Defaults(), cfg, configOnly); diff != "" {
		t.Errorf("configuration without flags (-want +got):\n%s", diff)
	}
	if err := Defaults().Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
}

func TestParseArgsLocalSocket(t *testing.T) {
	file := writeFile(t, "c.yaml", "local_socket: '@from-file'\n")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "@nsbroker"},
		{[]string{"--config", file}, "@from-file"},
		{[]string{"--config", file, "--local-socket", "@flag"}, "@flag"},
		{[]string{"--config", file, "--no-local-socket"}, ""},
		{[]string{"--local-socket", ""}, ""},
	} {
		cfg, _, err := parseArgs(tc.args, os.Stderr)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if cfg.LocalSocket != tc.want {
			t.Errorf("%q: local socket: want %q, got %q", tc.args, tc.want, cfg.LocalSocket)
		}
	}
}

// TestParseArgsErrors checks that bad files, keys, values and flags are
// refused with a message naming the problem.
func TestParseArgsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		args       []string
		want       string
	}{
		{name: "unknown key", file: "admin_sock: /x\n", want: "field admin_sock not found"},
		{name: "unknown tenant key", file: "tenants: [{name: a, namespace: [x]}]\n", want: "field namespace not found"},
		{name: "wrong type", file: "max_streams: many\n", want: "cannot unmarshal"},
		{name: "duration without unit", file: "shutdown_timeout: 10\n", want: "cannot unmarshal"},
		{name: "two documents", file: "discover: true\n---\ndiscover: false\n", want: "more than one YAML document"},
		{name: "not a mapping", file: "- a\n", want: "cannot unmarshal"},
		{name: "relative admin socket", file: "admin_socket: run/x.sock\n", want: "admin_socket: \"run/x.sock\" is not an absolute path"},
		{name: "filesystem local socket", file: "local_socket: /run/x\n", want: "not an abstract socket name"},
		{name: "tcp without tls", file: "tcp_listen: ':7000'\n", want: "tcp_listen needs tls_cert, tls_key and tls_client_ca"},
		{name: "tls without tcp", file: "tls_cert: /c.pem\n", want: "need tcp_listen"},
		{name: "tenant without namespaces", file: "tenants: [{name: a}]\n", want: `"a" has no namespaces`},
		{name: "tenant twice", file: "tenants: [{name: a, namespaces: [x]}, {name: a, namespaces: [y]}]\n", want: `"a" listed twice`},
		{name: "common name twice", file: "tenants: [{name: a, namespaces: [x]}, {name: b, common_name: a, namespaces: [y]}]\n", want: `same common_name "a"`},
		{name: "tenant namespace too long", file: "tenants: [{name: a, namespaces: [" + strings.Repeat("n", broker.MaxNameLen+1) + "]}]\n", want: "longer than 255 bytes"},
		{name: "uri twice", file: "tenants: [{name: a, uri: 'spiffe://x/t', namespaces: [x]}, {name: b, uri: 'spiffe://x/t', namespaces: [y]}]\n", want: `"a" and "b" have the same uri "spiffe://x/t"`},
		{name: "uri and common name", file: "tenants: [{name: a, uri: 'spiffe://x/a', common_name: a, namespaces: [x]}]\n", want: `"a" has both uri and common_name`},
		{name: "relative uri", file: "tenants: [{name: a, uri: /tenant/a, namespaces: [x]}]\n", want: `uri: "/tenant/a" is not an absolute URI`},
		{name: "uri not canonical", file: "tenants: [{name: a, uri: 'SPIFFE://x/a', namespaces: [x]}]\n", want: `write it as "spiffe://x/a"`},
		{name: "bad attach", file: "attach: ['pid:x']\n", want: "pid is not a number"},
		{name: "attach name too long", file: "attach: ['" + strings.Repeat("n", nsmgr.NameMax+1) + "']\n", want: "longer than 255 bytes"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, want: `log_level: "loud"`},
		{name: "bad log format", args: []string{"--log-format", "xml"}, want: `log_format: "xml"`},
		{name: "zero limit", args: []string{"--max-msg-size", "0"}, want: "max_msg_size: must be positive"},
		{name: "negative rate", args: []string{"--publish-rate", "-1"}, want: "publish_rate: must not be negative"},
		{name: "bad unit", args: []string{"--unit", "5"}, want: "unit: 5 is outside 23..31"},
		{name: "admin group without socket", args: []string{"--admin-socket", "", "--admin-group", "adm"}, want: "admin_group is set but admin_socket is off"},
		{name: "both local flags", args: []string{"--local-socket", "@x", "--no-local-socket"}, want: "exclude each other"},
		{name: "unknown flag", args: []string{"--frobnicate"}, want: "flag provided but not defined: -frobnicate"},
		{name: "stray argument", args: []string{"serve"}, want: `unexpected argument "serve"`},
		{name: "missing file", args: []string{"--config", "/nonexistent/nsbrokerd.yaml"}, want: "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", writeFile(t, "c.yaml", tc.file)}, args...)
			}
			_, _, err := parseArgs(args, new(bytes.Buffer))
			if err == nil {
				t.Fatalf("want an error containing %q, got none", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error containing %q, got %q", tc.want, err)
			}
		})
	}
}

// TestMainExitCodes checks Main's contract with its caller.
func TestMainExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{args: []string{"-h"}, code: exitOK, wantStderr: "Usage: nsbrokerd"},
		{args: []string{"--bogus"}, code: exitUsage, wantStderr: "flag provided but not defined"},
		{args: []string{"--log-format", "xml"}, code: exitUsage, wantStderr: `nsbrokerd: log_format: "xml" is neither text nor json`},
		{args: []string{"--print-config", "--attach", "red"}, code: exitOK, wantStdout: "attach:\n    - red\n"},
	} {
		var stdout, stderr bytes.Buffer
		code := mainWith(context.Background(), tc.args, nil, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("%q: exit code: want %d, got %d (stderr %q)", tc.args, tc.code, code, stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.wantStdout) {
			t.Errorf("%q: stdout: want it to contain %q, got %q", tc.args, tc.wantStdout, stdout.String())
		}
		if !strings.Contains(stderr.String(), tc.wantStderr) {
			t.Errorf("%q: stderr: want it to contain %q, got %q", tc.args, tc.wantStderr, stderr.String())
		}
	}
}

// TestPrintConfigRoundTrip checks that --print-config prints a file the
// daemon reads back strictly as the same configuration.
func TestPrintConfigRoundTrip(t *testing.T) {
	args := []string{"--print-config", "--attach", "red", "--discover-dir", "/a", "--discover-dir", "/b",
		"--shutdown-timeout", "1m30s", "--publish-rate", "0.5", "--no-local-socket"}
	var stdout bytes.Buffer
	if code := mainWith(context.Background(), args, nil, &stdout, os.Stderr); code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	want, _, err := parseArgs(args[1:], os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	got := Defaults()
	if err := decodeYAML(stdout.Bytes(), got); err != nil {
		t.Fatalf("printed configuration does not read back: %v\n%s", err, stdout.String())
	}
	if diff := cmp.Diff(want, got, configOnly); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
}

// TestYAMLKeysAndFlags checks that every file key but tenants has a flag
// of the same name and every flag but the command-line-only ones a key.
func TestYAMLKeysAndFlags(t *testing.T) {
	out, err := yaml.Marshal(Defaults())
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(out, &keys); err != nil {
		t.Fatal(err)
	}
	var opts options
	fs := newFlagSet(Defaults(), &opts, new(bytes.Buffer))
	for key := range keys {
		if key == "tenants" {
			continue
		}
		if fs.Lookup(strings.ReplaceAll(key, "_", "-")) == nil {
			t.Errorf("key %s has no flag --%s", key, strings.ReplaceAll(key, "_", "-"))
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		switch f.Name {
		case flagConfig, flagNoLocalSocket, flagPrintConfig, flagPrintMemory:
			return
		}
		if _, ok := keys[strings.ReplaceAll(f.Name, "-", "_")]; !ok {
			t.Errorf("flag --%s has no key %s", f.Name, strings.ReplaceAll(f.Name, "-", "_"))
		}
	})
}
