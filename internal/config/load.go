package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// File names of the configuration layout.
const (
	ClusterFileName = "cluster.hcl"
	ModuleFileName  = "module.hcl"
	ModulesDirName  = "modules"
)

// PluginKind is the kind of plugin a block configures.
type PluginKind string

const (
	PluginChecker PluginKind = "checker"
	PluginVIP     PluginKind = "vip"
	PluginApp     PluginKind = "app"
)

// ErrUnknownPlugin is returned by a PluginSchemas that has no such plugin.
var ErrUnknownPlugin = errors.New("unknown plugin")

// PluginSchemas gives the configuration schema each plugin declares (its
// base service's config spec, Nomad's hclspec approach), so validation can
// check plugin-specific settings at their line.
type PluginSchemas interface {
	// ConfigSpec returns the spec of the named plugin's settings; nil when
	// it takes none. An error wrapping ErrUnknownPlugin means there is no
	// such plugin.
	ConfigSpec(kind PluginKind, name string) (hcldec.Spec, error)
}

// Options tune Load and Validate.
type Options struct {
	// ClusterFile is the cluster to validate modules against (the CLI's
	// --cluster), used unless a cluster file is among the paths.
	ClusterFile string
	// DefaultClusterFile is tried last, if it exists (the CLI passes
	// /etc/halo/cluster.hcl or its --config-dir equivalent).
	DefaultClusterFile string
	// Plugins, when set, validates plugin-specific settings; otherwise only
	// the names of plugins that are not built in draw a warning.
	Plugins PluginSchemas
}

// Config is a loaded cluster and its modules.
type Config struct {
	Cluster *Cluster // nil when none was found or it could not be decoded
	Modules []*Module
	files   map[string]*hcl.File
}

// Files maps every parsed file name to its content, for
// WriteDiagnosticsDetailed's source snippets.
func (c *Config) Files() map[string]*hcl.File { return c.files }

// Module returns the loaded module with that name, or nil.
func (c *Config) Module(name string) *Module {
	for _, m := range c.Modules {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Validate is Load for callers that only want the verdict, such as
// `halo validate`: the configuration is valid when the result has no error.
func Validate(opts Options, paths ...string) hcl.Diagnostics {
	_, diags := Load(opts, paths...)
	return diags
}

// Load reads and checks a cluster and its modules. Each path may be:
//   - a cluster file (any file whose top-level block is cluster),
//   - a module file,
//   - a module directory (holding module.hcl),
//   - a modules directory (holding <name>/module.hcl),
//   - a configuration directory (holding cluster.hcl and/or
//     modules/<name>/module.hcl), such as /etc/halo.
//
// Modules are checked against one cluster, the first found of: a cluster
// file named in paths, opts.ClusterFile, a cluster.hcl in a directory of
// paths, opts.DefaultClusterFile. Checks between modules (names, ids,
// ports, directories, VIPs) cover every module given.
//
// Every problem is reported, sorted by file and position; the returned
// Config holds whatever could be decoded, with defaults applied.
func Load(opts Options, paths ...string) (*Config, hcl.Diagnostics) {
	l := &loader{parser: hclparse.NewParser(), opts: &opts, seen: map[string]bool{}}
	for _, p := range paths {
		l.addPath(p)
	}
	cfg := &Config{}
	cfg.Cluster = l.loadCluster()
	for _, path := range l.moduleFiles {
		f := l.parse(path)
		if f == nil {
			continue
		}
		if m := decodeModuleFile(&l.d, f, path); m != nil {
			applyModuleDefaults(m, cfg.Cluster)
			checkModule(&l.d, m, cfg.Cluster, l.opts)
			cfg.Modules = append(cfg.Modules, m)
		}
	}
	if len(l.moduleFiles) > 0 && cfg.Cluster == nil && !l.clusterFailed {
		l.d.list = append(l.d.list, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No cluster file",
			Detail:   "Modules are checked against the cluster they run on: pass --cluster FILE, or validate a directory that holds cluster.hcl.",
		})
	}
	l.d.add(CheckModules(cfg.Cluster, cfg.Modules))
	cfg.files = l.parser.Files()
	sortDiagnostics(l.d.list)
	return cfg, l.d.list
}

type loader struct {
	parser        *hclparse.Parser
	opts          *Options
	d             diags
	seen          map[string]bool
	clusterFiles  []string // named in paths
	dirClusters   []string // found in directories of paths
	moduleFiles   []string
	clusterFailed bool // a cluster file was found but could not be decoded
}

func (l *loader) fail(format string, args ...any) {
	l.d.list = append(l.d.list, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Cannot read configuration",
		Detail:   fmt.Sprintf(format, args...),
	})
}

func (l *loader) addPath(p string) {
	st, err := os.Stat(p)
	if err != nil {
		l.fail("%v.", err)
		return
	}
	if !st.IsDir() {
		l.addFile(p)
		return
	}
	found := false
	if exists(filepath.Join(p, ModuleFileName)) {
		l.addModule(filepath.Join(p, ModuleFileName))
		found = true
	}
	if c := filepath.Join(p, ClusterFileName); exists(c) {
		l.dirClusters = append(l.dirClusters, c)
		found = true
	}
	for _, pattern := range []string{
		filepath.Join(p, "*", ModuleFileName),
		filepath.Join(p, ModulesDirName, "*", ModuleFileName),
	} {
		matches, _ := filepath.Glob(pattern) // the pattern is well-formed
		sort.Strings(matches)
		for _, m := range matches {
			l.addModule(m)
			found = true
		}
	}
	if !found {
		l.fail("%s holds no %s, no %s and no <module>/%s.", p, ClusterFileName, ModuleFileName, ModuleFileName)
	}
}

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// addFile classifies a file named in paths by its top-level block.
func (l *loader) addFile(p string) {
	f := l.parse(p)
	if f == nil {
		return
	}
	content, _, _ := f.Body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "cluster", LabelNames: []string{"name"}},
		{Type: "module", LabelNames: []string{"name"}},
	}})
	isCluster, isModule := false, false
	for _, b := range content.Blocks {
		isCluster = isCluster || b.Type == "cluster"
		isModule = isModule || b.Type == "module"
	}
	switch {
	case isCluster && isModule:
		l.d.errorf(content.Blocks[0].DefRange, "Mixed file", "%s holds both a cluster and a module block; keep the cluster in %s and each module in its own %s.", p, ClusterFileName, ModuleFileName)
	case isCluster || (!isModule && filepath.Base(p) == ClusterFileName):
		l.clusterFiles = append(l.clusterFiles, p)
	default:
		l.addModule(p)
	}
}

func (l *loader) addModule(p string) {
	key := filepath.Clean(p)
	if l.seen[key] {
		return
	}
	l.seen[key] = true
	l.moduleFiles = append(l.moduleFiles, p)
}

// parse parses a file once (the parser caches by name), reporting syntax
// errors once.
func (l *loader) parse(p string) *hcl.File {
	if f, ok := l.parser.Files()[p]; ok {
		return f
	}
	f, ds := l.parser.ParseHCLFile(p)
	l.d.add(ds)
	if f == nil || f.Body == nil {
		return nil
	}
	return f
}

// loadCluster picks and decodes the cluster file (see Load for the order).
func (l *loader) loadCluster() *Cluster {
	candidates := l.clusterFiles
	if len(candidates) == 0 && l.opts.ClusterFile != "" {
		candidates = []string{l.opts.ClusterFile}
	}
	if len(candidates) == 0 {
		candidates = l.dirClusters
	}
	if len(candidates) == 0 && l.opts.DefaultClusterFile != "" && exists(l.opts.DefaultClusterFile) {
		candidates = []string{l.opts.DefaultClusterFile}
	}
	var chosen *Cluster
	for _, p := range candidates {
		if _, err := os.Stat(p); err != nil {
			l.fail("cluster file: %v.", err)
			l.clusterFailed = true
			continue
		}
		f := l.parse(p)
		if f == nil {
			l.clusterFailed = true
			continue
		}
		c, ds := decodeClusterFile(f, p)
		l.d.add(ds)
		if c == nil {
			l.clusterFailed = true
			continue
		}
		if chosen != nil {
			l.d.errorf(c.Range, "Several clusters", "Cluster %q would be checked along with cluster %q at %s; validate one cluster at a time.", c.Name, chosen.Name, posString(chosen.Range))
			continue
		}
		chosen = c
	}
	return chosen
}

// LoadCluster reads and checks one cluster file.
func LoadCluster(path string) (*Cluster, hcl.Diagnostics) {
	f, ds := hclparse.NewParser().ParseHCLFile(path)
	if f == nil || f.Body == nil {
		return nil, ds
	}
	c, more := decodeClusterFile(f, path)
	return c, append(ds, more...)
}

// ParseCluster checks cluster file content given in memory (the console's
// editor), as if read from filename.
func ParseCluster(src []byte, filename string) (*Cluster, hcl.Diagnostics) {
	f, ds := hclparse.NewParser().ParseHCL(src, filename)
	if f == nil || f.Body == nil {
		return nil, ds
	}
	c, more := decodeClusterFile(f, filename)
	return c, append(ds, more...)
}

// LoadModule reads one module file and checks it against cluster (nil to
// check the module on its own). Checks against other modules are
// CheckModules'.
func LoadModule(path string, cluster *Cluster) (*Module, hcl.Diagnostics) {
	f, ds := hclparse.NewParser().ParseHCLFile(path)
	if f == nil || f.Body == nil {
		return nil, ds
	}
	return finishModule(f, path, cluster, nil, ds)
}

// ParseModule checks module file content given in memory (the console's
// editor, fuzzing), as if read from filename: the scripts directory is
// looked for next to filename.
func ParseModule(src []byte, filename string, cluster *Cluster, opts *Options) (*Module, hcl.Diagnostics) {
	f, ds := hclparse.NewParser().ParseHCL(src, filename)
	if f == nil || f.Body == nil {
		return nil, ds
	}
	return finishModule(f, filename, cluster, opts, ds)
}

func finishModule(f *hcl.File, filename string, cluster *Cluster, opts *Options, parsed hcl.Diagnostics) (*Module, hcl.Diagnostics) {
	d := &diags{list: parsed}
	m := decodeModuleFile(d, f, filename)
	if m != nil {
		applyModuleDefaults(m, cluster)
		checkModule(d, m, cluster, opts)
		// Its own ports against each other and the cluster's.
		d.add(CheckModules(cluster, []*Module{m}))
	}
	sortDiagnostics(d.list)
	return m, d.list
}
