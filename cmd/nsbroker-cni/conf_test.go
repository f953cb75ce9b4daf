package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/nsbroker/nsbroker/attacher"
)

func TestParseConf(t *testing.T) {
	conf, err := parseConf([]byte(`{"cniVersion": "1.0.0", "name": "n", "type": "nsbroker-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Socket != attacher.DefaultSocket || conf.NamePrefix != "cni-" || conf.timeout != 10*time.Second || conf.prevResult != nil {
		t.Errorf("defaults: got socket %q prefix %q timeout %v prevResult %s; want %q %q 10s none",
			conf.Socket, conf.NamePrefix, conf.timeout, conf.prevResult, attacher.DefaultSocket, "cni-")
	}
	conf, err = parseConf([]byte(`{"cniVersion": "1.0.0", "name": "n", "type": "nsbroker-cni",
		"socket": "/x.sock", "namePrefix": "", "timeout": "1.5s", "prevResult": {"cniVersion": "1.0.0"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Socket != "/x.sock" || conf.NamePrefix != "" || conf.timeout != 1500*time.Millisecond ||
		string(conf.prevResult) != `{"cniVersion": "1.0.0"}` {
		t.Errorf("set: got socket %q prefix %q timeout %v prevResult %s; want /x.sock \"\" 1.5s {\"cniVersion\": \"1.0.0\"}",
			conf.Socket, conf.NamePrefix, conf.timeout, conf.prevResult)
	}
	if got := conf.attachName("f00d"); got != "f00d" {
		t.Errorf("attachName with an empty prefix = %q, want f00d", got)
	}
}

func TestParseConfErrors(t *testing.T) {
	for _, tc := range []struct {
		conf string
		code uint
		msg  string
	}{
		{`{"cniVersion": "1.0.0", "name": `, types.ErrDecodingFailure, "cannot decode the network configuration"},
		{`{"cniVersion": "1.0.0", "name": "n", "socket": 7}`, types.ErrDecodingFailure, "cannot decode the network configuration"},
		{`{"cniVersion": "1.0.0", "name": "n", "prevResult": {"ips": 3}}`, types.ErrDecodingFailure, "invalid prevResult"},
		{`{"cniVersion": "1.0.0", "name": "n", "socket": ""}`, types.ErrInvalidNetworkConfig, `"socket" is empty`},
		{`{"cniVersion": "1.0.0", "name": "n", "timeout": "soon"}`, types.ErrInvalidNetworkConfig, `"timeout" "soon" is not a positive duration`},
		{`{"cniVersion": "1.0.0", "name": "n", "timeout": "-1s"}`, types.ErrInvalidNetworkConfig, `"timeout" "-1s" is not a positive duration`},
	} {
		_, err := parseConf([]byte(tc.conf))
		var cerr *types.Error
		if !errors.As(err, &cerr) || cerr.Code != tc.code || !strings.Contains(cerr.Msg, tc.msg) {
			t.Errorf("parseConf(%s):\ngot  %#v\nwant code %d with %q", tc.conf, err, tc.code, tc.msg)
		}
	}
}

// Without a previous result ADD prints an empty result of the
// configuration's version, as the runtime expects.
func TestWriteResultWithoutPrevResult(t *testing.T) {
	for _, v := range supportedVersions.SupportedVersions() {
		conf, err := parseConf([]byte(`{"cniVersion": "` + v + `", "name": "n"}`))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := writeResult(conf, &out); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		var res map[string]any
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatalf("%s: output %q: %v", v, out.String(), err)
		}
		if res["cniVersion"] != v || res["ips"] != nil || res["interfaces"] != nil {
			t.Errorf("result for %s: got %s, want an empty result of version %s", v, out.String(), v)
		}
	}
}

func TestNetnsRef(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "run", "netns")
	if err := os.MkdirAll(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "run"), filepath.Join(dir, "varrun")); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{filepath.Join(dir, "varrun", "netns", "cni-1"), filepath.Join(real, "cni-1")},
		{"/proc/123/ns/net", "/proc/123/ns/net"},
		{"relative/ns", filepath.Join(wd, "relative", "ns")},
	} {
		if got := netnsRef(tc.in).Path; got != tc.want {
			t.Errorf("netnsRef(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestInstall(t *testing.T) {
	dest := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := install([]string{"--dest", dest}, &stdout, &stderr); code != 0 {
		t.Fatalf("install = %d, want 0; stderr: %s", code, stderr.String())
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dest, "nsbroker-cni")
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("installed %d bytes, want a copy of the running binary (%d bytes)", len(got), len(want))
	}
	if fi, err := os.Stat(target); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("installed file mode: %v (%v), want 0755", fi.Mode(), err)
	}
	if stdout.String() != "installed "+target+"\n" {
		t.Errorf("stdout %q, want %q", stdout.String(), "installed "+target+"\n")
	}
	entries, err := os.ReadDir(dest)
	if err != nil || len(entries) != 1 {
		t.Errorf("files in the bin dir after install: %v (%v), want only nsbroker-cni", entries, err)
	}

	for _, args := range [][]string{{"--dest", dest, "extra"}, {"--name", "a/b"}, {"--bogus"}} {
		stderr.Reset()
		if code := install(args, &stdout, &stderr); code != 2 {
			t.Errorf("install %q = %d, want 2 (usage)", args, code)
		}
	}
	stderr.Reset()
	if code := install([]string{"--dest", filepath.Join(dest, "missing")}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "nsbroker-cni: install: ") {
		t.Errorf("install into a missing dir = %d, stderr %q; want 1 and the reason", code, stderr.String())
	}
}
