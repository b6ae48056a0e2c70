package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeModule(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "web")
	must(t, os.MkdirAll(filepath.Join(dir, "scripts"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "module.hcl"), []byte("module \"web\" {}\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("what it protects\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "scripts", "start_prim"), []byte("#!/bin/sh\necho start\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "scripts", "stop_prim"), []byte("#!/bin/sh\necho stop\n"), 0o755))
	// Not part of a module: left out of the bundle.
	must(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	dir := writeModule(t)
	b, err := Pack(dir, "web")
	must(t, err)
	got, err := Read(bytes.NewReader(b))
	must(t, err)
	var paths []string
	for _, f := range got.Manifest.Files {
		paths = append(paths, f.Path)
	}
	if want := "README.md module.hcl scripts/start_prim scripts/stop_prim"; strings.Join(paths, " ") != want {
		t.Fatalf("files %v, want %s", paths, want)
	}
	sum, err := DirChecksum(dir)
	must(t, err)
	if got.Checksum() != sum {
		t.Fatalf("bundle checksum %s, directory checksum %s", got.Checksum(), sum)
	}
	out := filepath.Join(t.TempDir(), "web")
	must(t, got.Extract(out))
	st, err := os.Stat(filepath.Join(out, "scripts", "start_prim"))
	must(t, err)
	if st.Mode().Perm() != 0o755 {
		t.Fatalf("start_prim extracted with mode %v", st.Mode())
	}
	again, err := DirChecksum(out)
	must(t, err)
	if again != sum {
		t.Fatalf("extracted checksum %s, want %s", again, sum)
	}
	// Reproducible: same files, same bytes.
	b2, err := Pack(dir, "web")
	must(t, err)
	if !bytes.Equal(b, b2) {
		t.Fatal("packing twice gave different bundles")
	}
}

func TestChecksumRules(t *testing.T) {
	dir := writeModule(t)
	base, err := DirChecksum(dir)
	must(t, err)
	// Times and the README do not count.
	must(t, os.Chtimes(filepath.Join(dir, "module.hcl"), time.Now(), time.Unix(1, 0)))
	must(t, os.WriteFile(filepath.Join(dir, "README.md"), []byte("other\n"), 0o644))
	if s, _ := DirChecksum(dir); s != base {
		t.Fatalf("checksum changed with times/README: %s vs %s", s, base)
	}
	// The exec bit and content do.
	must(t, os.Chmod(filepath.Join(dir, "scripts", "stop_prim"), 0o644))
	s1, _ := DirChecksum(dir)
	if s1 == base {
		t.Fatal("checksum ignores the executable bit")
	}
	must(t, os.Chmod(filepath.Join(dir, "scripts", "stop_prim"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "module.hcl"), []byte("module \"web\" { }\n"), 0o644))
	if s, _ := DirChecksum(dir); s == base {
		t.Fatal("checksum ignores module.hcl content")
	}
}

func TestSymlinkRefusedWhenPacking(t *testing.T) {
	dir := writeModule(t)
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "scripts", "start_second")))
	_, err := Pack(dir, "web")
	if err == nil || !strings.Contains(err.Error(), "scripts/start_second") {
		t.Fatalf("err = %v, want a refusal naming scripts/start_second", err)
	}
}

// entry is a raw tar entry for crafting bad bundles.
type entry struct {
	name string
	typ  byte
	mode int64
	data []byte
}

func craft(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: e.mode, Size: int64(len(e.data))}
		if typ == tar.TypeSymlink {
			hdr.Linkname, hdr.Size = "/etc/passwd", 0
		}
		if typ == tar.TypeChar {
			hdr.Size = 0
		}
		must(t, tw.WriteHeader(hdr))
		if hdr.Size > 0 {
			_, err := tw.Write(e.data)
			must(t, err)
		}
	}
	must(t, tw.Close())
	must(t, gz.Close())
	return buf.Bytes()
}

// validEntries is a good bundle as entries, to be altered by each case.
func validEntries(t *testing.T) []entry {
	files := []File{
		{Path: "module.hcl", Data: []byte("module \"web\" {}\n")},
		{Path: "scripts/start_prim", Exec: true, Data: []byte("#!/bin/sh\n")},
	}
	for i := range files {
		files[i].Size, files[i].SHA256 = int64(len(files[i].Data)), sum(files[i].Data)
	}
	m := Manifest{Format: formatV1, Module: "web", Checksum: ConfigChecksum(files), Files: files}
	mb, err := json.Marshal(m)
	must(t, err)
	return []entry{
		{name: ManifestName, mode: 0o644, data: mb},
		{name: "module.hcl", mode: 0o644, data: files[0].Data},
		{name: "scripts/start_prim", mode: 0o755, data: files[1].Data},
	}
}

func TestReadRefuses(t *testing.T) {
	good := craft(t, validEntries(t))
	if _, err := Read(bytes.NewReader(good)); err != nil {
		t.Fatalf("valid crafted bundle refused: %v", err)
	}
	corrupt := func() []byte {
		// Flip one byte of the module file's content inside the tar,
		// keeping gzip valid: the manifest hash must catch it.
		es := validEntries(t)
		es[1].data = bytes.Clone(es[1].data)
		es[1].data[3] ^= 0x20
		return craft(t, es)
	}
	cases := []struct {
		name string
		data func() []byte
		want string
	}{
		{"not gzip", func() []byte { return []byte("hello, not a bundle") }, "not a gzip stream"},
		{"truncated", func() []byte { return good[:len(good)/2] }, "invalid bundle"},
		{"gzip byte flipped", func() []byte {
			b := bytes.Clone(good)
			b[len(b)/2] ^= 0xff
			return b
		}, "corrupted bundle"},
		{"corrupted file", corrupt, "module.hcl: content does not match its checksum"},
		{"traversal", func() []byte {
			return craft(t, append(validEntries(t), entry{name: "scripts/../../evil", mode: 0o644, data: []byte("x")}))
		}, "not clean"},
		{"dotdot", func() []byte {
			return craft(t, append(validEntries(t), entry{name: "../evil", mode: 0o644, data: []byte("x")}))
		}, "leaves the module directory"},
		{"absolute", func() []byte {
			return craft(t, append(validEntries(t), entry{name: "/etc/cron.d/x", mode: 0o644, data: []byte("x")}))
		}, "absolute"},
		{"symlink", func() []byte {
			return craft(t, append(validEntries(t), entry{name: "scripts/stop_prim", typ: tar.TypeSymlink}))
		}, "scripts/stop_prim: entry type"},
		{"device", func() []byte {
			return craft(t, append(validEntries(t), entry{name: "scripts/dev", typ: tar.TypeChar}))
		}, "scripts/dev: entry type"},
		{"extra file", func() []byte {
			return craft(t, append(validEntries(t), entry{name: "scripts/stop_prim", mode: 0o755, data: []byte("#!/bin/sh\n")}))
		}, "scripts/stop_prim: in the bundle but not listed"},
		{"missing file", func() []byte { return craft(t, validEntries(t)[:2]) }, "scripts/start_prim: listed in MANIFEST.json but missing"},
		{"no manifest", func() []byte { return craft(t, validEntries(t)[1:]) }, "no MANIFEST.json"},
		{"mode changed", func() []byte {
			es := validEntries(t)
			es[2].mode = 0o644
			return craft(t, es)
		}, "scripts/start_prim: mode does not match"},
		{"oversize", func() []byte {
			return craft(t, append(validEntries(t), entry{name: "scripts/big", mode: 0o644, data: make([]byte, MaxFileSize+1)}))
		}, "scripts/big: 4194305 bytes"},
		{"checksum lies", func() []byte {
			es := validEntries(t)
			var m Manifest
			must(t, json.Unmarshal(es[0].data, &m))
			m.Checksum = "sha256:00"
			es[0].data, _ = json.Marshal(m)
			return craft(t, es)
		}, "configuration checksum sha256:00 does not match"},
		{"bad module name", func() []byte {
			es := validEntries(t)
			var m Manifest
			must(t, json.Unmarshal(es[0].data, &m))
			m.Module = "../x"
			es[0].data, _ = json.Marshal(m)
			return craft(t, es)
		}, "module name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(c.data()))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}
