package server

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/internal/quote"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestAPIDocCoversEveryRPC fails when an rpc of the service has no
// section in docs/api.md, or a section names an rpc that does not exist.
func TestAPIDocCoversEveryRPC(t *testing.T) {
	b, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	rpcs := map[string]bool{}
	for _, m := range nsbrokerv1.Broker_ServiceDesc.Methods {
		rpcs[m.MethodName] = true
	}
	for _, s := range nsbrokerv1.Broker_ServiceDesc.Streams {
		rpcs[s.StreamName] = true
	}
	sections := map[string]bool{}
	inRPCs := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "## The rpcs":
			inRPCs = true
		case strings.HasPrefix(line, "## "):
			inRPCs = false
		case inRPCs && strings.HasPrefix(line, "### "):
			// "### Subscribe (server stream)": the rpc's name first.
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "### "), " ")
			sections[name] = true
			if !rpcs[name] {
				t.Errorf("docs/api.md has a section %q, which is no rpc of the service", name)
			}
		}
	}
	for name := range rpcs {
		if !sections[name] {
			t.Errorf("docs/api.md has no section for %s", name)
		}
	}
}

// TestAPIDocStatesNameBounds fails when docs/api.md does not state the
// bounds on names, references and messages that the code enforces.
func TestAPIDocStatesNameBounds(t *testing.T) {
	b, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(b)), " ")
	for _, want := range []string{
		fmt.Sprintf("A namespace name is at most **%d bytes** (`broker.MaxNameLen`", broker.MaxNameLen),
		fmt.Sprintf("is longer than %d bytes`", broker.MaxNameLen),
		fmt.Sprintf("under `/run/netns`, as `ip netns add` makes, at most %d bytes", nsmgr.NameMax),
		fmt.Sprintf("at most %d bytes (`PATH_MAX` less the NUL)", nsmgr.PathMax),
		fmt.Sprintf("a `name` over %d bytes, a `path` over %d", nsmgr.NameMax, nsmgr.PathMax),
		fmt.Sprintf("it shows the first %d bytes", quote.Max),
		fmt.Sprintf("a status message is cut after %d bytes", maxMessage),
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/api.md does not say %q", want)
		}
	}
}
