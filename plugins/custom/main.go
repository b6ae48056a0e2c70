// Command custom is halo's built-in checker that runs a partner's
// executable, once per check or as a long-running reporter.
package main

import (
	"github.com/halo-ha/halo/plugins/custom/custom"
	"github.com/halo-ha/halo/sdk/checker"
)

func main() { checker.Serve(custom.New) }
