package base

import (
	"strings"
	"testing"
)

func TestPluginInfoValidate(t *testing.T) {
	good := []PluginInfo{
		{Name: "tcp", Version: "1.0.0"},
		{Name: "file-check_2", Version: "0.10.3-rc.1+build.5"},
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	bad := []struct {
		info PluginInfo
		want string
	}{
		{PluginInfo{Name: "TCP", Version: "1.0.0"}, "plugin name"},
		{PluginInfo{Name: "1tcp", Version: "1.0.0"}, "plugin name"},
		{PluginInfo{Name: "", Version: "1.0.0"}, "plugin name"},
		{PluginInfo{Name: "tcp", Version: "v1.0.0"}, "plugin version"},
		{PluginInfo{Name: "tcp", Version: "1.0"}, "plugin version"},
		{PluginInfo{Name: "tcp", Version: "01.0.0"}, "plugin version"},
		{PluginInfo{Name: "tcp", Version: "1.0.0", Description: "two\nlines"}, "one line"},
	}
	for _, tt := range bad {
		if err := tt.info.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: Validate = %v, want an error about %s", tt.info, err, tt.want)
		}
	}
}

func TestInfoValidate(t *testing.T) {
	ok := Info{Name: "tcp", Kind: KindChecker, Version: "1.2.3", APIVersion: 1, SupportedAPIVersions: []int{1}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	noKind := ok
	noKind.Kind = ""
	if err := noKind.Validate(); err == nil {
		t.Error("Info without a kind accepted")
	}
	unlisted := ok
	unlisted.APIVersion = 2
	if err := unlisted.Validate(); err == nil {
		t.Error("Info whose API version is not among its supported versions accepted")
	}
}

func TestKindRoundTrip(t *testing.T) {
	for _, k := range []Kind{KindChecker, KindVIP, KindApp} {
		if got := KindFromProto(k.ToProto()); got != k {
			t.Errorf("%s became %s", k, got)
		}
	}
	if KindFromProto(Kind("other").ToProto()) != "" {
		t.Error("an unknown kind survived the wire")
	}
}
