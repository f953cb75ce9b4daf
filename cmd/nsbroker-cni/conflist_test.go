package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/nsbroker/nsbroker/attacher/attachertest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// exampleConflist is the example configuration shipped in deploy/.
const exampleConflist = "../../deploy/cni/10-nsbroker.conflist"

// standardPluginDirs are where distributions install the reference
// plugins (Debian's containernetworking-plugins: /usr/lib/cni).
var standardPluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

// The example chains the plugin after the standard bridge plugin: run it
// the way a runtime does, through libcni, with a namespace standing in
// for the host (the bridge and the masquerading rules go there).
func TestIntegrationConflistAfterBridge(t *testing.T) {
	testenv.RequireRoot(t)
	pluginDir := ""
	for _, dir := range standardPluginDirs {
		if _, err := os.Stat(filepath.Join(dir, "bridge")); err == nil {
			pluginDir = dir
			break
		}
	}
	if pluginDir == "" {
		t.Skipf("the standard CNI plugins are not installed in %q (Debian: apt-get install containernetworking-plugins)", standardPluginDirs)
	}
	d := attachertest.Start(t)
	list := loadExample(t, d.Socket)

	// The plugin's binary is this test binary, under the plugin's name.
	binDir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(binDir, "nsbroker-cni")); err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{binDir, pluginDir}, t.TempDir(), nil)

	hostName, _ := ipNetns(t)
	host, err := nsmgr.Open(nsmgr.Ref{Name: hostName})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	ctrName, ctrID := ipNetns(t)
	rt := &libcni.RuntimeConf{ContainerID: "ctr-bridge", NetNS: "/run/netns/" + ctrName, IfName: "eth0"}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	var res *current.Result
	err = host.Do(func() error {
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		t.Fatalf("ADD of the example network: %v", err)
	}
	// The result is the bridge plugin's, passed through.
	_, subnet, _ := net.ParseCIDR("10.88.0.0/16")
	if len(res.IPs) != 1 || !subnet.Contains(res.IPs[0].Address.IP) || res.IPs[0].Gateway.String() != "10.88.0.1" {
		t.Errorf("result IPs %v, want one address in %v with gateway 10.88.0.1", res.IPs, subnet)
	}
	if !slices.ContainsFunc(res.Interfaces, func(i *current.Interface) bool { return i.Name == "eth0" && i.Sandbox == rt.NetNS }) ||
		!slices.ContainsFunc(res.Interfaces, func(i *current.Interface) bool { return i.Name == "cni0" && i.Sandbox == "" }) {
		t.Errorf("result interfaces %v, want eth0 in %s and the bridge cni0", res.Interfaces, rt.NetNS)
	}
	ns := d.Get(t, "cni-ctr-bridge")
	if ns == nil || ns.GetInode() != ctrID.Ino {
		t.Fatalf("after ADD the daemon lists %q, want cni-ctr-bridge for net:[%d]", d.Names(t), ctrID.Ino)
	}

	if err := host.Do(func() error { return cni.CheckNetworkList(ctx, list, rt) }); err != nil {
		t.Errorf("CHECK of the example network: %v", err)
	}
	if err := host.Do(func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
		t.Errorf("DEL of the example network: %v", err)
	}
	if got := d.Names(t); len(got) != 0 {
		t.Errorf("after DEL the daemon lists %q, want nothing", got)
	}
}

// loadExample reads the example network configuration list, pointed at
// socket, with the address allocations kept in a temporary directory.
func loadExample(t *testing.T, socket string) *libcni.NetworkConfigList {
	t.Helper()
	data, err := os.ReadFile(exampleConflist)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []map[string]any `json:"plugins"`
	}
	var all map[string]any
	if err := json.Unmarshal(data, &conf); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &all); err != nil {
		t.Fatal(err)
	}
	types := []string{}
	for _, p := range conf.Plugins {
		types = append(types, p["type"].(string))
	}
	if want := []string{"bridge", "nsbroker-cni"}; !slices.Equal(types, want) {
		t.Fatalf("%s chains %q, want %q", exampleConflist, types, want)
	}
	conf.Plugins[0]["ipam"].(map[string]any)["dataDir"] = t.TempDir()
	if got := conf.Plugins[1]["socket"]; got != "/run/nsbroker/nsbroker.sock" {
		t.Errorf("%s: socket %v, want the daemon's default /run/nsbroker/nsbroker.sock", exampleConflist, got)
	}
	conf.Plugins[1]["socket"] = socket
	all["plugins"] = conf.Plugins
	edited, err := json.Marshal(all)
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(edited)
	if err != nil {
		t.Fatalf("%s: %v", exampleConflist, err)
	}
	return list
}
