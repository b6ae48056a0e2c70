// Package config loads halo's HCL configuration: the cluster file
// (cluster.hcl, one per cluster, the same on every node) and module files
// (modules/<name>/module.hcl), fills in defaults (all in defaults.go) and
// validates them, reporting every problem as an hcl.Diagnostic at its
// file:line:column.
//
// Decoding uses explicit hcl.BodySchemas, as Nomad's jobspec2 does, so an
// unknown attribute or block is an error with a "did you mean" hint. The
// settings of a plugin (a check block's, and those of a vip or app block
// beyond halo's own attributes) are kept as an unparsed hcl.Body, for the
// plugin host to decode against the schema the plugin declares.
//
// # Cluster file
//
//	cluster "prod" {
//	  api_port    = 9453                  # agent API and console, HTTPS
//	  health_port = 9010                  # GET /health/<module>
//	  key_file    = "tls/cluster.key"     # heartbeat HMAC key; relative paths are from this file's directory
//	  tls {                               # all optional
//	    ca_file   = "tls/ca.pem"
//	    cert_file = "tls/node.pem"
//	    key_file  = "tls/node-key.pem"
//	  }
//	  network "default" {}
//	  network "replication" {}
//	  node "node1" {
//	    addresses = { default = "198.18.0.1", replication = "198.18.1.1" }   # IP literals, declared networks
//	  }
//	  user "alice" {
//	    role          = "admin"           # admin | control | monitor
//	    password_hash = "$2b$10$..."      # bcrypt; without it: client certificate only
//	  }
//	  metrics {                           # optional: plain-HTTP GET /metrics for Prometheus, no client certificate
//	    port     = 9464                   # required; differs from api_port and health_port
//	    networks = ["default"]            # the node's addresses on these networks; default: every network
//	    loopback = false                  # also listen on 127.0.0.1
//	  }
//	}
//
// GET /metrics is always served on the API (Unix socket, mutual TLS); the
// metrics block adds a listener that needs no certificate, serving only
// /metrics (read-only figures).
//
// # Module file
//
//	module "pg" {
//	  description        = "..."
//	  kind               = "mirror"       # mirror (2 nodes) | farm (>= 1) | light (1); required
//	  id                 = 12             # 1..999, unique; required; ports derive from it
//	  nodes              = ["node1", "node2"]   # required
//	  max_loop           = 3              # checker-caused actions allowed ...
//	  loop_interval      = "24h"          # ... within this window
//	  # mirror only:
//	  failover           = true
//	  default_primary    = "node1"
//	  sync_delta         = "0s"           # start ALONE on data at most this old; 0 = never
//	  split_brain_winner = "longest_alone"   # | "default_primary" | a node name
//
//	  heartbeat {                         # mirror only
//	    pulse = "1s"  timeout = "5s"
//	    networks = [...]                  # default: every network both nodes have an address on
//	    port = 0                          # 0 = 20000 + id (UDP)
//	  }
//	  vip {                               # any number
//	    plugin = "vip"  address = "198.18.0.100/24"  network = "default"
//	    interface = ""                    # "" = the interface holding the node's address on network
//	    announce_count = 3  announce_interval = "1s"
//	  }
//	  health { enabled = true  port = 0 } # 0 = the cluster's health_port
//	  replication {                       # mirror only
//	    mode = "sync"                     # sync | durable | async (writes return before the
//	                                      #   peer has them; they wait while the oldest the peer
//	                                      #   has not applied is older than max_lag; a failover
//	                                      #   may lose up to max_lag of acknowledged writes)
//	    network = "replication"           # default: "replication" if declared, else "default"
//	    port = 0                          # 0 = 21000 + id (TCP)
//	    stall_timeout = "10s"  max_lag = "5s" /* async only */  zone_size = "64KiB"
//	    quarantine_dir = ""               # split-brain loser's files; "" = under the state directory
//	    resync { parallel = 4  bandwidth = "100MB/s" }
//	    dir "/var/lib/app" { exclude = ["tmp/*"]  must_exist = ["VERSION"] }
//	                                      # must_exist missing (data disk not mounted): the node
//	                                      #   neither serves nor becomes SECOND, WAIT says why
//	  }
//	  farm {                              # farm only
//	    network = "default"               # default: the first VIP's network
//	    port = 0                          # 0 = 22000 + id (memberlist, TCP+UDP)
//	    pulse = "1s"  timeout = "5s"
//	    balance = "client_ip"             # | "client_ip_port"
//	    power = { node1 = 1 }             # 0..1000, default 1 per node
//	    ports = [80, 443]                 # balanced destination ports; [] = all
//	  }
//	  app {
//	    plugin = "script"  scripts = "scripts"   # relative to the module directory
//	    start_timeout = "60s"  stop_timeout = "30s"
//	    env = { KEY = "value" }           # HALO_* is reserved
//	  }
//	  check "errd" "postmaster" {         # labels: plugin, instance name (resource checker.<name>)
//	    interval = "10s"  timeout = "5s"  # timeout default: interval / 2
//	    action = "restart"                # restart | stopstart | stop | wait | swap (mirror)
//	    when = "both"                     # both | prim | second (mirror) | pre
//	    process = "postgres"              # the rest is the plugin's
//	  }
//	}
//
// # Validating
//
// Load (or Validate) takes files and directories, finds the cluster (see
// Load), and returns diagnostics sorted by position; the configuration is
// valid when none is an error. `halo validate` prints them with
// WriteDiagnostics (one line each) or WriteDiagnosticsDetailed (with the
// source lines):
//
//	cfg, diags := config.Load(config.Options{ClusterFile: flagCluster, DefaultClusterFile: "/etc/halo/cluster.hcl"}, args...)
//	config.WriteDiagnostics(os.Stderr, diags)
//	if diags.HasErrors() { os.Exit(1) }
package config
