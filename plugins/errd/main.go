// Command errd is halo's built-in process checker plugin.
package main

import (
	"github.com/halo-ha/halo/plugins/errd/errd"
	"github.com/halo-ha/halo/sdk/checker"
)

func main() { checker.Serve(errd.New) }
