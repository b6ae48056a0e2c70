// Command filecheck is an example halo checker plugin, built only on the
// SDK: it is up while a file exists and was modified recently, the way an
// application can signal its own health by touching a file.
package main

import "github.com/halo-ha/halo/sdk/checker"

func main() { checker.Serve(New) }
