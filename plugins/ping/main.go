// Command ping is halo's built-in ICMP echo checker plugin.
package main

import (
	"github.com/halo-ha/halo/plugins/ping/ping"
	"github.com/halo-ha/halo/sdk/checker"
)

func main() { checker.Serve(ping.New) }
