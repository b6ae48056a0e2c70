# postgresql: a PostgreSQL cluster mirrored on two nodes (Debian/Ubuntu
# packaging: postgresql@<version>-<cluster> units). Its data directory is
# replicated synchronously: a COMMIT that returned is on both nodes.
# Edit the lines marked EDIT.
module "postgresql" {
  description     = "PostgreSQL with synchronous file replication, VIP and failover"
  kind            = "mirror"
  id              = 10                 # EDIT: unique in the cluster
  nodes           = ["node1", "node2"] # EDIT
  default_primary = "node1"

  vip {
    address = "198.18.0.110/24" # EDIT: clients connect to this address
  }

  replication {
    mode = "sync" # fsync (and so COMMIT) returns once the WAL is on both disks

    dir "/var/lib/postgresql/15/main" { # EDIT: the data directory
      # Lock and statistics files are per run, not data.
      exclude    = ["postmaster.pid", "postmaster.opts", "pg_stat_tmp/*"]
      must_exist = ["PG_VERSION"]
    }
  }

  app {
    start_timeout = "120s" # crash recovery after a failover replays the WAL
    stop_timeout  = "60s"
    env = {
      PGVERSION = "15"   # EDIT
      PGCLUSTER = "main" # EDIT
      PGPORT    = "5432"
    }
  }

  check "errd" "postmaster" {
    when     = "prim"
    action   = "restart"
    name     = "postgres"
    at_least = 1
  }

  check "tcp" "port" {
    when    = "prim"
    action  = "stopstart"
    address = "198.18.0.110:5432" # EDIT: the VIP
  }
}
