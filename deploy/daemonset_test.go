package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	"github.com/nsbroker/nsbroker/attacher"
	"github.com/nsbroker/nsbroker/daemon"
)

// decodeStrict decodes a manifest as the API server does with
// fieldValidation=Strict: a field the types lack (names are case
// sensitive) or a key given twice is an error.
func decodeStrict(data []byte) (runtime.Object, error) {
	scheme := runtime.NewScheme()
	if err := appsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	obj, _, err := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer().Decode(data, nil, nil)
	return obj, err
}

// loadDaemonSet decodes the manifest strictly, and checks that it is one
// YAML document holding an apps/v1 DaemonSet.
func loadDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	data, err := os.ReadFile(daemonSetFile)
	if err != nil {
		t.Fatal(err)
	}
	docs := 0
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", daemonSetFile, err)
		}
		docs++
	}
	if docs != 1 {
		t.Fatalf("%s: %d YAML documents, want 1", daemonSetFile, docs)
	}
	obj, err := decodeStrict(data)
	if err != nil {
		t.Fatalf("%s: %v", daemonSetFile, err)
	}
	ds, ok := obj.(*appsv1.DaemonSet)
	if !ok {
		t.Fatalf("%s: a %T, want an apps/v1 DaemonSet", daemonSetFile, obj)
	}
	return ds
}

// The strict decoding catches what the API would drop silently.
func TestStrictDecoding(t *testing.T) {
	const head = "apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n"
	for _, tc := range []struct{ yaml, want string }{
		{head + "      hostPid: true\n", `unknown field "spec.template.spec.hostPid"`},
		{head + "      hostPID: true\n      hostPID: false\n", `"hostPID" already set in map`},
	} {
		_, err := decodeStrict([]byte(tc.yaml))
		if err == nil || !runtime.IsStrictDecodingError(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decoding\n%s\ngot %v, want a strict decoding error with %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := decodeStrict([]byte("apiVersion: v1\nkind: Pod\n")); err == nil || !strings.Contains(err.Error(), `no kind "Pod" is registered`) {
		t.Errorf("decoding a Pod with only apps/v1 known: got %v, want an unregistered kind error", err)
	}
}

func TestDaemonSet(t *testing.T) {
	ds := loadDaemonSet(t)
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v (%v) does not select the pod labels %v", ds.Spec.Selector, err, ds.Spec.Template.Labels)
	}
	// A rolling update starts the new pod first and hands the sockets
	// over; the old pod stops only once the new one is available.
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxSurge == nil || u.RollingUpdate.MaxSurge.String() != "1" ||
		u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.String() != "0" {
		t.Errorf("update strategy %+v, want RollingUpdate with maxSurge 1 and maxUnavailable 0 (the handover)", u)
	}
	// The kubelet restarts an exited container: a daemon that has handed
	// over must wait to be stopped, not exit and take the sockets back.
	if c := ds.Spec.Template.Spec.Containers[0]; !slices.Contains(c.Args, "--handover-exit=false") {
		t.Errorf("nsbrokerd args %q lack --handover-exit=false", c.Args)
	}
	// The new pod's readiness probe is answered by whichever daemon serves
	// the shared admin socket: time for the handover before the old pod
	// is stopped.
	if ds.Spec.MinReadySeconds < 10 {
		t.Errorf("minReadySeconds %d, want at least 10", ds.Spec.MinReadySeconds)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID {
		t.Error("hostPID is false: /proc/PID/ns/net of the node's processes would be out of reach")
	}
	// The node's CNI chain includes nsbroker-cni, whose ADD fails while no
	// daemon runs: a pod network for the daemon itself would wait for the
	// daemon for ever after a node reboot.
	if !spec.HostNetwork {
		t.Error("hostNetwork is false: the daemon's own sandbox would need a CNI ADD, which needs the daemon running")
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		if len(c.Ports) > 0 {
			t.Errorf("%s declares ports %v: on the node's network they would be the node's", c.Name, c.Ports)
		}
	}
	volumes := map[string]*corev1.HostPathVolumeSource{}
	for _, v := range spec.Volumes {
		if v.HostPath == nil {
			t.Errorf("volume %s is not a hostPath", v.Name)
			continue
		}
		volumes[v.Name] = v.HostPath
	}
	// mounted returns the host path mounted at mountPath in c, and how.
	mounted := func(c corev1.Container, mountPath string) (string, *corev1.VolumeMount) {
		for i, m := range c.VolumeMounts {
			if m.MountPath == mountPath {
				if hp := volumes[m.Name]; hp != nil {
					return hp.Path, &c.VolumeMounts[i]
				}
				t.Errorf("%s: mount %s: no hostPath volume %q", c.Name, mountPath, m.Name)
			}
		}
		return "", nil
	}

	if len(spec.InitContainers) != 1 {
		t.Fatalf("%d init containers, want 1 (install-cni)", len(spec.InitContainers))
	}
	install := spec.InitContainers[0]
	if want := []string{"/usr/local/bin/nsbroker-cni", "install", "--dest", "/host/opt/cni/bin"}; !slices.Equal(install.Command, want) {
		t.Errorf("install-cni command %q, want %q", install.Command, want)
	}
	if hp, _ := mounted(install, "/host/opt/cni/bin"); hp != "/opt/cni/bin" {
		t.Errorf("install-cni: /host/opt/cni/bin is the node's %q, want its CNI bin directory /opt/cni/bin", hp)
	}

	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1 (nsbrokerd)", len(spec.Containers))
	}
	d := spec.Containers[0]
	if d.Image != install.Image || d.Image == "" {
		t.Errorf("images %q and %q, want one image for both", d.Image, install.Image)
	}
	if want := []string{"/usr/local/bin/nsbrokerd"}; !slices.Equal(d.Command, want) {
		t.Errorf("nsbrokerd command %q, want %q", d.Command, want)
	}
	socketDir := "/run/nsbroker"
	if hp, _ := mounted(d, socketDir); hp != socketDir {
		t.Errorf("nsbrokerd: %s is the node's %q, want the same directory, where the node's CNI plugin looks", socketDir, hp)
	}
	// The state file outlives the pod (a restart, an update) on the node;
	// the handover socket, where a new pod asks the old one for its
	// sockets, and the namespaces' filesystem sockets, which the OCI hook
	// mounts into containers, are on the node's path too.
	for _, a := range d.Args {
		for _, f := range []string{"--state-file", "--handover-socket", "--file-socket-dir"} {
			if strings.HasPrefix(a, f) {
				t.Errorf("nsbrokerd argument %q: want the default, on the hostPath %s", a, socketDir)
			}
		}
	}
	def := daemon.Defaults()
	for name, p := range map[string]string{"handover socket": def.HandoverSocket, "file socket directory": def.FileSocketDir} {
		if p == "" || filepath.IsAbs(p) {
			t.Errorf("the default %s is %q, want a path relative to the admin socket's directory %s", name, p, socketDir)
		}
	}
	if dir := filepath.Dir(daemon.DefaultStateFile); dir != socketDir {
		t.Errorf("the default state file %s is not in %s, the hostPath", daemon.DefaultStateFile, socketDir)
	}
	hp, m := mounted(d, "/run/netns")
	if hp != "/run/netns" || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("nsbrokerd: /run/netns is the node's %q with propagation %v, want /run/netns with HostToContainer", hp, m)
	}

	sc := d.SecurityContext
	if sc == nil || sc.Capabilities == nil || sc.Privileged != nil && *sc.Privileged {
		t.Fatalf("nsbrokerd security context %+v, want capabilities and no privileged mode", sc)
	}
	// The unit's bounding set, without CAP_CHOWN: the manifest gives the
	// admin socket to no group.
	var want []corev1.Capability
	for _, c := range parseUnit(t, unitFile).capabilities(t) {
		if c != "CAP_CHOWN" {
			want = append(want, corev1.Capability(strings.TrimPrefix(c, "CAP_")))
		}
	}
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	if !slices.Equal(add, want) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities add %q drop %q, want add %q drop [ALL]", add, sc.Capabilities.Drop, want)
	}

	// Both probes ask grpc.health.v1 through the admin socket.
	for name, p := range map[string]*corev1.Probe{"liveness": d.LivenessProbe, "readiness": d.ReadinessProbe} {
		if p == nil || p.Exec == nil {
			t.Errorf("%s probe %+v, want an exec probe", name, p)
			continue
		}
		want := []string{"/usr/local/bin/nsbrokerctl", "--socket=" + attacher.DefaultSocket, "--timeout=5s", "health"}
		if !slices.Equal(p.Exec.Command, want) {
			t.Errorf("%s probe command %q, want %q", name, p.Exec.Command, want)
		}
		// kubelet kills the probe at timeoutSeconds: the client's own
		// timeout must come first, to report why.
		if p.TimeoutSeconds <= 5 {
			t.Errorf("%s probe timeoutSeconds %d, want more than nsbrokerctl's 5s", name, p.TimeoutSeconds)
		}
	}
	if grace, stop := ds.Spec.Template.Spec.TerminationGracePeriodSeconds, daemon.Defaults().ShutdownTimeout; grace == nil || time.Duration(*grace)*time.Second <= stop {
		t.Errorf("terminationGracePeriodSeconds %v, want more than the daemon's %v shutdown timeout", grace, stop)
	}
}
