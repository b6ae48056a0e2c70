package resync

import (
	"context"
	"errors"
	"fmt"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/halo-ha/halo/core/journal"
)

// inlineHashMax: files up to this size are hashed by the walker that finds
// them; larger ones after the walk, in segments spread over the workers
// (so two big files, or one, still use every core).
const inlineHashMax = 8 << 20

// segmentBlocks is how many blocks one hashing job of a large file reads.
const segmentBlocks = 32

// Scan lists the tree at root (see ScanOptions). Entries that vanish while
// the tree is walked are left out; any other error fails the scan.
func Scan(ctx context.Context, root string, opt ScanOptions) (*Tree, error) {
	if opt.BlockSize <= 0 {
		opt.BlockSize = DefaultBlockSize
	}
	if opt.Parallel <= 0 {
		opt.Parallel = max(8, 4*runtime.GOMAXPROCS(0))
	}
	if opt.Prefix != "" {
		if err := checkRel(opt.Prefix); err != nil {
			return nil, fmt.Errorf("scan %s: prefix: %w", root, err)
		}
	}
	rootFD, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("scan: open %s: %w", root, err)
	}
	defer unix.Close(rootFD)
	s := &scanner{ctx: ctx, root: root, rootFD: rootFD, opt: opt, excludes: excludeList(opt.Excludes)}
	if opt.Prefix == journal.DefaultStagingDir || isUnder(opt.Prefix, journal.DefaultStagingDir) {
		// Asked for explicitly: the resync's own staging directory.
		s.excludes = opt.Excludes
	}
	s.cond = sync.NewCond(&s.mu)
	t, err := s.run()
	if errors.Is(err, errPrefixGone) {
		return &Tree{Root: root}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", root, err)
	}
	return t, nil
}

// errPrefixGone: the scanned subtree vanished while listed (a tree in use
// changes): it is listed as nothing.
var errPrefixGone = errors.New("prefix vanished")

func gone(err error) bool {
	return err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP || err == unix.EXDEV
}

// excludeList adds the resync staging directory to the configured globs.
func excludeList(globs []string) []string {
	return append(slices.Clone(globs), journal.DefaultStagingDir)
}

// excluded applies the capture layer's rule to one path whose parents are
// known not to be excluded.
func excluded(globs []string, rel string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, rel); ok {
			return true
		}
	}
	return false
}

// excludedPath checks rel and each of its parents.
func excludedPath(globs []string, rel string) bool {
	for i := 0; i <= len(rel); i++ {
		if i == len(rel) || rel[i] == '/' {
			if excluded(globs, rel[:i]) {
				return true
			}
		}
	}
	return false
}

// checkRel accepts a clean relative slash path ("" is the root).
func checkRel(p string) error {
	if p == "" {
		return nil
	}
	if p == "." || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") || strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("%q is not a clean relative path", p)
	}
	return nil
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// openBeneath opens rel below the directory fd without following any
// symlink, so a concurrent rename cannot make a walker leave the tree.
func openBeneath(dirFD int, rel string, flags int) (int, error) {
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(dirFD, rel, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_CLOEXEC),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err == unix.EAGAIN || err == unix.EINTR {
			continue // a rename raced with the lookup
		}
		return fd, err
	}
}

type scanner struct {
	ctx      context.Context
	root     string
	rootFD   int
	opt      ScanOptions
	excludes []string

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []string // directories to read
	active  int      // workers reading a directory
	err     error
	stopped bool

	parts [][]Entry
	big   []bigFile
}

// bigFile is a file left for segment hashing: where its entry is.
type bigFile struct {
	part, idx int
	blocks    []Sum
	shrunk    atomic.Bool
}

// walker is one walking goroutine's buffers.
type walker struct {
	s        *scanner
	entries  []Entry
	vanished []string
	big      []int // indexes into entries
	dents    []byte
	xbuf     []byte
	buf      []byte
	wh       wholeHasher
}

func (s *scanner) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.stopped = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *scanner) run() (*Tree, error) {
	kind, err := s.prefixKind()
	if err != nil {
		return nil, err
	}
	switch {
	case kind == 0:
		return &Tree{Root: s.root}, nil
	case kind != journal.KindDir:
		// A single non-directory: listed from its parent like any child.
		w := s.newWalker()
		dir, name := path.Split(s.opt.Prefix)
		dfd, err := openBeneath(s.rootFD, strings.TrimSuffix(dir, "/"), unix.O_RDONLY|unix.O_DIRECTORY)
		if gone(err) {
			return nil, errPrefixGone
		}
		if err != nil {
			return nil, fmt.Errorf("open parent of %q: %w", s.opt.Prefix, err)
		}
		typ := uint8(unix.DT_UNKNOWN)
		if kind == journal.KindFile {
			typ = unix.DT_REG
		}
		err = w.child(dfd, s.opt.Prefix, len(s.opt.Prefix)-len(name), typ, nil)
		unix.Close(dfd)
		if err != nil {
			return nil, err
		}
		s.parts = [][]Entry{w.entries}
		if err := s.hashBig([][]int{w.big}); err != nil {
			return nil, err
		}
		return s.tree(), nil
	case s.opt.Single:
		w := s.newWalker()
		if err := w.dirEntry(s.opt.Prefix); err != nil {
			return nil, err
		}
		s.parts = [][]Entry{w.entries}
		return s.tree(), nil
	}
	s.queue = append(s.queue, s.opt.Prefix)
	walkers := make([]*walker, s.opt.Parallel)
	var wg sync.WaitGroup
	for i := range walkers {
		walkers[i] = s.newWalker()
		wg.Add(1)
		go func(w *walker) {
			defer wg.Done()
			w.loop()
		}(walkers[i])
	}
	stop := context.AfterFunc(s.ctx, func() { s.fail(s.ctx.Err()) })
	wg.Wait()
	stop()
	if s.err != nil {
		return nil, s.err
	}
	s.parts = make([][]Entry, len(walkers))
	bigs := make([][]int, len(walkers))
	var vanished []string
	for i, w := range walkers {
		s.parts[i], bigs[i] = w.entries, w.big
		vanished = append(vanished, w.vanished...)
	}
	if err := s.hashBig(bigs); err != nil {
		return nil, err
	}
	t := s.tree()
	t.vanished = vanished
	return t, nil
}

// prefixKind says what the prefix is (0: nothing, or excluded).
func (s *scanner) prefixKind() (journal.FileKind, error) {
	if s.opt.Prefix == "" {
		return journal.KindDir, nil
	}
	if excludedPath(s.excludes, s.opt.Prefix) {
		return 0, nil
	}
	dir, name := path.Split(s.opt.Prefix)
	dfd, err := openBeneath(s.rootFD, strings.TrimSuffix(dir, "/"), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		if gone(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("open parent of %q: %w", s.opt.Prefix, err)
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return 0, nil
		}
		return 0, fmt.Errorf("stat %q: %w", s.opt.Prefix, err)
	}
	return entryFromStat(s.opt.Prefix, &st).Kind, nil
}

func (s *scanner) newWalker() *walker {
	return &walker{s: s, dents: make([]byte, 32<<10), xbuf: make([]byte, 4<<10),
		buf: make([]byte, min(s.opt.BlockSize, inlineHashMax)), wh: newWholeHasher()}
}

// next returns a directory to read, or false when the walk is over.
func (s *scanner) next() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) == 0 && s.active > 0 && !s.stopped {
		s.cond.Wait()
	}
	if s.stopped || len(s.queue) == 0 {
		s.stopped = true
		s.cond.Broadcast()
		return "", false
	}
	d := s.queue[len(s.queue)-1]
	s.queue = s.queue[:len(s.queue)-1]
	s.active++
	return d, true
}

func (s *scanner) finished(subdirs []string) {
	s.mu.Lock()
	s.queue = append(s.queue, subdirs...)
	s.active--
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (w *walker) loop() {
	var subdirs []string
	for {
		dir, ok := w.s.next()
		if !ok {
			return
		}
		subdirs = subdirs[:0]
		err := w.readDir(dir, &subdirs)
		w.s.finished(subdirs)
		if err != nil {
			w.s.fail(err)
			return
		}
	}
}

// dirEntry lists directory rel itself (stat and xattrs through its fd).
func (w *walker) dirEntry(rel string) error {
	fd, err := openBeneath(w.s.rootFD, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if gone(err) {
		return errPrefixGone
	}
	if err != nil {
		return fmt.Errorf("open directory %q: %w", rel, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat directory %q: %w", rel, err)
	}
	e := entryFromStat(rel, &st)
	if e.Xattrs, err = w.xattrs(fd, ""); err != nil {
		return fmt.Errorf("list xattrs of %q: %w", rel, err)
	}
	w.entries = append(w.entries, e)
	return nil
}

// readDir lists directory rel: itself and its children, queueing the
// subdirectories.
func (w *walker) readDir(rel string, subdirs *[]string) error {
	if err := w.s.ctx.Err(); err != nil {
		return err
	}
	fd, err := openBeneath(w.s.rootFD, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if gone(err) {
		if rel == w.s.opt.Prefix {
			return errPrefixGone
		}
		// Renamed or deleted since its parent was read: its contents
		// are not listed, and whoever compares must know.
		w.vanished = append(w.vanished, rel)
		return nil
	}
	if err != nil {
		return fmt.Errorf("open directory %q: %w", rel, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat directory %q: %w", rel, err)
	}
	e := entryFromStat(rel, &st)
	if e.Xattrs, err = w.xattrs(fd, ""); err != nil {
		return fmt.Errorf("list xattrs of %q: %w", rel, err)
	}
	w.entries = append(w.entries, e)
	for {
		n, err := unix.Getdents(fd, w.dents)
		if err != nil {
			return fmt.Errorf("read directory %q: %w", rel, err)
		}
		if n == 0 {
			return nil
		}
		for b := w.dents[:n]; len(b) > 0; {
			reclen := int(*(*uint16)(unsafe.Pointer(&b[16])))
			typ := b[18]
			nameb := b[19:reclen]
			if i := indexZero(nameb); i >= 0 {
				nameb = nameb[:i]
			}
			b = b[reclen:]
			if len(nameb) == 0 || (nameb[0] == '.' && (len(nameb) == 1 || (len(nameb) == 2 && nameb[1] == '.'))) {
				continue
			}
			child := joinRel(rel, string(nameb))
			if excluded(w.s.excludes, child) {
				continue
			}
			if typ == unix.DT_DIR {
				*subdirs = append(*subdirs, child)
				continue
			}
			if err := w.child(fd, child, len(child)-len(nameb), typ, subdirs); err != nil {
				return err
			}
		}
	}
}

func indexZero(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// child lists a non-directory entry (or one of unknown type) of the open
// directory dirFD. nameAt is where its name starts in rel.
func (w *walker) child(dirFD int, rel string, nameAt int, typ uint8, subdirs *[]string) error {
	name := rel[nameAt:]
	if typ == unix.DT_REG && w.s.opt.Hash {
		fd, err := unix.Openat(dirFD, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == unix.EPERM {
			fd, err = unix.Openat(dirFD, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		}
		switch {
		case err == nil:
			defer unix.Close(fd)
			return w.openFile(fd, rel)
		case err == unix.ENOENT:
			return nil
		case err != unix.ELOOP:
			return fmt.Errorf("open %q: %w", rel, err)
		}
		// Replaced by a symlink meanwhile: list it as what it is now.
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirFD, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return fmt.Errorf("stat %q: %w", rel, err)
	}
	e := entryFromStat(rel, &st)
	if e.Kind == journal.KindDir {
		if subdirs != nil {
			*subdirs = append(*subdirs, rel) // the file system gave no type
		}
		return nil
	}
	if e.Kind == journal.KindSymlink {
		t, err := readlinkat(dirFD, name, w.xbuf)
		if err != nil {
			if err == unix.ENOENT {
				return nil
			}
			return fmt.Errorf("read link %q: %w", rel, err)
		}
		e.Target = t
	}
	var err error
	if e.Xattrs, err = w.xattrs(-1, w.s.root+"/"+rel); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return fmt.Errorf("list xattrs of %q: %w", rel, err)
	}
	w.entries = append(w.entries, e)
	if e.Kind == journal.KindFile && w.s.opt.Hash {
		// Typed DT_UNKNOWN and regular: hash it by path.
		return w.fill(&w.entries[len(w.entries)-1])
	}
	return nil
}

// openFile lists (and hashes) the regular file open as fd.
func (w *walker) openFile(fd int, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %q: %w", rel, err)
	}
	e := entryFromStat(rel, &st)
	var err error
	if e.Xattrs, err = w.xattrs(fd, ""); err != nil {
		return fmt.Errorf("list xattrs of %q: %w", rel, err)
	}
	if e.Kind == journal.KindFile && e.Size <= inlineHashMax {
		if err := w.hashFD(fd, &e); err != nil {
			return fmt.Errorf("hash %q: %w", rel, err)
		}
	} else if e.Kind == journal.KindFile {
		w.big = append(w.big, len(w.entries))
	}
	w.entries = append(w.entries, e)
	return nil
}

// fill hashes an entry listed without its file open (opening it by path).
func (w *walker) fill(e *Entry) error {
	if e.Kind != journal.KindFile || !w.s.opt.Hash {
		return nil
	}
	if e.Size > inlineHashMax {
		w.big = append(w.big, len(w.entries)-1)
		return nil
	}
	fd, err := openBeneath(w.s.rootFD, e.Path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME)
	if gone(err) {
		// Moved meanwhile (maybe with a parent): listed, not hashed.
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %q: %w", e.Path, err)
	}
	defer unix.Close(fd)
	if err := w.hashFD(fd, e); err != nil {
		return fmt.Errorf("hash %q: %w", e.Path, err)
	}
	return nil
}

// hashFD hashes e.Size bytes of fd (fewer if it ends first: the entry then
// says what was read).
func (w *walker) hashFD(fd int, e *Entry) error {
	w.wh.reset()
	bs := w.s.opt.BlockSize
	var blocks []Sum
	if w.s.opt.keepBlocks && e.Size > bs {
		blocks = make([]Sum, 0, (e.Size+bs-1)/bs)
	}
	var off int64
	for off < e.Size {
		want := min(bs, e.Size-off)
		if int64(len(w.buf)) < want {
			w.buf = make([]byte, want)
		}
		n, err := preadFull(fd, w.buf[:want], off)
		if n > 0 {
			b := w.wh.addBlock(w.buf[:n])
			if blocks != nil {
				blocks = append(blocks, b)
			}
			off += int64(n)
		}
		if err != nil {
			return err
		}
		if int64(n) < want {
			break // the file shrank
		}
	}
	e.Size, e.Hash, e.Hashed = off, w.wh.whole(), true
	if len(blocks) > 1 {
		e.blocks = blocks
	}
	return nil
}

// preadFull reads len(b) bytes at off, fewer at the end of the file.
func preadFull(fd int, b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Pread(fd, b[n:], off+int64(n))
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, nil
		}
		n += m
	}
	return n, nil
}

func readlinkat(dirFD int, name string, buf []byte) (string, error) {
	for size := max(len(buf), 256); ; size *= 2 {
		if size > len(buf) {
			buf = make([]byte, size)
		}
		n, err := unix.Readlinkat(dirFD, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
	}
}

// xattrs lists the extended attributes of fd (or of the path, without
// following a final symlink, when fd < 0), sorted by name.
func (w *walker) xattrs(fd int, p string) ([]Xattr, error) {
	return readXattrs(fd, p, &w.xbuf)
}

func readXattrs(fd int, p string, bufp *[]byte) ([]Xattr, error) {
	buf := *bufp
	var n int
	var err error
	for {
		if fd >= 0 {
			n, err = unix.Flistxattr(fd, buf)
		} else {
			n, err = unix.Llistxattr(p, buf)
		}
		if err == unix.ERANGE {
			buf = make([]byte, 2*len(buf))
			*bufp = buf
			continue
		}
		break
	}
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil, nil
	}
	if err != nil || n == 0 {
		return nil, err
	}
	names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	out := make([]Xattr, 0, len(names))
	for _, name := range names {
		v, err := getXattr(fd, p, name)
		if err == unix.ENODATA {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", name, err)
		}
		out = append(out, Xattr{Name: name, Value: v})
	}
	slices.SortFunc(out, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func getXattr(fd int, p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		var n int
		var err error
		if fd >= 0 {
			n, err = unix.Fgetxattr(fd, name, buf)
		} else {
			n, err = unix.Lgetxattr(p, name, buf)
		}
		if err == unix.ERANGE {
			buf = make([]byte, 2*len(buf))
			if len(buf) > 1<<20 {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n:n], nil
	}
}

func entryFromStat(rel string, st *unix.Stat_t) Entry {
	e := Entry{
		Path: rel, Mode: st.Mode, UID: st.Uid, GID: st.Gid, Nlink: uint32(st.Nlink),
		Atime: st.Atim.Nano(), Mtime: st.Mtim.Nano(), Dev: st.Dev, Ino: st.Ino,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Kind, e.Size = journal.KindFile, st.Size
	case unix.S_IFDIR:
		e.Kind = journal.KindDir
	case unix.S_IFLNK:
		e.Kind = journal.KindSymlink
	default:
		e.Kind, e.Rdev = journal.KindOther, st.Rdev
	}
	return e
}

// hashBig hashes the files left for later, in segments of segmentBlocks
// blocks spread over the workers. A file that shrinks meanwhile is left
// unhashed (it is being written: whoever compares it must read it again).
func (s *scanner) hashBig(bigs [][]int) error {
	type segment struct {
		f     *bigFile
		first int64 // block index
	}
	var files []*bigFile
	var segs []segment
	for part, idxs := range bigs {
		for _, i := range idxs {
			e := &s.parts[part][i]
			nb := (e.Size + s.opt.BlockSize - 1) / s.opt.BlockSize
			f := &bigFile{part: part, idx: i, blocks: make([]Sum, nb)}
			files = append(files, f)
			for b := int64(0); b < nb; b += segmentBlocks {
				segs = append(segs, segment{f, b})
			}
		}
	}
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range min(s.opt.Parallel, len(segs)) {
		wg.Go(func() {
			buf := make([]byte, s.opt.BlockSize)
			for {
				k := int(next.Add(1) - 1)
				if k >= len(segs) || s.ctx.Err() != nil {
					return
				}
				if err := s.hashSegment(segs[k].f, segs[k].first, buf); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}
	for _, f := range files {
		if !f.shrunk.Load() {
			e := &s.parts[f.part][f.idx]
			e.Hash, e.Hashed = wholeSum(f.blocks), true
			if s.opt.keepBlocks {
				e.blocks = f.blocks
			}
		}
	}
	return nil
}

func (s *scanner) hashSegment(f *bigFile, first int64, buf []byte) error {
	e := &s.parts[f.part][f.idx]
	fd, err := openBeneath(s.rootFD, e.Path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME)
	if err != nil {
		if err == unix.ENOENT {
			f.shrunk.Store(true)
			return nil
		}
		return fmt.Errorf("open %q: %w", e.Path, err)
	}
	defer unix.Close(fd)
	last := min(first+segmentBlocks, int64(len(f.blocks)))
	for b := first; b < last; b++ {
		off := b * s.opt.BlockSize
		want := min(s.opt.BlockSize, e.Size-off)
		n, err := preadFull(fd, buf[:want], off)
		if err != nil {
			return fmt.Errorf("read %q: %w", e.Path, err)
		}
		if int64(n) < want {
			f.shrunk.Store(true)
			return nil
		}
		f.blocks[b] = blockSum(buf[:n])
	}
	return nil
}

// tree merges the walkers' entries in path order.
func (s *scanner) tree() *Tree {
	n := 0
	for _, p := range s.parts {
		n += len(p)
	}
	t := &Tree{Root: s.root, Entries: make([]Entry, 0, n)}
	for _, p := range s.parts {
		t.Entries = append(t.Entries, p...)
	}
	s.parts = nil
	slices.SortFunc(t.Entries, func(a, b Entry) int { return journal.ComparePaths(a.Path, b.Path) })
	for i := range t.Entries {
		if t.Entries[i].Kind == journal.KindFile {
			t.Files++
			t.Bytes += t.Entries[i].Size
		}
	}
	return t
}

// isUnder reports whether p lies strictly below dir ("" holds everything).
func isUnder(p, dir string) bool {
	if dir == "" {
		return p != ""
	}
	return len(p) > len(dir) && strings.HasPrefix(p, dir) && p[len(dir)] == '/'
}
