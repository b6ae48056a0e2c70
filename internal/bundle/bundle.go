// Package bundle reads and writes module bundles: `<name>.halo`, a gzip'd
// tar of a module directory (module.hcl, scripts/*, README*) led by a
// manifest that lists every file with its SHA-256 and the module's
// configuration checksum.
//
// The configuration checksum covers what decides the module's behaviour
// (module.hcl and the scripts, with their executable bit), not the README
// nor file times or archive order: two nodes with the same checksum run the
// same configuration, whichever way the files got there. DirChecksum
// computes it on an installed directory with the same rules.
//
// Reading is strict: a bundle comes over the network, so anything but
// regular files and directories at clean relative paths, any file the
// manifest does not list (or a listed one missing), and any hash mismatch
// is refused with the file named.
package bundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Limits of a bundle. A module is a text file and a few scripts: these
// leave ample room while bounding what a peer can make an agent hold.
const (
	MaxFileSize  = 4 << 20
	MaxTotalSize = 16 << 20
	MaxFiles     = 256
)

// Names inside a bundle.
const (
	ManifestName = "MANIFEST.json"
	ModuleFile   = "module.hcl"
	ScriptsDir   = "scripts"
	Extension    = ".halo"
	formatV1     = 1
)

// File is one file of a bundle.
type File struct {
	Path   string `json:"path"` // slash-separated, relative to the module directory
	Exec   bool   `json:"exec"` // installed 0755, else 0644
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Data   []byte `json:"-"`
}

// Manifest leads every bundle.
type Manifest struct {
	Format   int    `json:"format"`
	Module   string `json:"module"`
	Checksum string `json:"checksum"` // configuration checksum, "sha256:<hex>"
	Files    []File `json:"files"`
}

// Bundle is a decoded, verified bundle.
type Bundle struct {
	Manifest Manifest
}

// Checksum is the bundle's configuration checksum.
func (b *Bundle) Checksum() string { return b.Manifest.Checksum }

// Module is the module's name.
func (b *Bundle) Module() string { return b.Manifest.Module }

// File returns the file at p, or nil.
func (b *Bundle) File(p string) *File {
	for i := range b.Manifest.Files {
		if b.Manifest.Files[i].Path == p {
			return &b.Manifest.Files[i]
		}
	}
	return nil
}

// inConfig reports whether a file takes part in the configuration
// checksum: module.hcl and everything under scripts/.
func inConfig(p string) bool {
	return p == ModuleFile || strings.HasPrefix(p, ScriptsDir+"/")
}

// included reports whether a module directory's file belongs in a bundle.
func included(p string) bool {
	return inConfig(p) || (!strings.Contains(p, "/") && strings.HasPrefix(p, "README"))
}

// ConfigChecksum hashes the configuration files among files: path,
// executable bit and content hash of each, in path order.
func ConfigChecksum(files []File) string {
	sorted := make([]File, 0, len(files))
	for _, f := range files {
		if inConfig(f.Path) {
			sorted = append(sorted, f)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	h := sha256.New()
	for _, f := range sorted {
		x := "-"
		if f.Exec {
			x = "x"
		}
		// NUL cannot appear in a path: the records cannot be confused.
		fmt.Fprintf(h, "%s\x00%s\x00%s\n", f.Path, x, f.SHA256)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ReadDir reads the bundle files of a module directory: module.hcl,
// README* and everything under scripts/. Symbolic links and special files
// are refused rather than followed: what is installed must be what was
// reviewed.
func ReadDir(dir string) ([]File, error) {
	var files []File
	total := int64(0)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			if rel != ScriptsDir && !strings.HasPrefix(rel, ScriptsDir+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !included(rel) {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (%s); bundles hold regular files only", rel, d.Type())
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxFileSize {
			return fmt.Errorf("%s: %d bytes, more than the %d a bundle file may hold", rel, info.Size(), MaxFileSize)
		}
		if total += info.Size(); total > MaxTotalSize {
			return fmt.Errorf("%s: the module's files exceed %d bytes", rel, MaxTotalSize)
		}
		if len(files) == MaxFiles {
			return fmt.Errorf("%s: more than %d files", rel, MaxFiles)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, File{Path: rel, Exec: info.Mode()&0o111 != 0, Size: int64(len(data)), SHA256: sum(data), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read module directory %s: %w", dir, err)
	}
	if !hasFile(files, ModuleFile) {
		return nil, fmt.Errorf("read module directory %s: no %s", dir, ModuleFile)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

func hasFile(files []File, p string) bool {
	for _, f := range files {
		if f.Path == p {
			return true
		}
	}
	return false
}

// DirChecksum is the configuration checksum of an installed module
// directory.
func DirChecksum(dir string) (string, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return "", err
	}
	return ConfigChecksum(files), nil
}

// Write writes the bundle of module's files to w. The archive is
// reproducible: fixed times, owners and order.
func Write(w io.Writer, module string, files []File) error {
	m := Manifest{Format: formatV1, Module: module, Checksum: ConfigChecksum(files), Files: files}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	put := func(name string, mode int64, data []byte) error {
		hdr := &tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		return nil
	}
	if err := put(ManifestName, 0o644, mb); err != nil {
		return err
	}
	for _, f := range m.Files {
		mode := int64(0o644)
		if f.Exec {
			mode = 0o755
		}
		if err := put(f.Path, mode, f.Data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish tar: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("finish gzip: %w", err)
	}
	return nil
}

// Pack is ReadDir then Write, into memory.
func Pack(dir, module string) ([]byte, error) {
	files, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := Write(&buf, module, files); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrInvalid wraps every reason Read refuses a bundle.
var ErrInvalid = errors.New("invalid bundle")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// cleanPath checks a tar entry name: relative, clean, without "..".
func cleanPath(name string) (string, error) {
	n := strings.TrimSuffix(name, "/")
	switch {
	case n == "" || strings.HasPrefix(n, "/") || strings.Contains(n, "\\"):
		return "", invalid("%q: absolute or empty path", name)
	case path.Clean(n) != n:
		return "", invalid("%q: path is not clean", name)
	}
	for _, el := range strings.Split(n, "/") {
		if el == ".." || el == "." {
			return "", invalid("%q: path leaves the module directory", name)
		}
	}
	return n, nil
}

// Read decodes and verifies a bundle. The returned bundle's files carry
// their content.
func Read(r io.Reader) (*Bundle, error) {
	// The compressed size is bounded by the caller (the API's body
	// limit); the decompressed size here, so a gzip bomb stops early.
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, invalid("not a gzip stream: %v", err)
	}
	// Whole, so that the gzip checksum is verified before anything in it
	// is believed: a damaged bundle reads as damaged, not as a confusing
	// error about whatever the damage turned its content into.
	const limit = MaxTotalSize + MaxFiles*4096 + 1<<20 // files, tar headers, manifest
	raw, err := io.ReadAll(io.LimitReader(gz, limit+1))
	if err != nil {
		return nil, invalid("corrupted bundle: %v", err)
	}
	if len(raw) > limit {
		return nil, invalid("more than %d bytes once decompressed", limit)
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	var man *Manifest
	got := map[string]*File{}
	total := int64(0)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, invalid("read tar: %v", err)
		}
		name, err := cleanPath(hdr.Name)
		if err != nil {
			return nil, err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, invalid("%s: entry type %q is not allowed (regular files only: no links or devices)", name, string(hdr.Typeflag))
		}
		if hdr.Size > MaxFileSize {
			return nil, invalid("%s: %d bytes, more than the %d a bundle file may hold", name, hdr.Size, MaxFileSize)
		}
		if total += hdr.Size; total > MaxTotalSize {
			return nil, invalid("%s: the bundle's files exceed %d bytes", name, MaxTotalSize)
		}
		data, err := io.ReadAll(io.LimitReader(tr, MaxFileSize+1))
		if err != nil {
			return nil, invalid("%s: read: %v", name, err)
		}
		if name == ManifestName {
			if man != nil {
				return nil, invalid("%s appears twice", ManifestName)
			}
			man = &Manifest{}
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(man); err != nil {
				return nil, invalid("%s: %v", ManifestName, err)
			}
			continue
		}
		if _, dup := got[name]; dup {
			return nil, invalid("%s appears twice", name)
		}
		if len(got) == MaxFiles {
			return nil, invalid("more than %d files", MaxFiles)
		}
		got[name] = &File{Path: name, Exec: hdr.Mode&0o111 != 0, Size: int64(len(data)), SHA256: sum(data), Data: data}
	}
	if man == nil {
		return nil, invalid("no %s", ManifestName)
	}
	if man.Format != formatV1 {
		return nil, invalid("%s: format %d is not supported (this halo reads format %d)", ManifestName, man.Format, formatV1)
	}
	if err := checkName(man.Module); err != nil {
		return nil, invalid("%s: %v", ManifestName, err)
	}
	listed := map[string]bool{}
	for i := range man.Files {
		mf := &man.Files[i]
		p, err := cleanPath(mf.Path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ManifestName, err)
		}
		if !included(p) {
			return nil, invalid("%s: %s is not a module file (module.hcl, README*, scripts/*)", ManifestName, p)
		}
		if listed[p] {
			return nil, invalid("%s lists %s twice", ManifestName, p)
		}
		listed[p] = true
		f, ok := got[p]
		if !ok {
			return nil, invalid("%s: listed in %s but missing from the bundle", p, ManifestName)
		}
		if f.SHA256 != mf.SHA256 || f.Size != mf.Size {
			return nil, invalid("%s: content does not match its checksum in %s (corrupted bundle)", p, ManifestName)
		}
		if f.Exec != mf.Exec {
			return nil, invalid("%s: mode does not match %s", p, ManifestName)
		}
		mf.Data = f.Data
	}
	for p := range got {
		if !listed[p] {
			return nil, invalid("%s: in the bundle but not listed in %s", p, ManifestName)
		}
	}
	if !listed[ModuleFile] {
		return nil, invalid("no %s", ModuleFile)
	}
	if want := ConfigChecksum(man.Files); man.Checksum != want {
		return nil, invalid("%s: configuration checksum %s does not match the files (%s)", ManifestName, man.Checksum, want)
	}
	sort.Slice(man.Files, func(i, j int) bool { return man.Files[i].Path < man.Files[j].Path })
	return &Bundle{Manifest: *man}, nil
}

// checkName accepts module names that are safe as a directory name; the
// configuration's own rules are checked when the module file is loaded.
func checkName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("module name %q: empty or longer than 64 characters", n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("module name %q: only letters, digits, '-' and '_' are allowed", n)
		}
	}
	if n[0] == '-' || n[0] == '_' {
		return fmt.Errorf("module name %q must start with a letter or digit", n)
	}
	return nil
}

// Extract writes the bundle's files under dir, which must not exist yet
// (the caller renames it into place once complete).
func (b *Bundle) Extract(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("extract bundle: %w", err)
	}
	for _, f := range b.Manifest.Files {
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("extract %s: %w", f.Path, err)
		}
		mode := os.FileMode(0o644)
		if f.Exec {
			mode = 0o755
		}
		// O_EXCL: a path written twice (impossible after Read) or through
		// a link would fail rather than write elsewhere.
		out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			return fmt.Errorf("extract %s: %w", f.Path, err)
		}
		_, werr := out.Write(f.Data)
		serr := out.Sync()
		cerr := out.Close()
		if err := errors.Join(werr, serr, cerr); err != nil {
			return fmt.Errorf("extract %s: %w", f.Path, err)
		}
		// The umask may have removed bits the bundle asks for.
		if err := os.Chmod(dst, mode); err != nil {
			return fmt.Errorf("extract %s: %w", f.Path, err)
		}
	}
	return nil
}
