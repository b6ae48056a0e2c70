package config

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// FormatDiagnostic renders a diagnostic on one line, the way compilers do:
//
//	modules/pg/module.hcl:12:5: error: Invalid duration: pulse: invalid duration "1 s": ...
//
// A diagnostic without a location starts at its severity.
func FormatDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	if d.Severity == hcl.DiagWarning {
		b.WriteString("warning: ")
	} else {
		b.WriteString("error: ")
	}
	b.WriteString(d.Summary)
	if detail := strings.Join(strings.Fields(d.Detail), " "); detail != "" {
		b.WriteString(": ")
		b.WriteString(detail)
	}
	return b.String()
}

// WriteDiagnostics writes each diagnostic on one line (FormatDiagnostic),
// in the order given.
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics) error {
	for _, d := range diags {
		if _, err := fmt.Fprintln(w, FormatDiagnostic(d)); err != nil {
			return fmt.Errorf("write diagnostics: %w", err)
		}
	}
	return nil
}

// WriteDiagnosticsDetailed writes diagnostics with the offending source
// lines, as HCL's own tools do. files comes from Config.Files; width 0
// disables wrapping; color adds terminal escape sequences.
func WriteDiagnosticsDetailed(w io.Writer, diags hcl.Diagnostics, files map[string]*hcl.File, width uint, color bool) error {
	if err := hcl.NewDiagnosticTextWriter(w, files, width, color).WriteDiagnostics(diags); err != nil {
		return fmt.Errorf("write diagnostics: %w", err)
	}
	return nil
}
