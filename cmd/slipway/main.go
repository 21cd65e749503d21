// Command slipway is the Slipway image-build service and its local tools.
package main

import (
	"os"

	"github.com/slipway-dev/slipway/pkg/commands"
)

func main() {
	os.Exit(commands.Main(os.Args[1:], os.Stdout, os.Stderr))
}
