// Package resync brings a replicated directory on the target node to the
// state of the same directory on the source node, and compares the two:
//
//   - Scan lists a tree (parallel walk, metadata, xattrs, hard-link
//     identity, optional whole-file hashes); Compare diffs two scans for
//     `halo verify`; an estimate session, a dry run of the resync the
//     journals allow (the incremental plan when both maps start at the
//     common generation, else a full comparison), tells `halo diff` what a
//     resync would send.
//   - RunSource and RunTarget are the two ends of a resync session:
//     incremental (from core/journal's Plan: only the zones either node
//     changed since their common generation) or full (both trees listed,
//     files compared by whole-file hash, then block by block; only
//     differing blocks travel). The target serves its tree and applies what
//     the source sends through an Applier (which journals every change, as
//     core/journal requires of a resync target).
//   - Quarantine copies files the target is about to lose into a dated
//     folder with a MANIFEST.json (split brain).
//
// # Session protocol
//
// One session runs over one or more connections that the caller opened
// (mutual TLS is the caller's business) and hands to both ends in the same
// order; the session closes them when it ends. This framing is the
// session's own: the live replication stream (package wire) is a
// different protocol on different connections. Every connection carries frames
//
//	uint32 LE  length L of type+payload (1 ≤ L ≤ maxFrame)
//	byte       type
//	payload    (L-1 bytes)
//	uint32 LE  CRC-32C (Castagnoli) of the type and payload
//
// and starts with a preamble (magic "HALORSY", protocol version, index of
// the connection, count of connections) checked by both ends, so
// connections handed in a different order or mixed between sessions are
// refused. A malformed, oversized or corrupt frame ends the session with an
// error; nothing the source sends can make the target touch a path outside
// its tree (op.Op.Validate and the Applier guard that).
//
// The target speaks first on connection 0: a hello with the request (full
// or incremental, the common generation, the target's zone map for an
// incremental resync, or a read-only request: verify or estimate). From
// then on the source drives: it sends requests on any connection and the
// target answers each connection's requests in order (no request ids:
// answers are FIFO per connection):
//
//	list      a subtree of the target (or one entry), with whole-file hashes
//	          if asked                       → entries…, end
//	hashes    block hashes of one target file → hashes
//	ops       a batch of op.Op to apply in order; no answer
//	barrier   → the errors of the ops applied on this connection since the
//	          previous barrier (op index and errno), once they are applied
//	progress  totals for the target's progress callback; no answer
//	pass      (every connection) a pass after the first begins: a full
//	          split-brain resync quarantines during the first pass only
//	done      the session's result → done (the quarantine folder)
//
// One file's operations always travel on one connection, so the target
// applies them in order; the phases of a pass (deletes, directories, file
// contents, hard links, directory metadata) are separated by barriers on
// every connection. A bandwidth cap applies to what the source writes on
// all connections together.
//
// # Incremental and full passes
//
// An incremental pass executes a journal.Plan phase by phase: stage, delete
// and unstage moves, then the items in parallel, then directory times. An
// Update item sends the planned ranges (re-read from the source when the
// item runs), sets the size and times, and compares the metadata with the
// target's when the plan says it changed. A Whole item synchronises the
// subtree at its path exactly as a full resync does (a full resync is the
// Whole item of the root): both sides list it with hashes, the target's
// entries the source lacks (or holds as another kind, or another hard-link
// structure) are deleted, missing ones created, files whose hashes differ
// compared block by block (the target sends block hashes, the source sends
// only the blocks whose hashes differ, skipping zero blocks past the
// target's end of file so holes stay holes), then ownership, xattrs, mode
// and times are set where they differ, directories last and deepest first.
//
// The executor tolerates a target that does not match the plan's
// expectations: an object to stage that is missing turns its destination
// into a Whole item, an Update item whose target entry is missing or of
// another kind becomes a Whole item. Sending a path whole is always
// correct, so a plan made from maps older than the trees (see below) still
// ends with identical trees.
//
// # Hard links
//
// The journal knows a link as the creation of its new name, so an
// incremental plan sends that name as a Whole item whose listing lacks the
// file's other names. A subtree synchronisation therefore leaves out the
// files it lists with fewer names than their link count: before the
// freeze their target paths are marked stale (the next pass takes them
// again), and the first pass on an unchanging source, after its items,
// finds every name of those inodes in the source tree, links them on the
// target to one of them and compares that file whole (relink.go). A write
// made through a name that no longer exists at that point was journaled
// under that name only: the other names get it from the whole comparison
// if their inode was noted, not otherwise (a name of a file written
// through it and removed before the resync: a full resync repairs it).
// Within a pass, a name is linked to its group's leader only if the
// leader's contents were read (not gone from the source meanwhile):
// otherwise the target object at the leader's path is not the source's
// file, and the name is left stale for the next pass.
//
// # Writes during a resync: the rule
//
// The application keeps writing on the source while a resync runs (the
// source is ALONE). The rule that keeps those writes from being lost or
// overtaken is the one of a virtual machine's live migration (pre-copy,
// then a short stop-and-copy):
//
//  1. Before a pass is planned, the source starts tracking its changes
//     (Changes.Track): a fresh zone map records every change applied to the
//     source tree from then on, including those of operations in flight
//     when tracking starts; the previous tracking ends at that instant.
//  2. The pass runs while the application writes. Each item reads the
//     source when it runs, so what it sends is at least as new as the plan,
//     possibly torn by concurrent writes; every such write is in the
//     tracking map.
//  3. The next pass is planned from the tracking map alone (with an empty
//     target map: the target changed nothing but what the resync wrote).
//  4. When a pass sent little (Options.FreezeBelow) or after
//     Options.MaxPasses, the source freezes the application's modifying
//     operations (Changes.Freeze waits for those in flight), runs the
//     final pass from the last tracking map, calls SourceConfig.Synced
//     while still frozen (the daemon marks the peer in sync: from then on
//     every write is replicated live before it returns), then thaws.
//
// Invariant: when pass k is planned, the target differs from the source
// at most where the maps pass k plans from record a change, or at a
// stale object (below). The first pass plans from both journals. Pass k
// makes every object it handles identical to the source as read, and every
// read is at least as new as the start of pass k's tracking, so what is
// left differs only where that tracking map records a change. The final
// pass runs on a frozen source, so after it the trees are identical, and
// every later write reaches the target through the live stream, which
// starts before any of them. No write is lost (each one is in some pass's
// map or in the live stream) and none is overtaken (no pass runs after the
// live stream starts, and within a pass one file's operations travel in
// order on one connection).
//
// Stale objects complete the invariant. A tracking map knows where the
// source's objects went, not what a pass failed to do to them: when the
// application renames or deletes an item's source (or a parent directory)
// between the plan and the read, or a directory vanishes while it is
// listed, the target object at that path is left as it is and remembered.
// The source follows it through the renames the next pass makes on the
// target (the plan moves the target's objects where the source's went)
// and sends it whole (block comparison) after that pass's other items; a
// delete drops it. The frozen pass cannot meet one.
//
// A pass's own partial updates rely on one more detail: an Update item
// first truncates the target to the size the source had when planned, so
// that bytes the source gains afterwards read as holes on both sides
// unless written (and then in the tracking map).
//
// Without Changes (SourceConfig.Changes nil) the source tree must not
// change during the session: one pass, no freeze (tests, offline copies,
// a source whose application is stopped).
//
// # Quarantine
//
// On a split-brain resync the target first copies what it is about to
// lose to <Request.Quarantine>/<UTC timestamp>/, relative paths kept, with
// MANIFEST.json (path, size, xxh3-128 hash, mtime, reason): for an
// incremental resync the files its own zone map says it changed since the
// common generation (before anything is overwritten), for a full resync
// (no common history) every file the resync modifies or deletes, each
// copied just before its first change. The folder's path is in the Result
// for the event log.
package resync
