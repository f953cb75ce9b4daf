package deploy

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nsbroker/nsbroker/attacher"
	"github.com/nsbroker/nsbroker/attacher/attachertest"
	"github.com/nsbroker/nsbroker/ctl"
	"github.com/nsbroker/nsbroker/internal/testenv"
)

// The DaemonSet's probe commands, run against a daemon: they pass while it
// serves and fail once it has stopped.
func TestIntegrationProbes(t *testing.T) {
	testenv.RequireRoot(t)
	ds := loadDaemonSet(t)
	d := attachertest.Start(t)
	c := ds.Spec.Template.Spec.Containers[0]
	probes := map[string][]string{"liveness": c.LivenessProbe.Exec.Command, "readiness": c.ReadinessProbe.Exec.Command}
	run := func(cmd []string) (int, string) {
		args := make([]string, 0, len(cmd)-1)
		for _, a := range cmd[1:] { // cmd[0] is nsbrokerctl
			args = append(args, strings.Replace(a, attacher.DefaultSocket, d.Socket, 1))
		}
		var stdout, stderr bytes.Buffer
		code := ctl.Run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	for name, cmd := range probes {
		if code, out := run(cmd); code != 0 {
			t.Errorf("%s probe %q with the daemon serving: exit %d: %s", name, cmd, code, out)
		}
	}
	d.Stop(t)
	for name, cmd := range probes {
		if code, out := run(cmd); code == 0 {
			t.Errorf("%s probe %q with the daemon stopped: exit 0 (%s), want a failure", name, cmd, out)
		}
	}
}
