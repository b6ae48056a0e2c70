package apply

import (
	"container/list"

	"golang.org/x/sys/unix"
)

// key names a cached descriptor: a path in one replicated directory.
type key struct {
	dir  uint16
	path string
}

// entry is an open descriptor of a file or directory of the tree. refs
// counts its holders (the cache, an operation using it, a pending sync);
// the descriptor closes with the last one, so a sync recorded before a
// rename or an eviction still reaches the right inode.
type entry struct {
	key  key
	fd   int
	dir  bool
	refs int           // guarded by Tree.mu
	elem *list.Element // position in the cache's LRU list; nil once dropped
}

// releaseLocked drops one reference to e. t.mu is held.
func (t *Tree) releaseLocked(e *entry) {
	e.refs--
	if e.refs == 0 {
		unix.Close(e.fd)
		e.fd = -1
	}
}

func (t *Tree) release(e *entry) {
	t.mu.Lock()
	t.releaseLocked(e)
	t.mu.Unlock()
}

func (t *Tree) hold(e *entry) {
	t.mu.Lock()
	e.refs++
	t.mu.Unlock()
}

// fdCache is a small LRU of open descriptors by path. Its map and list are
// used under Tree.applyMu only.
type fdCache struct {
	t   *Tree
	max int
	m   map[key]*entry
	lru list.List // front: most recently used
}

func newFDCache(t *Tree, max int) *fdCache {
	return &fdCache{t: t, max: max, m: map[key]*entry{}}
}

// get returns the cached entry for k with a reference for the caller, or
// nil.
func (c *fdCache) get(k key) *entry {
	e := c.m[k]
	if e == nil {
		return nil
	}
	c.lru.MoveToFront(e.elem)
	c.t.hold(e)
	return e
}

// add caches a newly opened descriptor and returns its entry with a
// reference for the caller.
func (c *fdCache) add(k key, fd int, dir bool) *entry {
	if old := c.m[k]; old != nil {
		c.drop(old)
	}
	e := &entry{key: k, fd: fd, dir: dir, refs: 2}
	e.elem = c.lru.PushFront(e)
	c.m[k] = e
	for c.lru.Len() > c.max {
		c.drop(c.lru.Back().Value.(*entry))
	}
	return e
}

func (c *fdCache) drop(e *entry) {
	c.lru.Remove(e.elem)
	e.elem = nil
	delete(c.m, e.key)
	c.t.release(e)
}

// dropUnder forgets p and every path under it in one directory.
func (c *fdCache) dropUnder(dir uint16, p string) {
	for k, e := range c.m {
		if k.dir == dir && under(k.path, p) {
			c.drop(e)
		}
	}
}

func (c *fdCache) clear() {
	for _, e := range c.m {
		c.drop(e)
	}
}
