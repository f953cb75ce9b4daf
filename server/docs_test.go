package server

import (
	"os"
	"strings"
	"testing"

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
