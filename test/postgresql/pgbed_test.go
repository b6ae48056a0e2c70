// Package postgresql proves the shipped postgresql module (modules/
// postgresql) end to end: two real agents in network namespaces
// (test/mirror/mirrorbed on test/testbed) run PostgreSQL on a data
// directory replicated in sync mode behind a VIP, while a client in a
// third namespace commits unique ids through the VIP and records every
// COMMIT acknowledged to it. The primary's whole host is killed under
// that load; every acknowledged id must be on the new primary, once.
//
// PostgreSQL refuses to run as root: the server runs as the postgres user
// (the module's scripts use runuser), on data directories it owns, through
// the capture's FUSE mount (allow_other, default_permissions).
package postgresql

import (
	"bufio"
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/halo-ha/halo/sdk/api"
	"github.com/halo-ha/halo/test/harness"
	"github.com/halo-ha/halo/test/mirror/mirrorbed"
	"github.com/halo-ha/halo/test/testbed"
)

const (
	module   = "postgresql"
	pgPort   = 5432
	waitLong = 90 * time.Second
	// The shipped module's PostgreSQL version and paths, which the test
	// substitutes.
	shippedBin  = "/usr/lib/postgresql/15/bin"
	shippedData = "/var/lib/postgresql/15/main"
)

// pgBin is the PostgreSQL 15 binaries directory ($HALO_PGBIN overrides).
func pgBin() string {
	if d := os.Getenv("HALO_PGBIN"); d != "" {
		return d
	}
	return shippedBin
}

// requirePostgres skips (or fails under HALO_REQUIRE_ROOT=1, as CI runs,
// where .ci/run installs the packages) when PostgreSQL or FUSE is missing.
func requirePostgres(t *testing.T) {
	t.Helper()
	testbed.RequireRoot(t)
	var missing []string
	for _, p := range []string{filepath.Join(pgBin(), "postgres"), filepath.Join(pgBin(), "initdb"), "/dev/fuse"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if _, err := user.Lookup("postgres"); err != nil {
		missing = append(missing, "user postgres")
	}
	if len(missing) > 0 {
		if os.Getenv("HALO_REQUIRE_ROOT") == "1" {
			t.Fatalf("missing %v and HALO_REQUIRE_ROOT=1 (install postgresql-15)", missing)
		}
		t.Skipf("missing %v", missing)
	}
}

// pgCluster is the postgresql module deployed on a mirror bed.
type pgCluster struct {
	*mirrorbed.Cluster
	t       *testing.T
	pgdata  map[string]string // node -> its replicated data directory
	pgUID   int
	pgGID   int
	connStr string
}

// newPGCluster deploys the shipped postgresql module on node1 and node2,
// its paths substituted (both nodes share this machine's filesystem, so
// each has its own data directory), initialises node1's data directory and
// starts both agents. Nothing runs yet: see firstStart.
func newPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	requirePostgres(t)
	bed, _ := testbed.New(t, testbed.Options{Hosts: []string{"node1", "node2", "client"}, Networks: []string{"default", "replication"}})
	opts := mirrorbed.Options{
		Bin: harness.Bin(t), Module: module, ID: 10, Port: pgPort, VIP: netip.MustParsePrefix("198.18.0.110/24"),
		Pulse: 200 * time.Millisecond, Timeout: time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := mirrorbed.Deploy(ctx, bed, opts)
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	pc := &pgCluster{Cluster: c, t: t, pgdata: map[string]string{}}
	pc.pgUID, _ = strconv.Atoi(u.Uid)
	pc.pgGID, _ = strconv.Atoi(u.Gid)
	pc.connStr = fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=2", c.Opts.VIP.Addr(), pgPort)
	for _, n := range c.Nodes() {
		if err := pc.installModule(n); err != nil {
			t.Fatalf("install the postgresql module on %s: %v", n.Name, err)
		}
	}
	pc.initdb(c.Node("node1"))
	// node2 receives node1's data by a full resync at the first start, but
	// halo replicates into a directory only when its must_exist files are
	// there (an unmounted data disk is not filled by mistake): the
	// administrator puts PG_VERSION there, as the module's README says.
	pc.seedVersion(c.Node("node2"))
	t.Cleanup(func() {
		if t.Failed() {
			pc.dumpLogs()
		}
	})
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return pc
}

// installModule replaces mirrorbed's module with modules/postgresql: its
// module.hcl with this node's paths and the bed's timers, and its scripts
// unchanged.
func (pc *pgCluster) installModule(n *mirrorbed.Node) error {
	src := filepath.Join(harness.RepoRoot(), "modules", module)
	b, err := os.ReadFile(filepath.Join(src, "module.hcl"))
	if err != nil {
		return err
	}
	nodeDir := filepath.Dir(n.DataDir)
	pgdata := filepath.Join(nodeDir, "pgdata")
	pglog := filepath.Join(nodeDir, "postgresql.log")
	pc.pgdata[n.Name] = pgdata
	hcl, err := pc.moduleHCL(string(b), pgdata, pglog)
	if err != nil {
		return err
	}
	modDir := filepath.Join(n.ConfigDir, "modules", module)
	if err := os.RemoveAll(filepath.Join(modDir, "scripts")); err != nil {
		return err
	}
	if out, err := exec.Command("cp", "-r", filepath.Join(src, "scripts"), modDir).CombinedOutput(); err != nil {
		return fmt.Errorf("copy scripts: %w: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(modDir, "module.hcl"), []byte(hcl), 0o644); err != nil {
		return err
	}
	// The server's data directory (0700, as PostgreSQL requires) and log
	// belong to postgres.
	if err := os.Mkdir(pgdata, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(pglog, nil, 0o640); err != nil {
		return err
	}
	for _, p := range []string{pgdata, pglog} {
		if err := os.Chown(p, pc.pgUID, pc.pgGID); err != nil {
			return err
		}
	}
	return nil
}

// moduleHCL substitutes the node's paths and the bed's settings in the
// shipped module file, failing if a line it expects is not there (so a
// change of the shipped file cannot silently leave the test on other
// settings).
func (pc *pgCluster) moduleHCL(s, pgdata, pglog string) (string, error) {
	o := pc.Opts
	errdPattern := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(`^\S*/postgres -D ` + regexp.QuoteMeta(pgdata) + `( |$)`)
	subs := []struct {
		re, repl string
	}{
		// The test decides the roles (kill, then swap back): no
		// automatic return to a default primary.
		{`(?m)^\s*default_primary\s*=.*\n`, ``},
		// Faster heartbeats than the defaults, on both networks.
		{`(?m)^(\s*kind\s*=\s*"mirror".*\n)`, fmt.Sprintf("${1}  heartbeat {\n    pulse = %q\n    timeout = %q\n    networks = [\"default\", \"replication\"]\n  }\n", o.Pulse, o.Timeout)},
		{`(?m)^(\s*address\s*=\s*)"198\.18\.0\.110/24"(.*)\n`, fmt.Sprintf("${1}%q${2}\n    network = %q\n", o.VIP, o.VIPNetwork)},
		{`(?m)^(\s*address\s*=\s*)"198\.18\.0\.110:5432"`, fmt.Sprintf("${1}%q", netJoin(o.VIP.Addr().String(), pgPort))},
		{`(?m)^(\s*pattern\s*=\s*)".*"`, "${1}\"" + strings.ReplaceAll(errdPattern, "$", "$$") + "\""},
		{`(?m)^(\s*PGBIN\s*=\s*)".*"`, fmt.Sprintf("${1}%q", pgBin())},
		// The test's configuration lives in the data directory.
		{`(?m)^(\s*PGOPTS\s*=\s*)".*"`, `${1}""`},
		{`(?m)^(\s*PGLOG\s*=\s*)".*"`, fmt.Sprintf("${1}%q", pglog)},
		{regexp.QuoteMeta(shippedData), pgdata},
	}
	for _, sub := range subs {
		re := regexp.MustCompile(sub.re)
		if !re.MatchString(s) {
			return "", fmt.Errorf("modules/postgresql/module.hcl: no match for %s", sub.re)
		}
		s = re.ReplaceAllString(s, sub.repl)
	}
	return s, nil
}

func netJoin(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// initdb creates the database cluster in node's data directory, with the
// settings the test needs: TCP on every address (the VIP), no Unix socket
// (both nodes would share its directory), trust for the bed's addresses,
// commits durable (synchronous_commit and fsync on, as by default).
func (pc *pgCluster) initdb(n *mirrorbed.Node) { pc.initdbDir(pc.pgdata[n.Name]) }

func (pc *pgCluster) initdbDir(dir string) {
	t := pc.t
	t.Helper()
	cmd := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pgBin(), "initdb"),
		"-D", dir, "-A", "trust", "-U", "postgres", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb %s: %v\n%s", dir, err, out)
	}
	conf := `
listen_addresses = '*'
unix_socket_directories = ''
max_connections = 40
shared_buffers = 32MB
fsync = on
synchronous_commit = on
full_page_writes = on
huge_pages = off
log_min_messages = warning
`
	appendFile(t, filepath.Join(dir, "postgresql.conf"), conf)
	appendFile(t, filepath.Join(dir, "pg_hba.conf"), "host all all 198.18.0.0/15 trust\n")
}

// seedVersion copies node1's PG_VERSION into n's empty data directory.
func (pc *pgCluster) seedVersion(n *mirrorbed.Node) {
	t := pc.t
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pc.pgdata["node1"], "PG_VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(pc.pgdata[n.Name], "PG_VERSION")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, pc.pgUID, pc.pgGID); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// dumpLogs prints the tail of both nodes' event logs (read from disk: a
// killed node's agent cannot answer), replication daemon logs and
// PostgreSQL logs.
func (pc *pgCluster) dumpLogs() {
	t := pc.t
	for _, n := range pc.Nodes() {
		if f, err := os.Open(filepath.Join(n.DataDir, module, "events.jsonl")); err == nil {
			var lines []string
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var e api.Event
				if json.Unmarshal(sc.Bytes(), &e) == nil {
					lines = append(lines, fmt.Sprintf("%s %-7s %-5s %s", e.Time.Local().Format("15:04:05.000"), e.Kind, e.Level, e.Text))
				}
			}
			f.Close()
			t.Logf("%s: event log (tail):\n  %s", n.Name, strings.Join(tail(lines, 150), "\n  "))
		}
		for _, f := range []string{filepath.Join(n.DataDir, module, "repl.log"), filepath.Join(filepath.Dir(n.DataDir), "postgresql.log")} {
			if b, err := os.ReadFile(f); err == nil {
				t.Logf("%s: %s (tail):\n  %s", n.Name, filepath.Base(f), strings.Join(tail(strings.Split(strings.TrimRight(string(b), "\n"), "\n"), 80), "\n  "))
			}
		}
	}
}

func tail[T any](xs []T, n int) []T {
	if len(xs) > n {
		return xs[len(xs)-n:]
	}
	return xs
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitState(t *testing.T, n *mirrorbed.Node, state, readiness string) api.ModuleStatus {
	t.Helper()
	m, err := n.WaitState(ctxFor(t, waitLong), state, readiness)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func lastSeq(t *testing.T, n *mirrorbed.Node) uint64 {
	t.Helper()
	s, err := n.LastSeq(ctxFor(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// firstStart: both WAIT, halo prim on node1, node2 resyncs in full and
// becomes its SECOND.
func (pc *pgCluster) firstStart() (n1, n2 *mirrorbed.Node) {
	t := pc.t
	t.Helper()
	n1, n2 = pc.Node("node1"), pc.Node("node2")
	waitState(t, n1, "WAIT", "")
	waitState(t, n2, "WAIT", "")
	if err := n1.Command(ctxFor(t, 10*time.Second), "prim"); err != nil {
		t.Fatal(err)
	}
	waitState(t, n2, "SECOND", "Ready")
	waitState(t, n1, "PRIM", "Ready")
	return n1, n2
}

// powerOff crashes node n: SIGKILL to every process of its host (agent,
// replication daemon, PostgreSQL), links cut, the VIP gone from its
// interface. Like test/replication, it does not stop the processes first:
// one blocked in a FUSE request whose daemon is stopped could not be.
func (pc *pgCluster) powerOff(n *mirrorbed.Node) {
	t := pc.t
	t.Helper()
	if err := n.Host.Kill9(); err != nil {
		t.Fatal(err)
	}
	if err := n.Host.CutAll(); err != nil {
		t.Fatal(err)
	}
	held, err := n.HoldsVIP()
	if err != nil {
		t.Fatal(err)
	}
	if held {
		if err := n.Host.DelAddr(pc.Opts.VIPNetwork, pc.Opts.VIP); err != nil {
			t.Fatal(err)
		}
	}
}

// waitVerified runs halo verify on n until both trees are identical. The
// caller quiesces the database first: files PostgreSQL writes during the
// comparison may show.
func (pc *pgCluster) waitVerified(n *mirrorbed.Node) string {
	t := pc.t
	t.Helper()
	var out string
	for range 20 {
		var code int
		var err error
		out, code, err = n.CLI(ctxFor(t, 2*time.Minute), "verify", module)
		if err != nil {
			t.Fatal(err)
		}
		switch code {
		case 0:
			return strings.TrimSpace(out)
		case 1:
		default:
			t.Fatalf("halo verify on %s: exit %d: %s", n.Name, code, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("halo verify on %s keeps finding differences:\n%s", n.Name, out)
	return ""
}

var resyncDoneRE = regexp.MustCompile(`resync (\d+) from \S+ \((\w+)\) done: (\d+) objects changed, (\d+) data bytes, (\d+) bytes on the network`)

// resyncResult is what a target's event log says of a finished resync.
type resyncResult struct {
	kind                   string
	changed, data, network int64
}

func (r resyncResult) String() string {
	return fmt.Sprintf("%s, %d objects, %d data bytes, %d bytes on the network", r.kind, r.changed, r.data, r.network)
}

// waitResync waits for a resync done after seq on target n.
func waitResync(t *testing.T, n *mirrorbed.Node, after uint64) resyncResult {
	t.Helper()
	e, err := n.WaitEvent(ctxFor(t, waitLong), after, "resync", "done:")
	if err != nil {
		t.Fatal(err)
	}
	m := resyncDoneRE.FindStringSubmatch(e.Text)
	if m == nil {
		t.Fatalf("%s: unexpected resync line %q", n.Name, e.Text)
	}
	r := resyncResult{kind: m[2]}
	r.changed, _ = strconv.ParseInt(m[3], 10, 64)
	r.data, _ = strconv.ParseInt(m[4], 10, 64)
	r.network, _ = strconv.ParseInt(m[5], 10, 64)
	return r
}

// nsDialer makes lib/pq dial from inside a bed host.
type nsDialer struct{ h *testbed.Host }

func (d nsDialer) Dial(network, address string) (net.Conn, error) {
	return d.h.DialContext(context.Background(), network, address)
}

func (d nsDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.h.DialContext(ctx, network, address)
}

func (d nsDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.h.DialContext(ctx, network, address)
}

// conn opens one connection from the client host through the VIP. The
// driver is used directly, without database/sql's pool, which may retry a
// statement on another connection: every statement here is sent once.
func (pc *pgCluster) conn(ctx context.Context) (pgConn, error) {
	c, err := pq.NewConnector(pc.connStr)
	if err != nil {
		return pgConn{}, err
	}
	c.Dialer(nsDialer{pc.Client})
	dc, err := c.Connect(ctx)
	if err != nil {
		return pgConn{}, err
	}
	return pgConn{dc}, nil
}

type pgConn struct{ c driver.Conn }

// exec runs one statement (its own transaction: autocommit) with the
// simple query protocol.
func (c pgConn) exec(ctx context.Context, query string) error {
	_, err := c.c.(driver.ExecerContext).ExecContext(ctx, query, nil)
	return err
}

// ints runs a query returning one bigint column.
func (c pgConn) ints(ctx context.Context, query string) ([]int64, error) {
	rows, err := c.c.(driver.QueryerContext).QueryContext(ctx, query, nil)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	dest := make([]driver.Value, 1)
	for {
		err := rows.Next(dest)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		v, ok := dest[0].(int64)
		if !ok {
			return nil, fmt.Errorf("query %q: got %T, want int64", query, dest[0])
		}
		out = append(out, v)
	}
}

func (c pgConn) close() { _ = c.c.Close() }
