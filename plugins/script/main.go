// Command script is halo's built-in application plugin: it runs the
// module's start and stop scripts.
package main

import (
	"github.com/halo-ha/halo/plugins/script/script"
	"github.com/halo-ha/halo/sdk/app"
)

func main() { app.Serve(script.New) }
