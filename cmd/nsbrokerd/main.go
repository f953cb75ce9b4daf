// Command nsbrokerd serves the nsbroker gRPC API for the network
// namespaces it attaches. See docs/operations.md.
package main

import (
	"os"

	"github.com/nsbroker/nsbroker/daemon"
)

func main() {
	os.Exit(daemon.Main(os.Args[1:]))
}
