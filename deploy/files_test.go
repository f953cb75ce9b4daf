package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/nsbroker/nsbroker/attacher"
)

// The files under test.
const (
	unitFile      = "systemd/nsbrokerd.service"
	daemonSetFile = "kubernetes/nsbroker-daemonset.yaml"
	conflistFile  = "cni/10-nsbroker.conflist"
)

// unit is a systemd unit file: the values of each key of each section,
// in order.
type unit map[string][]string

// parseUnit reads a unit file; keys are "Section.Key".
func parseUnit(t *testing.T, file string) unit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not a key=value line: %q", file, line)
			}
			k = section + "." + k
			u[k] = append(u[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// one returns the only value of key.
func (u unit) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s: %s set %d times, want once", unitFile, key, len(u[key]))
	}
	return u[key][0]
}

// capabilities are the unit's bounding set.
func (u unit) capabilities(t *testing.T) []string {
	t.Helper()
	caps := strings.Fields(u.one(t, "Service.CapabilityBoundingSet"))
	slices.Sort(caps)
	return caps
}

// Every file points the runtimes and the daemon at the same admin socket,
// the one the clients use by default.
func TestSameAdminSocket(t *testing.T) {
	flag := "--admin-socket=" + attacher.DefaultSocket

	u := parseUnit(t, unitFile)
	exec := strings.Fields(u.one(t, "Service.ExecStart"))
	if exec[0] != "/usr/local/bin/nsbrokerd" || !slices.Contains(exec, flag) {
		t.Errorf("%s: ExecStart %q, want /usr/local/bin/nsbrokerd with %s", unitFile, exec, flag)
	}
	// systemd makes (and removes) the socket's directory.
	if dir := "/run/" + u.one(t, "Service.RuntimeDirectory"); dir != path.Dir(attacher.DefaultSocket) {
		t.Errorf("%s: RuntimeDirectory is %s, want the socket's directory %s", unitFile, dir, path.Dir(attacher.DefaultSocket))
	}

	ds := loadDaemonSet(t)
	if args := ds.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, flag) {
		t.Errorf("%s: nsbrokerd args %q, want %s", daemonSetFile, args, flag)
	}

	data, err := os.ReadFile(conflistFile)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Plugins []struct {
			Type   string `json:"type"`
			Socket string `json:"socket"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("%s: %v", conflistFile, err)
	}
	last := list.Plugins[len(list.Plugins)-1]
	if last.Type != "nsbroker-cni" || last.Socket != attacher.DefaultSocket {
		t.Errorf("%s: last plugin %q with socket %q, want nsbroker-cni with %s", conflistFile, last.Type, last.Socket, attacher.DefaultSocket)
	}
}

func TestUnitService(t *testing.T) {
	u := parseUnit(t, unitFile)
	for key, want := range map[string]string{
		"Service.Type":               "notify", // the daemon sends READY=1
		"Service.Restart":            "on-failure",
		"Service.NoNewPrivileges":    "yes",
		"Service.RestrictNamespaces": "net", // setns into network namespaces only
		"Service.ProtectSystem":      "strict",
		"Install.WantedBy":           "multi-user.target",
	} {
		if got := u.one(t, key); got != want {
			t.Errorf("%s: %s=%s, want %s", unitFile, key, got, want)
		}
	}
	want := []string{"CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}
	if got := u.capabilities(t); !slices.Equal(got, want) {
		t.Errorf("%s: CapabilityBoundingSet %q, want %q", unitFile, got, want)
	}
}
