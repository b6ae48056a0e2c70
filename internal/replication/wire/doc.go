// Package wire is the replication stream of one mirror module: the
// operations the primary's capture layer produces travel, in order, to the
// secondary, which applies them to its copy of the tree and acknowledges
// them. The caller supplies the connection (mutual TLS on the replication
// network in production: internal/pki's PeerServerConfig and ClientConfig);
// this package owns framing, ordering, pipelining, acknowledgements,
// liveness and stall detection.
//
// # Endpoints
//
// The primary runs a Sender (NewSender), which implements capture.Sink:
// Submit returns when the peer applied the operation (mode sync), when it
// is on the peer's disk (mode durable), or once it is queued while the
// peer lags by less than MaxLag (mode async); Sync returns when the
// operation is durable on the peer (sync and durable modes; async queues
// it like Submit). Many operations are in flight at once: operations
// submitted while a frame is being written are coalesced into the next
// frame (group commit), and acknowledgements release the waiters in
// sequence order. Because the stream is one ordered sequence, the peer
// applies one file's operations in the order they were submitted.
//
// The secondary runs Serve over a Target (an *apply.Tree in production).
// It reads frames, checks every one completely before applying anything
// from it, applies the operations in sequence order, acknowledges them as
// applied, and acknowledges them as durable once what they asked for is on
// disk: operations flagged durable (every operation in mode durable, Sync
// calls in mode sync) and every op.Fsync are made durable by one group
// flush per batch before the durable acknowledgement that covers them.
//
// # API
//
//	func NewSender(ctx context.Context, conn net.Conn, opts SenderOptions) (*Sender, error)
//	func (s *Sender) Submit(ctx context.Context, o op.Op) error   // capture.Sink
//	func (s *Sender) Sync(ctx context.Context, o op.Op) error     // capture.Sink
//	func (s *Sender) Barrier(ctx context.Context) error  // all submitted so far durable on the peer
//	func (s *Sender) Degrade(cause error)  // end the stream: waiters get ErrDegraded
//	func (s *Sender) Close() error
//	func (s *Sender) Done() <-chan struct{}
//	func (s *Sender) Err() error
//	func (s *Sender) Peer() Hello
//	func (s *Sender) Stats() Stats
//	func Serve(ctx context.Context, conn net.Conn, t Target, opts ReceiverOptions) error
//
// Codec, for tests and tools: AppendFrame, ReadFrame, AppendOp, DecodeOp.
//
// # Failure
//
// A frame that is malformed, truncated, oversized, of an unknown or
// misdirected type, with a bad checksum or out of sequence closes the
// connection: the side that saw it sends an Error frame with the reason
// (best effort), logs it and closes. A frame is applied only if it is
// entirely valid, so a damaged frame never changes the target. An
// operation the target fails to apply ends the stream the same way.
//
// Once a Sender's stream ends (connection lost, protocol error, peer
// error, Degrade, Close), every pending and later Submit, Sync and Barrier
// returns an error wrapping ErrDegraded and the cause: the peer is no
// longer in sync, the operation is journaled, the module continues alone
// and a resync brings the peer back. If the peer acknowledges nothing for
// StallTimeout while operations wait, the Sender calls OnStall and keeps
// the writes blocked: the daemon decides (Degrade releases them).
//
// Each connection is a new stream: sequence numbers start at 1 and nothing
// is replayed from an earlier connection (the journal and a resync cover
// what a broken stream may have lost).
//
// # Frames
//
// Every frame is a 24-byte header followed by its payload, integers big
// endian:
//
//	offset size field
//	     0    4 magic "HLRP"
//	     4    1 frame format version (1)
//	     5    1 type
//	     6    2 flags (none defined: must be 0)
//	     8    8 frame sequence number, per direction, 0 for the Hello,
//	            then +1 for each frame
//	    16    4 payload length, at most MaxPayload
//	    20    4 CRC-32C (Castagnoli) of bytes 0..19 and the payload
//
// Payloads use unsigned varints (minimal encodings only), signed zigzag
// varints, and byte strings as a varint length then the bytes; a payload
// must be consumed exactly.
//
//	Hello   (both ways)  protocol version, generation, dir count,
//	                     module, node
//	Ops     (to target)  first op seq, count ≥ 1, then count entries:
//	                     entry flags (1 byte: bit 0 = durable), op length,
//	                     op (see AppendOp)
//	Barrier (to target)  seq: takes one op sequence number; acknowledged
//	                     durable once the whole target is synced (syncfs)
//	Ack     (to source)  highest seq applied, highest seq durable
//	Ping    (to target)  id
//	Pong    (to source)  the Ping's id
//	Error   (both ways)  reason (at most 1 KiB); the sender closes after it
//
// "Durable up to D" means: every operation up to D that asked for
// durability (entry flag, op.Fsync, Barrier) is on disk. Operations that
// did not ask are not promised to be (the secondary's page cache holds
// them, as the primary's holds its own until the application syncs).
//
// The source sends its Hello first; the target answers with its own or
// with an Error (another module, another dir count, an unsupported
// protocol version, or what CheckPeer refused).
package wire
