// Command nsbrokerctl is the command-line client of nsbrokerd; see package
// ctl, or run nsbrokerctl --help.
package main

import (
	"os"

	"github.com/nsbroker/nsbroker/ctl"
)

func main() {
	os.Exit(ctl.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
