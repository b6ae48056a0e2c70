# generic: makes any Linux service highly available on two nodes.
# Its data directory is replicated synchronously; the service, its VIP and
# its checkers fail over together. Edit the lines marked EDIT.
module "generic" {
  description = "Any Linux service: start/stop commands, a VIP, one replicated directory"
  kind        = "mirror"
  id          = 1                  # EDIT: unique in the cluster; ports 20001 (heartbeat) and 21001 (replication) derive from it
  nodes       = ["node1", "node2"] # EDIT: the two nodes, as named in cluster.hcl

  # Return to node1 after it comes back and is resynchronised.
  default_primary = "node1"

  heartbeat {
    pulse   = "1s"
    timeout = "5s" # the peer is declared down after 5s without heartbeats on every network
  }

  vip {
    address = "198.18.0.100/24" # EDIT: the address clients use, with its subnet's prefix length
  }

  replication {
    mode = "sync" # a write returns once the peer has it; fsync once it is on both disks

    dir "/var/lib/generic" { # EDIT: the service's data directory
      exclude = ["*.pid", "tmp/*"]
    }
  }

  app {
    start_timeout = "60s"
    stop_timeout  = "30s" # then stop_prim runs again with "force"

    # Passed to the scripts as environment variables.
    env = {
      START_COMMAND = "systemctl start generic.service" # EDIT: must return once the service is up
      STOP_COMMAND  = "systemctl stop generic.service"  # EDIT
      PROCESS       = "generic"                         # EDIT: process name killed by a forced stop
    }
  }

  # The service's process must be running on the primary; restart it
  # locally when it dies (at most max_loop = 3 times a day, then stop).
  check "errd" "process" {
    when     = "prim"
    action   = "restart"
    name     = "generic" # EDIT
    at_least = 1
  }

  # The service must accept connections on its VIP; if it does not, fail
  # over to the other node.
  check "tcp" "port" {
    when     = "prim"
    action   = "stopstart"
    interval = "10s"
    timeout  = "3s"
    address  = "198.18.0.100:8080" # EDIT: the VIP and the service's port
  }
}
