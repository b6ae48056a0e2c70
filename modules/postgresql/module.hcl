# postgresql: a PostgreSQL cluster mirrored on two nodes, started and
# stopped with pg_ctl (not the distribution's service unit: halo decides
# where it runs). Its data directory is replicated synchronously: a COMMIT
# that returned is on both nodes.
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
    stop_timeout  = "60s"  # then stop_prim runs again with "force"
    env = {
      PGBIN      = "/usr/lib/postgresql/15/bin"  # EDIT: the server's binaries
      PGDATA     = "/var/lib/postgresql/15/main" # EDIT: the replicated directory above
      PGPORT     = "5432"
      PG_OS_USER = "postgres" # the server refuses to run as root
      # Debian keeps the configuration outside the data directory (it is
      # not replicated: keep it identical on both nodes).
      PGOPTS = "-c config_file=/etc/postgresql/15/main/postgresql.conf" # EDIT
      PGLOG  = "/var/log/postgresql/postgresql-15-main.log"
    }
  }

  # The postmaster alone: pg_ctl starts it as "postgres -D <data dir>";
  # its children rename themselves ("postgres: checkpointer", ...).
  check "errd" "postmaster" {
    when     = "prim"
    action   = "restart"
    pattern  = "^\\S*/postgres -D /var/lib/postgresql/15/main( |$)" # EDIT: the data directory
    at_least = 1
  }

  check "tcp" "port" {
    when    = "prim"
    action  = "stopstart"
    address = "198.18.0.110:5432" # EDIT: the VIP
  }
}
