// Command intf is halo's built-in network interface checker.
package main

import (
	"github.com/halo-ha/halo/plugins/intf/intf"
	"github.com/halo-ha/halo/sdk/checker"
)

func main() { checker.Serve(intf.New) }
