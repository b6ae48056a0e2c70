package resync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
)

// ManifestName is the manifest file of a quarantine folder.
const ManifestName = "MANIFEST.json"

// Quarantine reasons.
const (
	ReasonChanged     = "changed on this node since the common generation"
	ReasonOverwritten = "differs from the source: overwritten by a full resync"
	ReasonDeleted     = "absent on the source: deleted by a full resync"
)

// Manifest describes a quarantine folder.
type Manifest struct {
	Created time.Time       `json:"created"`
	Tree    string          `json:"tree"` // the replicated directory the files came from
	Files   []ManifestEntry `json:"files"`
}

// ManifestEntry is one quarantined file.
type ManifestEntry struct {
	Path   string    `json:"path"` // relative to the tree and to the folder
	Size   int64     `json:"size"`
	Hash   string    `json:"hash"` // "xxh3-128:<hex>" of the content copied
	Mtime  time.Time `json:"mtime"`
	Reason string    `json:"reason"`
}

// quarantine copies files of a tree into <base>/<timestamp>/ before they
// are overwritten or deleted. The folder is created on the first copy.
type quarantine struct {
	root   string
	rootFD int
	base   string

	mu      sync.Mutex
	dir     string
	files   []ManifestEntry
	done    map[string]bool // copied already
	created map[string]bool // made by this session: nothing to keep
}

func newQuarantine(root string, rootFD int, base string) *quarantine {
	return &quarantine{root: root, rootFD: rootFD, base: base, done: map[string]bool{}, created: map[string]bool{}}
}

// folder creates the dated folder on first use.
func (q *quarantine) folder() (string, error) {
	if q.dir != "" {
		return q.dir, nil
	}
	stamp := time.Now().UTC().Format("20060102T150405.000Z")
	for i := 0; ; i++ {
		dir := filepath.Join(q.base, stamp)
		if i > 0 {
			dir = fmt.Sprintf("%s-%d", dir, i)
		}
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return "", fmt.Errorf("create quarantine folder: %w", err)
		}
		err := os.Mkdir(dir, 0o700)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("create quarantine folder: %w", err)
		}
		q.dir = dir
		return dir, nil
	}
}

// save copies rel (if it is a regular file this session did not make and
// has not copied yet).
func (q *quarantine) save(rel, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done[rel] || q.created[rel] {
		return nil
	}
	fd, err := openBeneath(q.rootFD, rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOATIME)
	if err != nil {
		if err == unix.ENOENT || err == unix.ELOOP || err == unix.ENOTDIR {
			return nil // nothing there, or not a file
		}
		return fmt.Errorf("quarantine %q: open: %w", rel, err)
	}
	src := os.NewFile(uintptr(fd), rel)
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("quarantine %q: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	mtime := time.Unix(0, st.Mtim.Nano())
	dir, err := q.folder()
	if err != nil {
		return err
	}
	dst := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("quarantine %q: %w", rel, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("quarantine %q: %w", rel, err)
	}
	h := xxh3.New128()
	n, err := io.Copy(io.MultiWriter(out, h), src)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("quarantine %q: copy: %w", rel, err)
	}
	// Keep what an administrator needs to put the file back as it was.
	_ = os.Chmod(dst, os.FileMode(st.Mode&0o777))
	_ = os.Lchown(dst, int(st.Uid), int(st.Gid))
	_ = os.Chtimes(dst, time.Unix(0, st.Atim.Nano()), mtime)
	sum := h.Sum128().Bytes()
	q.files = append(q.files, ManifestEntry{Path: rel, Size: n, Hash: "xxh3-128:" + Sum(sum).String(), Mtime: mtime.UTC(), Reason: reason})
	q.done[rel] = true
	return nil
}

// madeHere records a path the session created (a later change to it loses
// nothing of the target's).
func (q *quarantine) madeHere(rel string) {
	q.mu.Lock()
	q.created[rel] = true
	q.mu.Unlock()
}

// finish writes the manifest; it returns the folder ("" if nothing was
// copied) and the number of files.
func (q *quarantine) finish() (string, int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dir == "" {
		return "", 0, nil
	}
	sort.Slice(q.files, func(i, j int) bool { return q.files[i].Path < q.files[j].Path })
	m := Manifest{Created: time.Now().UTC(), Tree: q.root, Files: q.files}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", 0, fmt.Errorf("encode quarantine manifest: %w", err)
	}
	p := filepath.Join(q.dir, ManifestName)
	if err := writeFileSync(p, append(b, '\n')); err != nil {
		return "", 0, fmt.Errorf("write quarantine manifest: %w", err)
	}
	return q.dir, len(q.files), nil
}

func writeFileSync(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// saveChanged copies every file the target's zone map says it changed
// since the common generation: created, written, renamed or with new
// metadata, and every file below a directory it created.
func (q *quarantine) saveChanged(m *journal.ZoneMap, excludes []string) error {
	for _, e := range m.Entries() {
		if e.Gone || e.Path == "" || excludedPath(excludes, e.Path) {
			continue
		}
		var st unix.Stat_t
		if err := statBeneath(q.rootFD, e.Path, &st); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			return fmt.Errorf("quarantine %q: %w", e.Path, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if err := q.save(e.Path, ReasonChanged); err != nil {
				return err
			}
		case unix.S_IFDIR:
			if !e.New {
				continue
			}
			if err := q.saveTree(e.Path, excludes); err != nil {
				return err
			}
		}
	}
	return nil
}

// saveTree copies every regular file below dir.
func (q *quarantine) saveTree(dir string, excludes []string) error {
	t, err := Scan(context.Background(), q.root, ScanOptions{Prefix: dir, Excludes: excludes})
	if err != nil {
		return fmt.Errorf("quarantine %q: %w", dir, err)
	}
	for i := range t.Entries {
		if t.Entries[i].Kind == journal.KindFile {
			if err := q.save(t.Entries[i].Path, ReasonChanged); err != nil {
				return err
			}
		}
	}
	return nil
}

// statBeneath lstats rel below the directory fd without following
// symlinks on the way.
func statBeneath(rootFD int, rel string, st *unix.Stat_t) error {
	dir, name := splitRel(rel)
	dfd, err := openBeneath(rootFD, dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// splitRel splits a relative path into its parent ("" for the root) and
// its name ("." for the root itself).
func splitRel(rel string) (string, string) {
	if rel == "" {
		return "", "."
	}
	for i := len(rel) - 1; i >= 0; i-- {
		if rel[i] == '/' {
			return rel[:i], rel[i+1:]
		}
	}
	return "", rel
}
