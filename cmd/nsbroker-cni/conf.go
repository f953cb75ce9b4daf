package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/nsbroker/nsbroker/attacher"
)

// Defaults of the network configuration.
const (
	defaultNamePrefix = "cni-"
	defaultTimeout    = 10 * time.Second
)

// netConf is the plugin's network configuration.
type netConf struct {
	types.PluginConf
	// Socket is nsbrokerd's admin socket.
	Socket string `json:"socket,omitempty"`
	// NamePrefix goes before the container id to make the attach name.
	NamePrefix string `json:"namePrefix,omitempty"`
	// Timeout bounds the whole exchange with the daemon (a Go duration).
	Timeout string `json:"timeout,omitempty"`

	timeout time.Duration
	// prevResult is the previous plugin's result exactly as it came.
	prevResult json.RawMessage
}

// parseConf decodes and checks the network configuration on stdin.
func parseConf(stdin []byte) (*netConf, error) {
	conf := &netConf{Socket: attacher.DefaultSocket, NamePrefix: defaultNamePrefix, timeout: defaultTimeout}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsbroker-cni: cannot decode the network configuration: "+err.Error(), "")
	}
	var raw struct {
		PrevResult json.RawMessage `json:"prevResult"`
	}
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsbroker-cni: cannot decode the network configuration: "+err.Error(), "")
	}
	if len(raw.PrevResult) > 0 && string(raw.PrevResult) != "null" {
		conf.prevResult = raw.PrevResult
	}
	// The result passes through as it came, but it must be one.
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "nsbroker-cni: invalid prevResult: "+err.Error(), "")
	}
	if conf.Socket == "" {
		return nil, invalidConf(`"socket" is empty`)
	}
	if conf.Timeout != "" {
		d, err := time.ParseDuration(conf.Timeout)
		if err != nil || d <= 0 {
			return nil, invalidConf(fmt.Sprintf(`"timeout" %q is not a positive duration such as "10s"`, conf.Timeout))
		}
		conf.timeout = d
	}
	return conf, nil
}

func invalidConf(msg string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, "nsbroker-cni: invalid network configuration: "+msg, "")
}

// attachName is the name the container's namespace is attached under.
// The interface name is not part of it: the daemon attaches a namespace
// once, whatever number of interfaces (networks) the container has.
func (c *netConf) attachName(containerID string) string {
	return c.NamePrefix + containerID
}
