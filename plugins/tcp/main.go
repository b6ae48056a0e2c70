// Command tcp is halo's built-in TCP connect checker plugin.
package main

import (
	"github.com/halo-ha/halo/plugins/tcp/tcp"
	"github.com/halo-ha/halo/sdk/checker"
)

func main() { checker.Serve(tcp.New) }
