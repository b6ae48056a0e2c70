// Command vip is halo's built-in virtual IP plugin: netlink, gratuitous
// ARP / unsolicited neighbour advertisements, connection reset on release.
package main

import (
	"github.com/halo-ha/halo/plugins/vip/vip"
	sdkvip "github.com/halo-ha/halo/sdk/vip"
)

func main() { sdkvip.Serve(vip.New) }
