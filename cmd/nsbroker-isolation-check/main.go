// Command nsbroker-isolation-check proves, on a host running nsbrokerd with
// the nsbroker module loaded, that tenants in different network namespaces
// cannot see each other's messages, and reports the known ways across
// namespaces as held or broken, with the evidence. See package isolation.
package main

import (
	"os"

	"github.com/nsbroker/nsbroker/isolation"
)

func main() {
	os.Exit(isolation.Main(os.Args[1:], os.Stdout, os.Stderr))
}
