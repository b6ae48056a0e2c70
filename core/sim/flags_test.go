package sim

import (
	"flag"
	"strconv"
	"testing"
)

// The simulators of this package share two flags:
//
//	-seed N   replay seed N only (with -v: print its trace)
//	-seeds N  number of seeds to run (from 1)
var (
	_ = flag.Int("seed", 0, "replay this simulator seed only (with -v, print its trace)")
	_ = flag.Int("seeds", 0, "number of simulator seeds to run")
)

// flagValue returns the value given on the command line for name, and
// whether it was given.
func flagValue(t *testing.T, name string) (uint64, bool) {
	var val string
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			val, set = f.Value.String(), true
		}
	})
	if !set {
		return 0, false
	}
	n, err := strconv.ParseUint(val, 10, 64)
	if err != nil {
		t.Fatalf("-%s=%s: %v", name, val, err)
	}
	return n, true
}
