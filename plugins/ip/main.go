// Command ip is halo's built-in checker of a virtual address: present,
// not duplicated, on an up interface.
package main

import (
	"github.com/halo-ha/halo/plugins/ip/ip"
	"github.com/halo-ha/halo/sdk/checker"
)

func main() { checker.Serve(ip.New) }
