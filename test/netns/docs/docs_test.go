package docs

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbdocs "github.com/nsbroker/nsbroker/docs"
	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

const (
	// marker precedes every ```sh block with a grpcurl command.
	marker = "<!-- exercised by: test/netns/docs -->"
	// The documented sockets, as grpcurl names them.
	adminTarget = "unix:///run/nsbroker/nsbroker.sock"
	localTarget = "unix-abstract:nsbroker"
	adminSocket = "/run/nsbroker/nsbroker.sock"

	startTimeout = 60 * time.Second // daemon start-up
	stopTimeout  = 30 * time.Second // daemon graceful stop
	cmdTimeout   = 60 * time.Second // one grpcurl run
	waitTimeout  = 30 * time.Second // a state the daemon reaches by itself
)

// command is one grpcurl command of the docs.
type command struct {
	file   string
	line   int
	text   string // as written, continuation lines included
	marked bool   // its block is preceded by marker
}

func (c command) String() string { return fmt.Sprintf("%s:%d", c.file, c.line) }

// grpcurlLine is a shell line that runs grpcurl, in the caller's
// namespace or in a named one.
var grpcurlLine = regexp.MustCompile(`^(ip netns exec \S+ )?grpcurl\s`)

// rpcName finds the method a command calls.
var rpcName = regexp.MustCompile(`\s((?:nsbroker\.v1\.Broker|grpc\.health\.v1\.Health)/\w+)(\s|$)`)

// commands returns the grpcurl commands of every file in docs/, in file
// name order and then in the order the file gives them.
func commands(t testing.TB) []command {
	t.Helper()
	names, err := fs.Glob(nsbdocs.Files, "*.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []command
	for _, name := range names {
		data, err := fs.ReadFile(nsbdocs.Files, name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		in, marked := false, false
		for i := 0; i < len(lines); i++ {
			l := lines[i]
			if !in {
				if strings.TrimSpace(l) == "```sh" {
					in = true
					marked = i > 0 && strings.TrimSpace(lines[i-1]) == marker
				}
				continue
			}
			if strings.TrimSpace(l) == "```" {
				in = false
				continue
			}
			c := command{file: "docs/" + name, line: i + 1, text: l, marked: marked}
			for strings.HasSuffix(lines[i], `\`) && i+1 < len(lines) {
				i++
				c.text += "\n" + lines[i]
			}
			if grpcurlLine.MatchString(c.text) {
				out = append(out, c)
			}
		}
	}
	return out
}

// method is the full method name a command calls ("" for list and
// describe).
func (c command) method() string {
	m := rpcName.FindStringSubmatch(c.text)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestDocsGrpcurlCommands checks the form of the documented commands:
// an address grpcurl accepts, a marked block, and an example for every
// rpc grpcurl can call from the command line.
func TestDocsGrpcurlCommands(t *testing.T) {
	cmds := commands(t)
	if len(cmds) == 0 {
		t.Fatal("no grpcurl command in docs/")
	}
	seen := map[string]bool{}
	for _, c := range cmds {
		fields := strings.Fields(c.text)
		if !c.marked {
			t.Errorf("%v: the block of %q is not preceded by %s", c, c.text, marker)
		}
		if strings.Contains(c.text, " -unix") {
			t.Errorf("%v: %q uses -unix with a path, which released grpcurl dials as TCP (missing port in address); use %s or %s", c, c.text, adminTarget, localTarget)
		}
		inNetns := strings.HasPrefix(c.text, "ip netns exec ")
		var target string
		for _, f := range fields {
			if strings.HasPrefix(f, "unix:") || strings.HasPrefix(f, "unix-abstract:") {
				target = f
			}
		}
		switch {
		case target == adminTarget && !inNetns, target == localTarget && inNetns:
		default:
			t.Errorf("%v: %q: want the admin socket %s from the host, or %s inside a namespace (ip netns exec)", c, c.text, adminTarget, localTarget)
		}
		seen[c.method()] = true
	}
	methods := nsbrokerv1.File_nsbroker_v1_broker_proto.Services().ByName("Broker").Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		full := "nsbroker.v1.Broker/" + string(m.Name())
		if m.IsStreamingClient() {
			continue // grpcurl takes a client stream's messages on stdin; nsbrokerctl's example shows it
		}
		if !seen[full] {
			t.Errorf("docs/ give no grpcurl example for %s", full)
		}
	}
}

// TestIntegrationDocsGrpcurl runs every documented grpcurl command
// against nsbrokerd on the documented admin socket.
func TestIntegrationDocsGrpcurl(t *testing.T) {
	testenv.RequireModule(t)
	for _, name := range []string{"nsbrokerd", "grpcurl", "ip"} {
		if _, err := exec.LookPath(name); err != nil {
			if testenv.InVM() {
				t.Fatalf("inside the test VM but %s is not on PATH (VM_BINS, GRPCURL_VERSION): %v", name, err)
			}
			t.Skipf("%s is not on PATH: %v", name, err)
		}
	}
	cmds := commands(t)
	if _, err := os.Stat(adminSocket); err == nil {
		t.Fatalf("%s exists: is another nsbrokerd running? The documented commands need that socket", adminSocket)
	}
	_, err := os.Stat("/run/nsbroker")
	runDirExisted := err == nil
	for _, name := range []string{"red", "blue"} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
	}
	d := daemontest.Start(t, startTimeout, "--admin-socket", adminSocket)
	t.Cleanup(func() {
		d.Stop(t, stopTimeout)
		if !runDirExisted {
			os.RemoveAll("/run/nsbroker")
		}
	})
	admin, _ := daemontest.Dial(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", adminSocket)
	})
	for _, c := range cmds {
		t.Run(c.String(), func(t *testing.T) {
			m := c.method()
			switch m {
			case "nsbroker.v1.Broker/AttachNamespace", "nsbroker.v1.Broker/AttachNamespaces":
				detach(t, admin, "red", "blue")
			case "nsbroker.v1.Broker/ResumeModule":
				attach(t, admin, "red")
			default:
				attach(t, admin, "red")
				ready(t, admin, "red")
			}
			stream := m == "nsbroker.v1.Broker/Subscribe" || m == "nsbroker.v1.Broker/WatchNamespaces"
			run(t, c, stream, admin)
		})
	}
}

// detach detaches the namespaces that are attached.
func detach(t *testing.T, admin nsbrokerv1.BrokerClient, names ...string) {
	t.Helper()
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		_, err := admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name})
		cancel()
		if err != nil && status.Code(err) != codes.NotFound {
			t.Fatalf("DetachNamespace %s: %v", name, err)
		}
	}
}

// attach attaches the namespace under its own name unless it is.
func attach(t *testing.T, admin nsbrokerv1.BrokerClient, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	_, err := admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{
		Name: name,
		Ref:  &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}},
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		t.Fatalf("AttachNamespace %s: %v", name, err)
	}
}

// ready makes an attached namespace ready, resuming the module if an
// earlier command released it.
func ready(t *testing.T, admin nsbrokerv1.BrokerClient, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ns, err := admin.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: name})
	if err != nil {
		t.Fatalf("GetNamespace %s: %v", name, err)
	}
	if ns.GetState() == nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY {
		return
	}
	if _, err := admin.ResumeModule(ctx, &nsbrokerv1.ResumeModuleRequest{Wait: true}); err != nil {
		t.Fatalf("ResumeModule: %v (namespace %s: %v, %s)", err, name, ns.GetState(), ns.GetReason())
	}
}

// run runs the command through /bin/sh. A unary call must exit 0; a
// stream must print a message (for Subscribe, an event the test publishes
// once the stream has subscribed) and still run when the test ends it.
func run(t *testing.T, c command, stream bool, admin nsbrokerv1.BrokerClient) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", c.text)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stdout, stderr daemontest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t.Logf("$ %s", c.text)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	kill := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	report := func() string {
		return fmt.Sprintf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	if !stream {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%v: %v\n%s", c, err, report())
			}
			t.Logf("%s", report())
		case <-time.After(cmdTimeout):
			kill()
			t.Fatalf("%v: still running after %v\n%s", c, cmdTimeout, report())
		}
		return
	}
	defer kill()
	published := c.method() != "nsbroker.v1.Broker/Subscribe"
	deadline := time.Now().Add(waitTimeout)
	for !strings.Contains(stdout.String(), "{") {
		select {
		case err := <-done:
			done <- err // for kill
			t.Fatalf("%v: a stream ended: %v\n%s", c, err, report())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v: nothing printed within %v\n%s", c, waitTimeout, report())
		}
		if published {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		ns, err := admin.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: "red"})
		if err == nil && ns.GetSubscribers() > 0 {
			_, err = admin.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: "red", Group: 1, Payload: []byte("docs")})
			published = err == nil
		}
		cancel()
		if err != nil {
			t.Fatalf("publishing to red: %v", err)
		}
	}
	// Give a stream that would fail after its first message the chance to.
	select {
	case err := <-done:
		done <- err
		t.Fatalf("%v: a stream ended: %v\n%s", c, err, report())
	case <-time.After(500 * time.Millisecond):
	}
	t.Logf("%s", report())
}
