// Command splitbrain is halo's built-in witness reachability checker.
package main

import (
	"github.com/halo-ha/halo/plugins/splitbrain/splitbrain"
	"github.com/halo-ha/halo/sdk/checker"
)

func main() { checker.Serve(splitbrain.New) }
