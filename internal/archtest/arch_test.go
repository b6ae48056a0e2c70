// Package archtest enforces the dependency rules of ARCHITECTURE.md:
// core is pure (standard library and core only), plugins use only the
// public SDK (never internal/ or core/), and the SDK imports nothing of the
// root module.
package archtest

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const root = "github.com/halo-ha/halo"

// imports lists each package of pattern (run in dir) with its non-test imports.
func imports(t *testing.T, dir, pattern string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, pattern)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		m[f[0]] = f[1:]
	}
	if len(m) < 3 {
		t.Fatalf("go list %s found only %d packages: the check would prove nothing", pattern, len(m))
	}
	return m
}

func isStd(p string) bool { return !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") }

func TestCoreIsPure(t *testing.T) {
	for pkg, imps := range imports(t, "../..", "./core/...") {
		// A demo program may print; it is not part of the machines.
		if pkg == root+"/core/sim/simdemo" {
			continue
		}
		for _, imp := range imps {
			if !isStd(imp) && !strings.HasPrefix(imp, root+"/core") {
				t.Errorf("%s imports %s: core may import only the standard library and core", pkg, imp)
			}
			switch imp {
			case "net", "os/exec", "net/http", "syscall":
				t.Errorf("%s imports %s: core does no I/O", pkg, imp)
			}
		}
	}
}

func TestPluginsUseOnlyTheSDK(t *testing.T) {
	for pkg, imps := range imports(t, "../..", "./plugins/...") {
		for _, imp := range imps {
			if strings.HasPrefix(imp, root+"/internal") || strings.HasPrefix(imp, root+"/core") ||
				strings.HasPrefix(imp, root+"/cmd") {
				t.Errorf("%s imports %s: plugins are built on the public SDK only", pkg, imp)
			}
		}
	}
}

func TestSDKStandsAlone(t *testing.T) {
	for pkg, imps := range imports(t, "../../sdk", "./...") {
		for _, imp := range imps {
			if strings.HasPrefix(imp, root+"/") && !strings.HasPrefix(imp, root+"/sdk") {
				t.Errorf("%s imports %s: the SDK must not depend on the root module", pkg, imp)
			}
		}
	}
}
