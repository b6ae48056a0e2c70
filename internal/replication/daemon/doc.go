// Package daemon is halo's replication process: one per mirror module
// with replicated directories (`halo replicate --module M`), started and
// supervised by the agent but independent of it, so that an agent restart
// never interrupts the applications' writes.
//
// # Process
//
// The agent starts the daemon in its own session (setsid): a signal to the
// agent's process group or the agent's death does not reach it. The daemon
// serves a control socket at <data>/<module>/repl.sock and writes its pid
// to <data>/<module>/repl.pid. An agent that starts finds a running daemon
// by connecting to the socket (Hello names the module and the daemon's
// pid), and starts a new one only when nothing answers. A daemon asked
// to Shutdown, or sent SIGTERM, unmounts and exits (writes it was holding
// for the peer then fail: nobody decided they were safe).
//
// # Roles
//
// The agent forwards the mirror machine's replication actions:
//
//   - source: the daemon mounts the capture filesystem over every
//     replicated directory (after checking must_exist), journals every
//     change in <data>/<module>/journal.log before it reaches the disk,
//     and streams the changes to the peer's daemon over mutual TLS on the
//     module's replication network and port. A write waits for the peer
//     only while the peer is in sync (its resync finished and the stream
//     has not broken since); if the peer does not acknowledge for
//     stall_timeout, or the stream breaks while the peer was in sync, or
//     the module is PRIM here while the peer is not in sync (this daemon
//     restarted), the daemon reports a stall and keeps the writes blocked
//     until the agent decides (role none: the writes complete, their
//     zones stay journaled for the next resync). A resync source pauses
//     live replication, lets the resync's passes run while the
//     application writes (changes tracked beside the journal), freezes
//     the application for the final pass, checkpoints its journals and
//     goes live on the stream before thawing.
//   - journal: one file per replicated directory (journal.log,
//     journal.<n>.log), core/journal records, group-committed fdatasync
//     before the data changes, compacted to a snapshot as it grows. Nodes
//     in sync checkpoint every few seconds (both trees synced first, the
//     operations in flight marked again), so that an incremental resync
//     sends only what changed since.
//   - target: the daemon mounts the replicated directories read-only for
//     applications and applies what the source sends to the directories
//     underneath (opened before mounting), journaling what it applies.
//     Resync requests bring the tree to the source's state (incremental
//     from both journals since their common generation, or full by block
//     hashes), quarantining divergent files first when asked.
//   - none (also the role a daemon starts in): no peer. The directories
//     are captured and journaled as on a source: a node that serves alone
//     is never told a role (it has no peer), and whatever is written on a
//     node that is not a target must be known to the next resync.
//
// # Readiness
//
// Status.NotReady says why the replicated directories cannot be used on
// this node (a must_exist file missing: the data disk is not mounted; or
// the role asked for could not be taken). The agent passes it to the
// mirror machine (mirror.ReplReady), which then neither serves nor becomes
// SECOND on this node and says why in WAIT; the peer takes over if it
// can. The daemon takes the last role asked for again every few seconds
// while it does not hold it, so a disk mounted later is picked up.
//
// # Async mode
//
// In async mode an operation is done as soon as the stream queued it
// (package wire bounds what is queued to max_lag at the peer's apply
// rate). A source checkpoint therefore first waits for a stream barrier:
// the zones it forgets must be on the peer, or the incremental resync
// after a failover would not know the old primary's unreplicated writes.
// Status.DataLossPossible says when acknowledged writes are not on the
// peer yet.
//
// # Control protocol
//
// JSON over the Unix socket (package ctl, which the agent and the CLI
// import without the daemon's FUSE and resync code), one Request per line
// answered by one Response per line. A Subscribe request turns the connection into a stream of
// Event lines (ReplInSync, ReplStalled, ResyncProgress, ResyncDone,
// ResyncFailed) that the agent posts to the mirror machine. Events are not
// kept for an absent agent: an agent that starts again re-sends the role
// and resync the machine wants, and a running resync with the same
// parameters is adopted under the new resync ID.
//
// # Peer protocol
//
// Each daemon listens on its node's address of the replication network,
// at the module's replication port, whatever its role; TLS ALPN names what
// a connection carries: the replication stream (ALPNStream) or a connection
// of a resync session (ALPNResync: resyncs, and the read-only sessions of
// `halo verify` and `halo diff`, which the CLI asks of the local daemon;
// the peer's API is not involved). Only the module's other node's
// certificate is accepted.
package daemon
