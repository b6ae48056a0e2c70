package schema

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// sample exercises every attribute type and both nestings.
var sample = &Schema{
	Attributes: []Attribute{
		{Name: "path", Type: TypeString, Required: true, Description: "file to watch"},
		{Name: "max_age", Type: TypeDuration, Default: 30 * time.Second},
		{Name: "retries", Type: TypeNumber, Default: 3},
		{Name: "ratio", Type: TypeNumber},
		{Name: "strict", Type: TypeBool, Default: true},
		{Name: "tags", Type: TypeListOfString},
		{Name: "labels", Type: TypeMapOfString, Default: map[string]string{"team": "ops"}},
	},
	Blocks: []Block{
		{Name: "target", Body: Schema{Attributes: []Attribute{
			{Name: "host", Type: TypeString, Required: true},
			{Name: "port", Type: TypeNumber, Default: 80},
		}}},
		{Name: "rule", Nesting: NestingList, MaxItems: 2, Body: Schema{Attributes: []Attribute{
			{Name: "name", Type: TypeString, Required: true},
		}}},
	},
}

type sampleConfig struct {
	Path    string            `hcl:"path"`
	MaxAge  time.Duration     `hcl:"max_age,optional"`
	Retries int               `hcl:"retries,optional"`
	Ratio   float64           `hcl:"ratio,optional"`
	Strict  bool              `hcl:"strict,optional"`
	Tags    []string          `hcl:"tags,optional"`
	Labels  map[string]string `hcl:"labels,optional"`
	Target  *struct {
		Host string `hcl:"host"`
		Port uint16 `hcl:"port,optional"`
	} `hcl:"target,block"`
	Rules []struct {
		Name string `hcl:"name"`
	} `hcl:"rule,block"`
	Ignored string // untagged fields are left alone
}

// parseBody returns the body of a checker block holding src, as the host
// will have it: the block opens at line 1 column 13 of module.hcl, and src
// starts on line 2.
func parseBody(t *testing.T, src string) hcl.Body {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte("checker \"c\" {\n"+src+"}\n"), "module.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("parse: %s", diags)
	}
	return f.Body.(*hclsyntax.Body).Blocks[0].Body
}

func TestSampleIsValid(t *testing.T) {
	if err := sample.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		schema Schema
		want   string
	}{
		{"bad identifier", Schema{Attributes: []Attribute{{Name: "max-age!", Type: TypeString}}}, "not a valid HCL identifier"},
		{"duplicate", Schema{Attributes: []Attribute{{Name: "a", Type: TypeString}}, Blocks: []Block{{Name: "a"}}}, "declared twice"},
		{"no type", Schema{Attributes: []Attribute{{Name: "a"}}}, "invalid type"},
		{"required with default", Schema{Attributes: []Attribute{{Name: "a", Type: TypeString, Required: true, Default: "x"}}}, "required attributes take no default"},
		{"default of wrong type", Schema{Attributes: []Attribute{{Name: "a", Type: TypeNumber, Default: "many"}}}, "is not a number"},
		{"bad duration default", Schema{Attributes: []Attribute{{Name: "a", Type: TypeDuration, Default: "soon"}}}, "invalid duration"},
		{"duration default on string", Schema{Attributes: []Attribute{{Name: "a", Type: TypeString, Default: time.Second}}}, "time.Duration"},
		{"list block required", Schema{Blocks: []Block{{Name: "b", Nesting: NestingList, Required: true}}}, "use MinItems"},
		{"list bounds", Schema{Blocks: []Block{{Name: "b", Nesting: NestingList, MinItems: 3, MaxItems: 2}}}, "bad item bounds"},
		{"single with bounds", Schema{Blocks: []Block{{Name: "b", MaxItems: 2}}}, "list blocks only"},
		{"nested mistake keeps path", Schema{Blocks: []Block{{Name: "b", Body: Schema{Attributes: []Attribute{{Name: "x"}}}}}}, `"b.x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.schema.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestDecodeAppliesDefaultsAndTypes(t *testing.T) {
	body := parseBody(t, `
path    = "/run/app.ok"
tags    = ["a", "b"]
target {
  host = "db1"
}
rule { name = "one" }
rule { name = "two" }
`)
	v, diags := sample.Decode(body, nil)
	if diags.HasErrors() {
		t.Fatalf("Decode: %s", diags)
	}
	var cfg sampleConfig
	if err := DecodeValue(v, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Path != "/run/app.ok" || cfg.MaxAge != 30*time.Second || cfg.Retries != 3 || !cfg.Strict {
		t.Errorf("scalars/defaults wrong: %+v", cfg)
	}
	if cfg.Ratio != 0 {
		t.Errorf("absent optional number without default = %v, want 0", cfg.Ratio)
	}
	if !reflect.DeepEqual(cfg.Tags, []string{"a", "b"}) || !reflect.DeepEqual(cfg.Labels, map[string]string{"team": "ops"}) {
		t.Errorf("collections wrong: tags %v labels %v", cfg.Tags, cfg.Labels)
	}
	if cfg.Target == nil || cfg.Target.Host != "db1" || cfg.Target.Port != 80 {
		t.Errorf("single block wrong: %+v", cfg.Target)
	}
	if len(cfg.Rules) != 2 || cfg.Rules[1].Name != "two" {
		t.Errorf("list block wrong: %+v", cfg.Rules)
	}
}

func TestDecodeDiagnosticsKeepRanges(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		summary  string
		line     int
		startCol int // 0: any column
	}{
		{"unknown attribute", "path = \"x\"\n  max_agee = \"1s\"\n", "Unsupported argument", 3, 3},
		// A missing attribute is reported at the block's opening brace.
		{"missing required", "max_age = \"1s\"\n", "Missing required argument", 1, 13},
		{"wrong type", "path = \"x\"\nstrict = \"maybe\"\n", "Incorrect attribute value type", 3, 10},
		{"bad duration", "path = \"x\"\nmax_age = \"10 minutes\"\n", "Invalid duration", 3, 11},
		{"too many list blocks", "path = \"x\"\nrule { name = \"a\" }\nrule { name = \"b\" }\nrule { name = \"c\" }\n", "Too many rule blocks", 5, 0},
		{"unknown attribute in block", "path = \"x\"\ntarget {\n  host = \"h\"\n  prot = 1\n}\n", "Unsupported argument", 5, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := sample.Decode(parseBody(t, tt.src), nil)
			if !diags.HasErrors() {
				t.Fatal("Decode accepted a bad configuration")
			}
			d := diags[0]
			if d.Summary != tt.summary {
				t.Fatalf("summary %q, want %q (%s)", d.Summary, tt.summary, diags)
			}
			if d.Subject == nil || d.Subject.Filename != "module.hcl" || d.Subject.Start.Line != tt.line ||
				(tt.startCol != 0 && d.Subject.Start.Column != tt.startCol) {
				t.Fatalf("subject %v, want module.hcl:%d,%d", d.Subject, tt.line, tt.startCol)
			}
		})
	}
}

func TestWireRoundTrip(t *testing.T) {
	v, diags := sample.Decode(parseBody(t, "path = \"/x\"\nratio = 0.5\ntarget { host = \"h\" }\n"), nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	data, err := sample.MarshalValue(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := sample.UnmarshalValue(data)
	if err != nil {
		t.Fatal(err)
	}
	if !got.RawEquals(v) {
		t.Fatalf("round trip changed the value:\n got %#v\nwant %#v", got, v)
	}
}

// TestUnmarshalValueAppliesDefaults: a host that sends nulls (or omits
// attributes) gets the same configuration as one that applied defaults.
func TestUnmarshalValueAppliesDefaults(t *testing.T) {
	v, err := sample.UnmarshalValue([]byte(`{"path": "/x", "target": {"host": "h"}, "rule": [{"name": "a"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var cfg sampleConfig
	if err := DecodeValue(v, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxAge != 30*time.Second || cfg.Retries != 3 || !cfg.Strict || cfg.Labels["team"] != "ops" || cfg.Target.Port != 80 {
		t.Fatalf("defaults not applied: %+v (target %+v)", cfg, cfg.Target)
	}
	want, diags := sample.Decode(parseBody(t, "path = \"/x\"\ntarget { host = \"h\" }\nrule { name = \"a\" }\n"), nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if !v.RawEquals(want) {
		t.Fatalf("plugin-side defaults differ from the host's:\n got %#v\nwant %#v", v, want)
	}
}

func TestUnmarshalValueRejects(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"not json", `{`, "decode configuration"},
		{"null", `null`, "configuration is null"},
		{"missing required", `{"path": null}`, "path: required attribute is missing"},
		{"bad duration", `{"path": "x", "max_age": "forever"}`, "max_age: time: invalid duration"},
		{"wrong type", `{"path": "x", "strict": "yes"}`, "decode configuration"},
		{"unknown attribute", `{"path": "x", "nope": 1}`, "decode configuration"},
		{"required nested", `{"path": "x", "target": {"port": 1}}`, "target.host: required attribute is missing"},
		{"list bounds", `{"path": "x", "rule": [{"name":"a"},{"name":"b"},{"name":"c"}]}`, "rule: 3 blocks, want 0 to 2"},
		{"null list element", `{"path": "x", "tags": ["a", null]}`, "tags: elements must not be null"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sample.UnmarshalValue([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("UnmarshalValue = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestDecodeValueRejectsDrift(t *testing.T) {
	v := cty.ObjectVal(map[string]cty.Value{"a": cty.StringVal("x"), "n": cty.NumberFloatVal(1.5)})
	type missingField struct {
		A string `hcl:"a"`
	}
	type extraField struct {
		A string  `hcl:"a"`
		N float64 `hcl:"n"`
		B string  `hcl:"b"`
	}
	type fractionalInt struct {
		A string `hcl:"a"`
		N int    `hcl:"n"`
	}
	type wrongKind struct {
		A bool    `hcl:"a"`
		N float64 `hcl:"n"`
	}
	tests := []struct {
		name   string
		target any
		want   string
	}{
		{"attribute without field", &missingField{}, `no field tagged hcl:"n"`},
		{"field without attribute", &extraField{}, `wants "b"`},
		{"fractional into int", &fractionalInt{}, "n: "},
		{"wrong kind", &wrongKind{}, "a: "},
		{"not a pointer", missingField{}, "non-nil pointer to a struct"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := DecodeValue(v, tt.target)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("DecodeValue = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestProtoRoundTrip(t *testing.T) {
	p, err := sample.ToProto()
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromProto(p)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(sample) {
		t.Fatalf("schema changed through the wire:\n got %+v\nwant %+v", back, sample)
	}
	// And Equal can tell a difference, so the check above means something.
	changed := *back
	changed.Attributes = append([]Attribute(nil), back.Attributes...)
	changed.Attributes[1].Default = time.Minute
	if changed.Equal(sample) {
		t.Fatal("Equal ignored a changed default")
	}
}

func TestFromProtoRejectsInvalid(t *testing.T) {
	p, err := (&Schema{Attributes: []Attribute{{Name: "a", Type: TypeString}}}).ToProto()
	if err != nil {
		t.Fatal(err)
	}
	p.Attributes[0].Name = "not valid"
	if _, err := FromProto(p); err == nil {
		t.Fatal("FromProto accepted an invalid attribute name")
	}
	p.Attributes[0].Name = "a"
	p.Attributes[0].DefaultJson = []byte(`{"not":"a string"}`)
	if _, err := FromProto(p); err == nil {
		t.Fatal("FromProto accepted a default of the wrong type")
	}
	if _, err := FromProto(nil); err == nil {
		t.Fatal("FromProto accepted a missing schema")
	}
}

func TestDiagnosticsPointAtPaths(t *testing.T) {
	body := parseBody(t, `path = "x"
max_age = "5s"
target {
  host = "h"
  port = 0
}
rule { name = "a" }
rule { name = "" }
`)
	errs := AttrErrors(errors.Join(
		Errorf("max_age", "must be at least 10s"),
		fmt.Errorf("check target: %w", Errorf("target.port", "must not be 0")),
		Errorf("rule[1].name", "must not be empty"),
		Errorf("retries", "defaulted, so absent from the file"),
		errors.New("no path at all"),
	))
	diags := sample.Diagnostics(body, errs)
	want := []struct {
		line, col int
		detail    string
	}{
		{3, 11, "max_age: must be at least 10s"},
		{6, 10, "target.port: check target: target.port: must not be 0"},
		{9, 15, "rule[1].name: must not be empty"},
		{1, 13, "retries: defaulted"}, // falls back to the block's opening brace
		{1, 13, "no path at all"},
	}
	if len(diags) != len(want) {
		t.Fatalf("%d diagnostics, want %d: %s", len(diags), len(want), diags)
	}
	for i, w := range want {
		d := diags[i]
		if d.Subject.Start.Line != w.line || d.Subject.Start.Column != w.col || !strings.HasPrefix(d.Detail, w.detail) {
			t.Errorf("diag %d: %s at %d,%d; want %q at %d,%d", i, d.Detail, d.Subject.Start.Line, d.Subject.Start.Column, w.detail, w.line, w.col)
		}
	}
}
